"""The engram process under test: found or launched, followed across restarts, stopped.

Why one module of more than 600 lines: ``Target`` is one state machine (found,
launched, up, dead, restarting, given up, stopping) whose launch, watch,
restart and stop steps all read and move the same state; the pieces without
that state (finding a process, naming an exit) are in soakd.process.

A process is identified by its PID and create time (soakd.process.ProcessId).

Two ways to have a target, and who may kill it follows from them:

* **owned** -- ``target.command`` is set: soakd launches it (argv list, never a
  shell), captures its output in the state dir, restarts it under
  ``target.restart`` and stops it at the end. Only an owned target is ever
  signalled: a daemon that kills a process it merely attached to would take
  down a service someone else runs.
* **attached** -- ``pid`` / ``pid_file`` / ``systemd_unit`` / the process
  listening on the URL's port (or Engram's PID file). Something else
  supervises it; after a death soakd keeps looking for its successor and
  records the restart and the downtime.

Death is noticed through a pidfd (readable the instant the process exits) where
the kernel has one, and by polling every ``poll_interval_s`` otherwise, so a
crash is recorded within one interval at worst.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import structlog

from soakd.errors import StartupError
from soakd.model import Clock, Event, EventKind
from soakd.process import (
    ProcessId,
    ProcessTable,
    PsutilTable,
    describe_exit,
    engram_pid_path,
    is_local_host,
    listener_pid,
    process_from_pid_file,
    read_pid_file,
    systemd_main_pid,
    url_port,
)
from soakd.spec.model import RestartPolicy, TargetSpec

log = structlog.get_logger(__name__)

STDOUT_LOG = "target.stdout.log"
STDERR_LOG = "target.stderr.log"
MAX_BACKOFF_S = 60.0
#: An owned target that stayed up this long starts its backoff afresh.
STABLE_AFTER_S = 60.0
ALIVE_PROBE_TIMEOUT_S = 5.0
HEALTH_POLL_S = 0.1
STDERR_TAIL_LINES = 20
#: While nothing local serves the URL, look again at most this often.
MAX_SEARCH_INTERVAL_S = 10.0


# --- the target ------------------------------------------------------------------------


class Target:
    """Finds or launches the target, watches it, restarts or follows it, stops it if owned."""

    def __init__(
        self,
        spec: TargetSpec,
        *,
        state_dir: Path,
        clock: Clock,
        on_event: Callable[[Event], None],
        poll_interval_s: float = 1.0,
        table: ProcessTable | None = None,
        proc_root: Path = Path("/proc"),
    ) -> None:
        self._spec = spec
        self._state_dir = state_dir
        self._clock = clock
        self._emit = on_event
        self._poll_s = poll_interval_s
        self._table: ProcessTable = table or PsutilTable()
        self._proc_root = proc_root
        self._port = url_port(spec.url)
        self._local: bool | None = None  # is the URL's host this machine? (resolved lazily)
        self._popen: subprocess.Popen[bytes] | None = None
        self._current: ProcessId | None = None
        self._last: ProcessId | None = None  # the process that died, while down
        self._up_since_ns = 0
        self._down_since_ns: int | None = None
        self._exit_fd: int | None = None
        self._stderr_offset = 0
        self._stop = asyncio.Event()
        # stop() may come while a relaunch is forking in a worker thread: the lock
        # makes stop() wait for it, and the flag keeps a new one from starting.
        self._spawn_lock = threading.Lock()
        self._stopping = False
        self._alive: Callable[[], Awaitable[bool]] | None = None
        self._attempt = 0  # consecutive failed runs of an owned target, for backoff
        self._given_up = False
        self._search_s = poll_interval_s
        self.restarts = 0
        self.crashes = 0

    # -- public state ---------------------------------------------------------------------

    @property
    def current(self) -> ProcessId | None:
        """The process being watched now (None while down or not found)."""
        return self._current

    @property
    def owned(self) -> bool:
        """True if soakd launched the target (and so may restart and stop it)."""
        return self._spec.command is not None

    @property
    def stdout_path(self) -> Path:
        return self._state_dir / STDOUT_LOG

    @property
    def stderr_path(self) -> Path:
        return self._state_dir / STDERR_LOG

    # -- start ----------------------------------------------------------------------------

    async def start(self) -> ProcessId | None:
        """Launch (``command``) or attach; None only when nothing local serves the URL.

        Raises StartupError when an explicit pid / pid_file / systemd_unit names no
        live process, or the command cannot be executed.
        """
        found: ProcessId | None
        if self._spec.command is not None:
            await self._refuse_busy_port()
            try:
                found = await asyncio.to_thread(self._spawn)
            except OSError as exc:
                raise StartupError(f"target.command {self._argv()!r}: {exc}") from exc
            if found is None:
                raise StartupError("target not launched: soakd is stopping")
            log.info("target launched", pid=found.pid, argv=self._argv())
        else:
            found = await self._find_at_start()
            if found is None:
                log.warning("target not found; it will not be sampled", url=self._spec.url)
                return None
            log.info("target attached", pid=found.pid, how=self._mode())
        self._set_current(found)
        return found

    async def _refuse_busy_port(self) -> None:
        """Refuse to launch onto a port already served here.

        Engram silently moves to port+1 when its port is busy, so launching anyway
        would soak whatever already listens there instead of the new process.
        """
        if not await self._url_is_local():
            return
        holder = await asyncio.to_thread(listener_pid, self._port, self._proc_root)
        if holder is not None:
            raise StartupError(
                f"target.url {self._spec.url}: PID {holder} is already listening on port "
                f"{self._port}; stop it, or drop target.command to attach to it instead"
            )

    def _mode(self) -> str:
        s = self._spec
        if s.pid is not None:
            return "pid"
        if s.pid_file is not None:
            return "pid_file"
        if s.systemd_unit is not None:
            return "systemd_unit"
        return "url"

    async def _find_at_start(self) -> ProcessId | None:
        s = self._spec
        if s.pid is not None:
            found = await asyncio.to_thread(self._table.lookup, s.pid)
            if found is None:
                raise StartupError(f"target.pid {s.pid}: no such process")
            return found
        if s.pid_file is not None:
            return await self._find_at_start_pid_file(Path(s.pid_file))
        if s.systemd_unit is not None:
            try:
                pid = await systemd_main_pid(s.systemd_unit)
            except (OSError, RuntimeError) as exc:
                raise StartupError(f"target.systemd_unit {s.systemd_unit}: {exc}") from exc
            found = None if pid is None else await asyncio.to_thread(self._table.lookup, pid)
            if found is None:
                raise StartupError(
                    f"target.systemd_unit {s.systemd_unit}: no main process (is it running?)"
                )
            return found
        return await self._find_by_url()

    async def _find_at_start_pid_file(self, path: Path) -> ProcessId:
        try:
            pf = await asyncio.to_thread(read_pid_file, path)
        except OSError as exc:
            raise StartupError(f"target.pid_file {path}: cannot read it: {exc}") from exc
        except ValueError as exc:
            raise StartupError(f"target.pid_file {path}: expected PID or PID:PORT: {exc}") from exc
        found = await asyncio.to_thread(process_from_pid_file, path, self._table)
        if found is None:
            raise StartupError(f"target.pid_file {path}: PID {pf.pid} is not running (stale file)")
        if pf.port is not None and pf.port != self._port:
            log.warning(
                "pid file port differs from target url", pid_file_port=pf.port, url=self._spec.url
            )
        return found

    async def _find_by_url(self) -> ProcessId | None:
        """Whatever listens on the URL's port here, else Engram's PID file if its port matches."""
        if not await self._url_is_local():
            return None
        return await asyncio.to_thread(self._find_by_url_blocking)

    async def _url_is_local(self) -> bool:
        if self._local is None:
            host = urlsplit(self._spec.url).hostname
            self._local = await asyncio.to_thread(is_local_host, host)
        return self._local

    def _find_by_url_blocking(self) -> ProcessId | None:
        pid = listener_pid(self._port, self._proc_root)
        if pid is not None:
            return self._table.lookup(pid)
        path = engram_pid_path()
        try:
            pf = read_pid_file(path)
        except (OSError, ValueError):
            return None
        if pf.port is not None and pf.port != self._port:
            return None  # an Engram on another port (it moves when its port is busy)
        return process_from_pid_file(path, self._table)

    async def _find_again(self) -> ProcessId | None:
        """Look for the successor of an attached target, the same way it was found."""
        s = self._spec
        if s.pid_file is not None:
            return await asyncio.to_thread(process_from_pid_file, Path(s.pid_file), self._table)
        if s.systemd_unit is not None:
            try:
                pid = await systemd_main_pid(s.systemd_unit)
            except (OSError, RuntimeError) as exc:
                log.warning("systemctl failed while looking for the target", error=str(exc))
                return None
            return None if pid is None else await asyncio.to_thread(self._table.lookup, pid)
        # An explicit pid cannot come back: its successor is whoever serves the URL.
        return await self._find_by_url()

    # -- launch ---------------------------------------------------------------------------

    def _expand(self, text: str) -> str:
        return text.replace("{python}", sys.executable).replace("{port}", str(self._port))

    def _argv(self) -> list[str]:
        return [self._expand(a) for a in self._spec.command or ()]

    def _spawn(self) -> ProcessId | None:
        """Start the command (blocking; run in a thread); None once stop() has begun."""
        with self._spawn_lock:
            if self._stopping:
                return None
            return self._spawn_locked()

    def _spawn_locked(self) -> ProcessId:
        argv = self._argv()
        env = dict(os.environ)
        env.update((k, self._expand(v)) for k, v in self._spec.env)
        self._state_dir.mkdir(parents=True, exist_ok=True)
        banner = f"--- soakd: starting {argv!r} at wall {self._clock.wall():.3f} ---\n".encode()
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            out.write(banner)
            err.write(banner)
            out.flush()
            err.flush()
            self._stderr_offset = err.tell()
            # A new session: a Ctrl-C or signal meant for soakd does not reach the
            # target first; soakd stops it in order at the end instead.
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=self._spec.cwd,
                start_new_session=True,
            )
        self._popen = popen
        try:
            create_time = psutil.Process(popen.pid).create_time()  # ours: readable even as zombie
        except psutil.Error:
            create_time = self._clock.wall()
        return ProcessId(popen.pid, create_time)

    def _set_current(self, found: ProcessId) -> None:
        self._close_exit_fd()
        self._current = found
        self._up_since_ns = self._clock.monotonic_ns()
        fd = self._table.exit_fd(found.pid)
        # The PID could have changed hands between lookup and pidfd_open.
        if (
            fd is not None
            and not self.owned
            and not found.same_process(self._table.lookup(found.pid))
        ):
            os.close(fd)
            fd = None
        self._exit_fd = fd

    def _close_exit_fd(self) -> None:
        if self._exit_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._exit_fd)
            self._exit_fd = None

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        """The last lines the launched target wrote to stderr since its latest start."""
        try:
            with open(self.stderr_path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                start = max(self._stderr_offset, size - 16_384)
                f.seek(start)
                data = f.read()
        except OSError:
            return ""
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    # -- health ---------------------------------------------------------------------------

    async def wait_healthy(
        self,
        alive: Callable[[], Awaitable[bool]],
        timeout_s: float,
        *,
        why_not: Callable[[], str | None] | None = None,
    ) -> None:
        """Poll ``alive()`` until it answers True, at most ``timeout_s``.

        ``why_not()`` says why the last probe was not alive ("GET /health/alive:
        connection refused"), for the message when it never is.

        Raises StartupError, with a launched target's last stderr lines, if the
        target dies first or never becomes healthy. ``alive`` is kept to time
        restarts until the new process answers.
        """
        self._alive = alive
        deadline = self._clock.monotonic_ns() + int(timeout_s * 1e9)
        last_error = ""
        while True:
            if self._popen is not None and self._popen.poll() is not None:
                raise StartupError(self._startup_message(describe_exit(self._popen.returncode)))
            remaining_s = (deadline - self._clock.monotonic_ns()) / 1e9
            if remaining_s <= 0:
                why = f"not healthy after {timeout_s:g}s" + (
                    f" ({last_error})" if last_error else ""
                )
                raise StartupError(self._startup_message(why))
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                # cancellation that lands as the probe answers, and this loop would poll on.
                async with asyncio.timeout(min(remaining_s, ALIVE_PROBE_TIMEOUT_S)):
                    healthy = await alive()
                if healthy:
                    return
                last_error = (why_not() if why_not is not None else None) or last_error
            except TimeoutError:
                probe_s = min(remaining_s, ALIVE_PROBE_TIMEOUT_S)
                last_error = f"the health probe timed out after {probe_s:g} s"
            except Exception as exc:  # any probe failure means "not yet"
                last_error = f"{type(exc).__name__}: {exc}"
            await self._clock.sleep_until(
                min(deadline, self._clock.monotonic_ns() + int(HEALTH_POLL_S * 1e9))
            )

    def _startup_message(self, why: str) -> str:
        msg = f"target at {self._spec.url} {why}"
        if self._popen is None:
            return msg
        tail = self.stderr_tail()
        hint = self._other_ports_hint()
        return msg + hint + (f"\nlast stderr lines ({self.stderr_path}):\n{tail}" if tail else "")

    def _other_ports_hint(self) -> str:
        """Engram moves to another port when its own is busy: say so when that happened."""
        if self._popen is None or self._popen.poll() is not None:
            return ""
        try:
            conns = psutil.Process(self._popen.pid).net_connections(kind="tcp")
        except psutil.Error:
            return ""
        ports = sorted({c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN})
        if not ports or self._port in ports:
            return ""
        return f"; it listens on port(s) {ports}, not {self._port} (was {self._port} busy?)"

    # -- watch ----------------------------------------------------------------------------

    async def watch(self) -> None:
        """Notice deaths, restart an owned target or follow an attached one, until stop().

        Returns after stop(), or when an owned target is down for good (policy
        ``never``, a clean exit under ``on-failure``, or ``restart_max`` reached).
        """
        while not self._stop.is_set():
            cur = self._current
            if cur is not None:
                if await self._wait_exit(cur):
                    self._on_death(cur)
            elif self.owned:
                if self._given_up:
                    return
                await self._restart_owned()
            else:
                await self._look_for_successor()

    async def _wait_exit(self, cur: ProcessId) -> bool:
        """Wait one poll interval (less if the pidfd fires); True if ``cur`` is gone."""
        deadline = self._clock.monotonic_ns() + int(self._poll_s * 1e9)
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] | None = None
        fd = self._exit_fd
        if fd is not None:
            exited = loop.create_future()
            fut = exited
            try:
                loop.add_reader(fd, lambda: None if fut.done() else fut.set_result(None))
            except (NotImplementedError, OSError, ValueError):
                exited, fd = None, None
        try:
            await self._sleep(deadline, exited)
        finally:
            if fd is not None:
                loop.remove_reader(fd)
        if self._stop.is_set():
            return False
        if self._popen is not None:
            return self._popen.poll() is not None  # non-blocking waitpid; reaps it
        now = await asyncio.to_thread(self._table.lookup, cur.pid)
        return not cur.same_process(now)

    async def _sleep(self, deadline_ns: int, wake: Awaitable[Any] | None = None) -> None:
        """Sleep until the deadline, stop(), or ``wake``; whichever comes first."""
        aws: list[Coroutine[Any, Any, Any] | Awaitable[Any]] = [
            self._clock.sleep_until(deadline_ns),
            self._stop.wait(),
        ]
        if wake is not None:
            aws.append(wake)
        tasks = [asyncio.ensure_future(a) for a in aws]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _on_death(self, dead: ProcessId) -> None:
        now_ns = self._clock.monotonic_ns()
        self._close_exit_fd()
        self._current, self._last, self._down_since_ns = None, dead, now_ns
        self.crashes += 1
        rc = self._popen.returncode if self._popen is not None else None
        if self._popen is not None:
            uptime_s: float = (now_ns - self._up_since_ns) / 1e9
        else:
            uptime_s = max(0.0, self._clock.wall() - dead.create_time)
        sig = -rc if rc is not None and rc < 0 else None
        detail = {"pid": dead.pid, "returncode": rc, "signal": sig, "uptime_s": round(uptime_s, 3)}
        self._event(EventKind.TARGET_CRASH, f"target PID {dead.pid} {describe_exit(rc)}", detail)
        log.warning("target died", **detail)
        self._search_s = self._poll_s
        if uptime_s >= STABLE_AFTER_S:
            self._attempt = 0

    async def _restart_owned(self) -> None:
        s = self._spec
        rc = self._popen.returncode if self._popen is not None else None
        if s.restart is RestartPolicy.NEVER or rc == 0 or self.restarts >= s.restart_max:
            if s.restart is RestartPolicy.NEVER:
                why = "restart policy is never"
            elif rc == 0:
                why = "it exited cleanly (on-failure restarts only failures)"
            else:
                why = f"restart_max ({s.restart_max}) reached"
            self._given_up = True
            self._event(
                EventKind.TARGET_DOWN, f"target stays down: {why}", {"restarts": self.restarts}
            )
            return
        self._attempt += 1
        delay_s = min(s.restart_backoff_s * 2 ** (self._attempt - 1), MAX_BACKOFF_S)
        await self._sleep(self._clock.monotonic_ns() + int(delay_s * 1e9))
        if self._stop.is_set():
            return
        self.restarts += 1
        try:
            found = await asyncio.to_thread(self._spawn)
        except OSError as exc:
            # Counts as a failed attempt; the next one backs off further.
            self._event(
                EventKind.TARGET_RESTART_FAILED,
                f"cannot relaunch target: {exc}",
                {"attempt": self._attempt},
            )
            return
        if found is None:  # stop() began meanwhile
            return
        self._set_current(found)
        healthy = await self._await_alive(found)
        down_s = self._downtime_s()
        self._event(
            EventKind.TARGET_RESTART,
            f"target relaunched as PID {found.pid} (attempt {self._attempt})"
            f" after {down_s:.1f}s down",
            {"pid": found.pid, "attempt": self._attempt, "downtime_s": down_s, "healthy": healthy},
        )

    async def _await_alive(self, found: ProcessId) -> bool | None:
        """After a relaunch, wait (bounded) for the health probe, so downtime covers start-up."""
        if self._alive is None:
            return None
        deadline = self._clock.monotonic_ns() + int(self._spec.startup_timeout_s * 1e9)
        while self._clock.monotonic_ns() < deadline and not self._stop.is_set():
            if self._popen is not None and self._popen.poll() is not None:
                return False  # died again; watch() records it on its next pass
            with contextlib.suppress(Exception):
                async with asyncio.timeout(ALIVE_PROBE_TIMEOUT_S):  # not wait_for: see above
                    healthy = await self._alive()
                if healthy:
                    return True
            await self._sleep(min(deadline, self._clock.monotonic_ns() + int(HEALTH_POLL_S * 1e9)))
        log.warning("relaunched target not healthy in time", pid=found.pid)
        return False

    def _downtime_s(self) -> float:
        since = (
            self._down_since_ns if self._down_since_ns is not None else self._clock.monotonic_ns()
        )
        return round((self._clock.monotonic_ns() - since) / 1e9, 3)

    async def _look_for_successor(self) -> None:
        found = await self._find_again()
        if found is not None and not found.same_process(self._last):
            old = self._last
            self._set_current(found)
            self._search_s = self._poll_s
            if old is None:  # never had one: the first sighting, not a restart
                log.info("target found", pid=found.pid)
                return
            self.restarts += 1
            reused = found.pid == old.pid
            down_s = self._downtime_s()
            self._event(
                EventKind.TARGET_RESTART,
                f"target restarted elsewhere: PID {old.pid} -> {found.pid}"
                + (" (same PID, new process)" if reused else "")
                + f" after {down_s:.1f}s down",
                {
                    "old_pid": old.pid,
                    "new_pid": found.pid,
                    "downtime_s": down_s,
                    "pid_reused": reused,
                },
            )
            return
        if self._last is None:
            # Never found: a remote or containerised target. Look less and less often.
            self._search_s = min(self._search_s * 2, MAX_SEARCH_INTERVAL_S)
        await self._sleep(self._clock.monotonic_ns() + int(self._search_s * 1e9))

    def _event(self, kind: EventKind, message: str, detail: dict[str, object]) -> None:
        self._emit(Event(t=self._clock.wall(), kind=kind, message=message, detail=detail))

    # -- stop -----------------------------------------------------------------------------

    async def stop(self, timeout_s: float = 10.0) -> int | None:
        """End watching; an owned target gets SIGTERM, then SIGKILL after ``timeout_s``.

        Returns the owned target's exit code (negative: the signal), else None.
        An attached target is never signalled.
        """
        self._stopping = True
        self._stop.set()
        # Wait for a relaunch already forking, so its child is the one stopped.
        locked = await asyncio.to_thread(self._spawn_lock.acquire, True, timeout_s)
        popen = self._popen
        if locked:
            self._spawn_lock.release()
        self._close_exit_fd()
        if popen is None:
            return None
        if popen.poll() is None:
            self._signal_group(popen.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(popen.wait, timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "target ignored SIGTERM; sending SIGKILL", pid=popen.pid, timeout_s=timeout_s
                )
                self._signal_group(popen.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(popen.wait, 5.0)
        self._current = None
        return popen.returncode

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        """Signal the target's whole session group (it leads it), so its children go too."""
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
