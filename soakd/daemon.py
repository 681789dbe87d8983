"""The daemon: a run's outer shell, shaped like uvicorn's ``Server``.

``Daemon.serve`` opens or resumes the state dir, binds the exporter, builds one
complete ``Run`` (soakd.run) and runs ``startup()`` → ``main_loop()`` →
``shutdown()``; whatever it opened is closed in reverse order on the way out.
Signal handlers only record intent: the first means "stop", the second "stop
now, but still write the report".
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog

from soakd.clock import SystemClock
from soakd.errors import StartupError
from soakd.exporter import Exporter
from soakd.model import Clock
from soakd.run import Intent, Run, RunOptions, RunOutcome
from soakd.runstate import open_run

__all__ = ["Daemon", "RunOptions", "RunOutcome"]

log = structlog.get_logger(__name__)


class Daemon:
    """One soak run, from the state dir to the report."""

    def __init__(self, options: RunOptions, clock: Clock | None = None) -> None:
        self.options = options
        self.spec = options.spec
        self.clock: Clock = clock or SystemClock()
        self.intent = Intent()
        self.ready = asyncio.Event()  # set after READY=1 (tests wait on it)
        self.metrics_address: tuple[str, int] | None = None
        self._run: Run | None = None  # built once the run store is open and the exporter bound

    def request_stop(self) -> None:
        """First call: stop gracefully. Second: stop now (still write the report)."""
        self.intent.request_stop()

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("signal_received", signal=sig.name, forced=self.intent.stop.is_set())
        self.request_stop()

    async def serve(self) -> RunOutcome:
        """Run to the end (duration or signal) and return the outcome."""
        spec, options = self.spec, self.options
        async with contextlib.AsyncExitStack() as cleanup:
            opened = await asyncio.to_thread(
                open_run,
                spec,
                options.spec_text,
                options.state_dir,
                now=self.clock.wall(),
                new_run=options.new_run,
            )
            cleanup.push_async_callback(asyncio.to_thread, opened.store.close)
            info = opened.info
            log.info("run_opened", run_id=info.run_id, resumed=opened.resumed, gap_s=opened.gap_s)
            exporter = Exporter(run_id=info.run_id, target=spec.target.url, status=self.status)
            cleanup.push_async_callback(exporter.stop)
            if options.handle_signals:
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, self._on_signal, sig)
            if spec.exporter.listen:
                self.metrics_address = await _listen(exporter, spec.exporter.listen)
            run = self._run = Run(
                options,
                opened,
                clock=self.clock,
                exporter=exporter,
                metrics_address=self.metrics_address,
                intent=self.intent,
            )
            cleanup.push_async_callback(run.release)
            await run.startup()
            self.ready.set()
            status, internal_error = await run.main_loop()
            return await run.shutdown(status, internal_error)

    def status(self) -> dict[str, object]:
        """The /status JSON (and what ``soakd status --url`` renders)."""
        if self._run is None or not self.ready.is_set():
            return {"status": "starting"}
        return self._run.status()


async def _listen(exporter: Exporter, listen: str) -> tuple[str, int]:
    try:
        address = await exporter.start(listen)
    except OSError as exc:
        raise StartupError(f"cannot listen for metrics on {listen}: {exc.strerror}") from exc
    log.info("metrics_listening", address=f"{address[0]}:{address[1]}")
    return address
