"""One run: every piece wired at construction, then startup() → main_loop() → shutdown().

``startup`` finds or launches the target and waits until it answers (start-up
failures are exit 3), makes the spaces, picks up a resumed run, READY=1.
``main_loop`` runs every loop in one ``asyncio.TaskGroup`` until the duration
or a stop, then stops arrivals and drains under a timeout (a second signal cuts
it short). ``shutdown`` takes the final sample and evaluation, flushes,
delivers the outbox (bounded) and writes the report atomically.

Nothing here measures or decides: soakd.driver sends, soakd.flusher writes,
soakd.judge evaluates, soakd.housekeeping keeps house; this wires them and
hands the events to the one list of sinks (soakd.sinks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
import structlog

from soakd.alerting import Dispatcher
from soakd.alerting.receivers import SecretError, resolve_secret
from soakd.consolidation import ConsolidationWatcher
from soakd.diskwatch import DiskWatch
from soakd.driver import Capacity, Driver
from soakd.engram import EngramClient
from soakd.errors import ExitCode, StartupError
from soakd.exporter import Exporter
from soakd.flusher import Flusher
from soakd.housekeeping import Housekeeping, every
from soakd.integrity import IntegrityChecker
from soakd.judge import Judge, file_baseline_p99
from soakd.model import Clock, ConsolidationRun, Event, EventKind, Op, Sample
from soakd.process import ProcessId, PsutilTable
from soakd.progress import build_status
from soakd.report import ReportExtras, write_reports
from soakd.rules import AlertEngine
from soakd.runstate import OpenedRun
from soakd.sampler import Sampler
from soakd.sinks import EventFanout, LogEvents
from soakd.spaces import ensure_spaces
from soakd.spec.model import RecallOptions, Spec, SpreadOptions, TargetSpec
from soakd.stats import StatsHub
from soakd.systemd import Notifier
from soakd.target import Target
from soakd.workload import Workload, space_names

log = structlog.get_logger(__name__)
T = TypeVar("T")

RULES_INTERVAL_S = 10.0
CHECKPOINT_INTERVAL_S = 30.0
CHECKPOINT_MIN_RUN_S = 3600.0  # shorter runs get only the final report
DISK_INTERVAL_S = 10.0
RETENTION_INTERVAL_S = 600.0
FINAL_FLUSH_S = 10.0
#: Only guards against a hang (what a 7-day report costs: docs/perf-report.md).
REPORT_TIMEOUT_S = 600.0
#: Counters naming the target process soakd launched (for adoption on resume).
OWNED_PID = "owned_target_pid"
OWNED_CTIME_MS = "owned_target_create_time_ms"


@dataclass(frozen=True)
class RunOptions:
    spec: Spec
    spec_text: str
    state_dir: Path
    new_run: bool = False
    handle_signals: bool = True  # off in tests that drive stop() themselves
    progress: bool = False  # live progress line on stderr (a terminal)
    report_dir: Path | None = None  # default: the state dir


@dataclass(frozen=True)
class RunOutcome:
    exit_code: ExitCode
    status: str  # "completed" | "stopped"
    verdict: str | None
    run_id: str
    report_paths: tuple[Path, ...]
    failed_criteria: tuple[str, ...] = ()


class Intent:
    """What the operator asked for: stop (first signal), stop now (second)."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.force = asyncio.Event()

    def request_stop(self) -> None:
        if self.stop.is_set():
            self.force.set()
        self.stop.set()


class Run:
    """Every piece of one run, wired at construction; its three phases."""

    def __init__(
        self,
        options: RunOptions,
        opened: OpenedRun,
        *,
        clock: Clock,
        exporter: Exporter,
        metrics_address: tuple[str, int] | None,
        intent: Intent,
    ) -> None:
        spec, info = options.spec, opened.info
        self.options, self.spec, self.opened, self.clock = options, spec, opened, clock
        self.store = opened.store
        self.exporter = exporter
        self.intent = intent
        self.notifier = Notifier()
        self.adopted = adoptable_target(opened) if opened.resumed else None
        self.target = Target(
            self._target_spec(),
            state_dir=options.state_dir,
            clock=clock,
            on_event=self._emit,
            poll_interval_s=min(1.0, spec.sampling.interval_s),
        )
        self.client = EngramClient(
            spec.target.url,
            clock=clock,
            api_key=_api_key(spec),
            timeout_s=max((o.timeout_s for o in spec.operations), default=30.0),
            op_timeouts={Op(o.operation): o.timeout_s for o in spec.operations},
            max_connections=spec.target.max_connections,
        )
        recall_op, spread_op = spec.operation("recall"), spec.operation("spread")
        self.workload = Workload(
            seed=spec.seed,
            run_tag=info.run_id.replace("-", "")[-12:],
            spaces=space_names(spec.space_count),
            recall=(recall_op.recall if recall_op and recall_op.recall else RecallOptions()),
            spread=(spread_op.spread if spread_op and spread_op.spread else SpreadOptions()),
        )
        self.stats = StatsHub([Op(o.operation) for o in spec.operations], clock)
        capacity = Capacity(self.client, self.workload.spaces, spec.integrity.space_capacity)
        self.integrity = IntegrityChecker(
            self.client,
            self.workload,
            clock,
            sample_fraction=spec.integrity.sample_fraction,
            delay_s=spec.integrity.delay_s,
            max_pending=spec.integrity.max_pending,
            sink=exporter.on_result,
            seed=spec.seed,
            on_event=self._emit,
            at_capacity=capacity.at_capacity,
        )
        self.watcher: ConsolidationWatcher | None = None
        if (c := spec.consolidation) is not None:
            self.watcher = ConsolidationWatcher(
                self.client,
                space_names(c.spaces),
                interval_s=c.interval_s,
                poll_interval_s=c.poll_interval_s,
                tolerance_s=c.tolerance_s,
                clock=clock,
                on_run=self._on_consolidation_run,
                on_event=self._emit,
            )
        self.sampler = Sampler(
            lambda: self.target.current,
            clock=clock,
            interval_s=spec.sampling.interval_s,
            uss_interval_s=spec.sampling.uss_interval_s,
            data_dir=Path(spec.target.data_dir) if spec.target.data_dir else None,
            on_event=self._emit,
            memories=capacity.memories,
            # Often enough that a space reaching Engram's capacity is known
            # before its evictions are read back (see Capacity.at_capacity).
            memories_interval_s=2.0,
        )
        disk = DiskWatch(
            options.state_dir, spec.sampling.min_free_disk_bytes, on_event=self._emit, clock=clock
        )
        base_labels = {"run_id": info.run_id, "target": spec.target.url, "job": "soakd"}
        self.dispatcher = Dispatcher(
            spec.receivers,
            db_path=self.store.db_path,
            base_labels=base_labels,
            generator_url=(
                f"http://{metrics_address[0]}:{metrics_address[1]}/status"
                if metrics_address is not None
                else ""
            ),
            clock=clock,
        )
        self.driver = Driver(
            spec,
            client=self.client,
            workload=self.workload,
            stats=self.stats,
            exporter=exporter,
            integrity=self.integrity,
            watcher=self.watcher,
            capacity=capacity,
            clock=clock,
        )
        self.flusher = Flusher(
            self.store,
            clock=clock,
            state_dir=options.state_dir,
            counters=self._counters,
            pending=self.integrity.snapshot,
            status=self.status,
            emit=self._emit,
            on_failing=self._make_room,
        )
        self.judge = Judge(
            spec,
            store=self.store,
            engine=AlertEngine(
                spec.alerts, base_labels=base_labels, restored=self.store.alert_states()
            ),
            dispatcher=self.dispatcher,
            clock=clock,
            flush=self.flusher.flush,
            integrity=lambda: (self.integrity.lost, self.integrity.corrupted),
            on_alerts=exporter.set_alerts,
            on_leak_trend=exporter.set_leak_trend,
            baseline_p99_ms=file_baseline_p99(spec),
        )
        self.housekeeping = Housekeeping(
            spec,
            info,
            store=self.store,
            state_dir=options.state_dir,
            clock=clock,
            stats=self.stats,
            ops=tuple(self.driver.senders),
            flusher=self.flusher,
            dispatcher=self.dispatcher,
            disk=disk,
            exporter=exporter,
            notifier=self.notifier,
            show_progress=options.progress,
            status=self.status,
            extras=self._extras,
            emit=self._emit,
        )
        watcher_sink = () if self.watcher is None else (self.watcher,)
        self.events = EventFanout((self.flusher, LogEvents(), exporter, *watcher_sink))
        self._last_sample: Sample | None = None
        self._counters_at_start: dict[str, int] = {}
        self._start_ns = self._end_ns = clock.monotonic_ns()

    def _target_spec(self) -> TargetSpec:
        if self.adopted is None:
            return self.spec.target
        # soakd was restarted, the Engram it launched was not: keep watching the
        # same process, so Engram's continuous operation is not broken by a
        # restart of the tool that measures it.
        return dataclasses.replace(self.spec.target, command=None, pid=self.adopted.pid)

    # -- what the pieces report --------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        self.events.on_event(event)

    def _on_sample(self, sample: Sample) -> None:
        self.flusher.on_sample(sample)
        self.exporter.on_sample(sample)
        self._last_sample = sample

    def _on_consolidation_run(self, run: ConsolidationRun) -> None:
        self.flusher.on_consolidation_run(run)
        if (c := self.spec.consolidation) is not None:
            self.exporter.on_consolidation_run(run, c.interval_s, c.tolerance_s)

    async def _make_room(self) -> None:
        await self.housekeeping.make_room()

    def _counters(self) -> dict[str, int]:
        counters = self.driver.next_ks()
        i = self.integrity
        counters.update(
            integrity_checked=i.checked,
            integrity_lost=i.lost,
            integrity_corrupted=i.corrupted,
            integrity_skipped=i.skipped,
            integrity_evicted=i.evicted,
            integrity_restored=i.restored,
            target_restarts=self.target.restarts,
            target_crashes=self.target.crashes,
        )
        current = self.target.current
        if current is not None and (self.target.owned or self.adopted is not None):
            counters[OWNED_PID] = current.pid
            counters[OWNED_CTIME_MS] = round(current.create_time * 1000)
        return counters

    def _extras(self) -> ReportExtras:
        i = self.integrity
        return ReportExtras(
            integrity_checked=i.checked, integrity_lost=i.lost, integrity_corrupted=i.corrupted
        )

    # -- startup ---------------------------------------------------------------------------

    async def startup(self) -> None:
        """Find or launch the target, wait until it answers, pick up a resumed run; READY=1."""
        spec, opened = self.spec, self.opened
        if self.adopted is not None:
            log.info("target_adopted", pid=self.adopted.pid)
        if await self.target.start() is None:
            log.warning(
                "target_process_not_found",
                url=spec.target.url,
                hint="soakd drives the target but cannot sample it; "
                "set target.pid, target.pid_file or target.systemd_unit",
            )
        await self.target.wait_healthy(
            self.client.alive,
            spec.target.startup_timeout_s,
            why_not=lambda: self.client.last_alive_problem,
        )
        await ensure_spaces(
            self.client,
            self.workload.spaces,
            timeout_s=spec.target.setup_timeout_s,
            url=spec.target.url,
        )
        self._counters_at_start = self.store.counters()
        if opened.resumed:
            await asyncio.to_thread(self._restore, self._counters_at_start)
        await self.driver.seed_spaces(opened.segment)
        now_wall, now_ns = self.clock.wall(), self.clock.monotonic_ns()
        end_wall = opened.info.started_at + spec.duration_s
        self._start_ns = now_ns
        self._end_ns = now_ns + max(0, int((end_wall - now_wall) * 1e9))
        self.notifier.ready()
        log.info("run_started", run_id=opened.info.run_id, ends_in_s=round(end_wall - now_wall, 1))

    def _restore(self, counters: dict[str, int]) -> None:
        info, store = self.opened.info, self.store
        self.stats.restore(store.intervals(), info.started_at)
        self.integrity.restore(
            counters.get("integrity_checked", 0),
            counters.get("integrity_lost", 0),
            counters.get("integrity_corrupted", 0),
            skipped=counters.get("integrity_skipped", 0),
            evicted=counters.get("integrity_evicted", 0),
        )
        self.integrity.restored = counters.get("integrity_restored", 0)
        self.integrity.restore_pending(
            store.integrity_pending(), self.clock.monotonic_ns(), self.clock.wall()
        )
        if self.watcher is not None and (c := self.spec.consolidation) is not None:
            window = 3 * (c.interval_s + c.tolerance_s)
            self.watcher.restore(store.consolidation_runs(since=self.clock.wall() - window))

    # -- the main loop -----------------------------------------------------------------------

    async def main_loop(self) -> tuple[str, bool]:
        """Every loop until the duration or a stop; then stop arrivals and drain.

        Returns the status ("completed" or "stopped") and whether a loop failed.
        """
        status, internal_error = "completed", False
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(
                    self.driver.run(
                        self._start_ns, self._end_ns, self._counters_at_start, self.opened.resumed
                    ),
                    name="schedule",
                )
                loops = [tg.create_task(c, name=n) for n, c in self._loops()]
                ended_by_time = await self._wait_end()
                status = "completed" if ended_by_time else "stopped"
                self.notifier.stopping()
                log.info("run_ending", status=status, forced=self.intent.force.is_set())
                self.driver.stop()
                drain_s = min(10.0, max((o.timeout_s for o in self.spec.operations), default=10.0))
                cancelled = await self._drain(drain_s)
                if cancelled:
                    log.info("drain_cancelled_requests", count=cancelled)
                for task in loops:
                    task.cancel()
        except* Exception:
            internal_error = True
            status = "stopped"
            log.exception("internal_error")
        return status, internal_error

    def _loops(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        spec, clock, chores = self.spec, self.clock, self.housekeeping
        # Short runs are judged more often, so a 10-minute run still has ~60 evaluations.
        rules_s = max(1.0, min(RULES_INTERVAL_S, spec.duration_s / 60))
        loops: list[tuple[str, Coroutine[Any, Any, None]]] = [
            ("sampler", self.sampler.run(self._on_sample)),
            ("target-watch", self.target.watch()),
            ("integrity", self.integrity.run()),
            ("roll", every(clock, spec.sampling.stats_interval_s, chores.roll)),
            ("flush", every(clock, spec.sampling.flush_interval_s, self.flusher.flush)),
            ("rules", every(clock, rules_s, self.judge.evaluate)),
            ("progress", every(clock, 1.0, chores.progress)),
            ("disk", every(clock, DISK_INTERVAL_S, chores.check_disk)),
            ("retention", every(clock, RETENTION_INTERVAL_S, chores.retain)),
            ("dispatcher", self.dispatcher.run()),
            ("watchdog", self.notifier.watchdog_loop(self.driver.progress_ns, clock)),
        ]
        if self.watcher is not None:
            loops.append(("consolidation", self.watcher.run()))
        if spec.duration_s >= CHECKPOINT_MIN_RUN_S:
            # A checkpoint of a minutes-long run says nothing the final report will
            # not, and its child process competes with the load for the CPU.
            loops.append(("checkpoints", every(clock, CHECKPOINT_INTERVAL_S, chores.checkpoint)))
        return loops

    async def _wait_end(self) -> bool:
        """True when the duration was reached, False when asked to stop."""
        stop = asyncio.create_task(self.intent.stop.wait())
        deadline = asyncio.create_task(self.clock.sleep_until(self._end_ns))
        try:
            done, _ = await asyncio.wait({stop, deadline}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            deadline.cancel()
        return deadline in done and not self.intent.stop.is_set()

    async def _drain(self, timeout_s: float) -> int:
        """Let in-flight requests finish (bounded); a second signal cuts it short."""
        if self.intent.force.is_set():
            timeout_s = 0.0
        drain = await _unless_forced(self.driver.drain(timeout_s), self.intent.force)
        if drain is not None:
            return drain
        log.info("drain_cut_short_by_second_signal")
        return await self.driver.drain(0.0)

    # -- shutdown ----------------------------------------------------------------------------

    async def shutdown(self, status: str, internal_error: bool) -> RunOutcome:
        """Final sample, evaluation, flush, outbox and report: each step bounded.

        A step that fails or hangs is logged and skipped; the report is still
        attempted, because it is what the run was for.
        """
        await self._bounded("final_sample", 10.0, self._final_sample())
        await self._bounded("final_roll", 10.0, self.housekeeping.roll())
        await self._bounded("final_evaluation", 60.0, self.judge.evaluate())
        ended = self.clock.wall()
        self._emit(Event(ended, EventKind.RUN_ENDED, f"run {status}", {"status": status}))
        await self._bounded("final_flush", 60.0, self.flusher.flush())
        await self._bounded(
            "set_status", 30.0, asyncio.to_thread(self.store.set_status, status, ended)
        )
        if not self.intent.force.is_set():
            await self._bounded("alert_flush", FINAL_FLUSH_S + 5.0, self._flush_alerts())
        self.dispatcher.close()
        report_dir = self.options.report_dir or self.options.state_dir
        result = await self._bounded(
            "final_report",
            REPORT_TIMEOUT_S,
            asyncio.to_thread(
                write_reports, self.store, self.spec, report_dir, now=ended, extra=self._extras()
            ),
        )
        run_id = self.opened.info.run_id
        if result is None:
            log.error("final_report_not_written", dir=str(report_dir))
            code = ExitCode.INTERNAL if internal_error else ExitCode.FAILED
            if status == "stopped" and not internal_error:
                code = ExitCode.STOPPED
            return RunOutcome(code, status, None, run_id, (), ("report",))
        failed = tuple(c.key for c in result.criteria if not c.passed)
        if internal_error:
            code = ExitCode.INTERNAL
        elif status == "stopped":
            code = ExitCode.STOPPED
        else:
            code = ExitCode.PASSED if result.verdict == "pass" else ExitCode.FAILED
        log.info("run_finished", status=status, verdict=result.verdict, exit_code=int(code))
        return RunOutcome(code, status, result.verdict, run_id, result.paths, failed)

    async def _final_sample(self) -> None:
        self._on_sample(await asyncio.to_thread(self.sampler.sample_once, self.clock.wall()))

    async def _flush_alerts(self) -> None:
        """Deliver what is pending (bounded); a second signal cuts it short."""
        left = await _unless_forced(self.dispatcher.flush(FINAL_FLUSH_S), self.intent.force)
        if left:
            log.warning("alerts_undelivered_at_exit", pending=left)

    async def _bounded(self, step: str, timeout_s: float, aw: Awaitable[T]) -> T | None:
        """``aw`` under a timeout; a failure or time-out is logged, never raised."""
        try:
            async with asyncio.timeout(timeout_s):
                return await aw
        except TimeoutError:
            log.error("shutdown_step_timed_out", step=step, timeout_s=timeout_s)
        except (sqlite3.Error, OSError) as exc:  # storage: no traceback, it says it all
            self.flusher.storage_log.error("shutdown_step_failed", exc, step=step)
        except Exception:
            log.exception("shutdown_step_failed", step=step)
        return None

    async def release(self) -> None:
        """Close the client; stop the target soakd launched (or adopted)."""
        await self.client.close()
        if self.target.owned:
            await self.target.stop()
        elif self.adopted is not None:
            await asyncio.to_thread(stop_process, self.adopted)

    # -- views -------------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """The /status JSON (and status.json)."""
        i = self.integrity
        return build_status(
            info=self.opened.info,
            spec=self.spec,
            now=self.clock.wall(),
            totals=self.housekeeping.summaries,
            alerts=self.judge.alerts,
            sample=self._last_sample,
            restarts=self.target.restarts,
            crashes=self.target.crashes,
            watcher=self.watcher,
            integrity=(i.checked, i.lost, i.corrupted),
            running=not self.intent.stop.is_set(),
        )


async def _unless_forced(aw: Awaitable[T], force: asyncio.Event) -> T | None:
    """``aw``'s result, or None (``aw`` cancelled) when a second signal comes first."""
    work = asyncio.ensure_future(aw)
    forced = asyncio.ensure_future(force.wait())
    racers: list[asyncio.Future[Any]] = [work, forced]
    try:
        await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
    finally:
        forced.cancel()
    if work.done():
        return work.result()
    work.cancel()
    await asyncio.gather(work, return_exceptions=True)
    return None


def _api_key(spec: Spec) -> str | None:
    if spec.target.api_key is None:
        return None
    try:
        return resolve_secret(spec.target.api_key)
    except SecretError as exc:
        raise StartupError(f"target.api_key: {exc}") from exc


def adoptable_target(opened: OpenedRun) -> ProcessId | None:
    """The target a previous soakd of this run launched, if that very process still runs."""
    counters = opened.store.counters()
    pid, ctime_ms = counters.get(OWNED_PID), counters.get(OWNED_CTIME_MS)
    if pid is None or ctime_ms is None:
        return None
    wanted = ProcessId(pid, ctime_ms / 1000)
    return wanted if wanted.same_process(PsutilTable().lookup(pid)) else None


def stop_process(proc: ProcessId, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, an adopted target (blocking), if it is still that process."""
    try:
        p = psutil.Process(proc.pid)
        if not proc.same_process(ProcessId(proc.pid, p.create_time())):
            return
        p.terminate()
        try:
            p.wait(timeout_s)
        except psutil.TimeoutExpired:
            p.kill()
            p.wait(timeout_s)
    except psutil.Error:
        pass
