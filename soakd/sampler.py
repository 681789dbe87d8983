"""Readings of the target process (psutil + /proc) and of soakd itself, on a fixed schedule.

One tick reads RSS, heap, cumulative CPU seconds, I/O bytes, fds and threads.
Heap is the process's resident anonymous memory: ``RssAnon:`` of
/proc/PID/status, a counter the kernel keeps (O(1), ~0.02 ms). It equals the
``Anonymous:`` line of /proc/PID/smaps_rollup (checked: 529036 kB both on a
0.5 GiB process), but smaps_rollup walks the page tables -- 13 ms on a 1.5 GiB
process, growing with size -- so it is only the fallback for kernels without
RssAnon (< 4.5). USS (``memory_full_info``, which reads smaps_rollup too) is
read only every ``uss_interval_s``; on other ticks it is None (not read),
never a stale copy. The data dir's size is a walk of the tree, so it is cached
and refreshed at most every ``data_dir_refresh_s`` -- in its own thread under
:meth:`Sampler.run`, so a big tree never delays a tick.

The blocking reads run in a worker thread; events they raise are handed back
and emitted on the event loop, so ``on_event`` never runs off the loop under
:meth:`Sampler.run`. A reading that fails with AccessDenied is reported once
per kind, with the fix, and stays None while the others go on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, TypeVar

import psutil
import structlog

from soakd.model import Clock, Event, EventKind, Sample
from soakd.process import CREATE_TIME_TOLERANCE_S, ProcessId

log = structlog.get_logger(__name__)

T = TypeVar("T")

DATA_DIR_REFRESH_S = 30.0
#: A tick still running after this long is abandoned (its thread finishes on its own).
TICK_TIMEOUT_S = 10.0

PERMISSION_FIX = (
    "run soakd as the target's user, or grant soakd CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH "
    "(e.g. AmbientCapabilities=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH in its systemd unit)"
)


# --- the seam: what of psutil.Process the sampler reads -----------------------------


class _Mem(Protocol):
    @property
    def rss(self) -> int: ...


class _FullMem(Protocol):
    @property
    def uss(self) -> int: ...


class _Cpu(Protocol):
    @property
    def user(self) -> float: ...

    @property
    def system(self) -> float: ...


class _Io(Protocol):
    @property
    def read_bytes(self) -> int: ...

    @property
    def write_bytes(self) -> int: ...


class ProcessHandle(Protocol):
    """The part of ``psutil.Process`` a tick uses; tests inject fakes that raise."""

    def oneshot(self) -> AbstractContextManager[None]: ...

    def create_time(self) -> float: ...

    def memory_info(self) -> _Mem: ...

    def memory_full_info(self) -> _FullMem: ...

    def cpu_times(self) -> _Cpu: ...

    def io_counters(self) -> _Io: ...

    def num_fds(self) -> int: ...

    def num_threads(self) -> int: ...


def psutil_process(pid: int) -> ProcessHandle:
    """The default handle factory: a real psutil.Process."""
    return psutil.Process(pid)


# --- small readers ---------------------------------------------------------------------


def read_status_rss_anon(path: Path) -> int | None:
    """Bytes of resident anonymous memory from a /proc/PID/status file (``RssAnon:``, kB)."""
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b"RssAnon:"):
                return int(line.split()[1]) * 1024
    return None


_STATUS_PARTS = {b"RssAnon:": "anon", b"RssFile:": "file", b"RssShmem:": "shmem"}


def read_status_memory(path: Path) -> dict[str, int] | None:
    """The kernel's split of RSS from a /proc/PID/status file, in bytes.

    Keys ``anon``, ``file``, ``shmem`` (RssAnon, RssFile, RssShmem: kB lines,
    Linux >= 4.5); None when the kernel has none of them.
    """
    found: dict[str, int] = {}
    with open(path, "rb") as f:
        for line in f:
            key = _STATUS_PARTS.get(line.split(b"\t", 1)[0].split(b" ", 1)[0])
            if key is not None:
                found[key] = int(line.split()[1]) * 1024
                if len(found) == len(_STATUS_PARTS):
                    break
    return found or None


def read_mem_available(meminfo: Path) -> int | None:
    """``MemAvailable`` of /proc/meminfo in bytes (None on kernels without it)."""
    with open(meminfo, "rb") as f:
        for line in f:
            if line.startswith(b"MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def cgroup_dir(proc_dir: Path, cgroup_root: Path) -> Path | None:
    """The cgroup v2 folder of a process (from its /proc/PID/cgroup ``0::`` line)."""
    try:
        text = (proc_dir / "cgroup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            return cgroup_root / line[3:].strip().lstrip("/")
    return None  # cgroup v1 only: no unified hierarchy to read


def cgroup_available(folder: Path, cgroup_root: Path) -> int | None:
    """Bytes left under the tightest ``memory.max`` of ``folder`` and its parents.

    None when no level has a limit (``max``) or none can be read: the host's
    figure is then the only one.
    """
    best: int | None = None
    here = folder
    while True:
        try:
            limit = (here / "memory.max").read_text().strip()
            if limit != "max":
                used = int((here / "memory.current").read_text().strip())
                left = max(0, int(limit) - used)
                best = left if best is None else min(best, left)
        except (OSError, ValueError):
            pass
        if here == cgroup_root or cgroup_root not in here.parents:
            return best
        here = here.parent


def read_heap_bytes(proc_dir: Path) -> int | None:
    """Resident anonymous memory of the process whose /proc folder this is.

    ``RssAnon`` (cheap counter) first; smaps_rollup's ``Anonymous`` (a page
    table walk) only where the kernel has no RssAnon.
    """
    heap = read_status_rss_anon(proc_dir / "status")
    if heap is None:
        heap = read_smaps_anonymous(proc_dir / "smaps_rollup")
    return heap


def read_smaps_anonymous(path: Path) -> int | None:
    """Bytes of anonymous memory from an smaps_rollup file (its ``Anonymous:`` line, in kB)."""
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b"Anonymous:"):
                return int(line.split()[1]) * 1024
    return None


class _DirDenied(Exception):
    """The data dir (or a folder in it) cannot be read."""


def dir_size_bytes(root: Path) -> int | None:
    """Disk space used under ``root`` (allocated blocks, like ``du``); None if it is missing.

    Files that vanish during the walk (WAL segments rotate) are skipped; an
    unreadable folder raises _DirDenied so it can be reported once.
    """
    total = 0
    stack = [str(root)]
    first = True
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        total += st.st_blocks * 512
                    except FileNotFoundError:
                        continue
        except FileNotFoundError:
            if first:
                return None
        except PermissionError as exc:
            raise _DirDenied(str(exc)) from exc
        first = False
    return total


class _DirSizeCache:
    """The data dir's size, refreshed at most every ``refresh_s`` (a walk is costly)."""

    def __init__(self, path: Path, refresh_s: float, clock: Clock) -> None:
        self.path = path
        self._refresh_ns = int(refresh_s * 1e9)
        self._clock = clock
        self._next_ns: int | None = None
        self.value: int | None = None
        self.denied: str | None = None  # set by refresh(), consumed by the sampler

    def due(self) -> bool:
        return self._next_ns is None or self._clock.monotonic_ns() >= self._next_ns

    def refresh(self) -> None:
        """Walk the tree now (blocking)."""
        self._next_ns = self._clock.monotonic_ns() + self._refresh_ns
        try:
            self.value = dir_size_bytes(self.path)
        except _DirDenied as exc:
            self.value, self.denied = None, str(exc)


# --- the sampler -----------------------------------------------------------------------


class Sampler:
    """Reads the current target and soakd itself every ``interval_s``."""

    def __init__(
        self,
        current: Callable[[], ProcessId | None],
        *,
        clock: Clock,
        interval_s: float = 1.0,
        uss_interval_s: float = 60.0,
        data_dir: Path | None = None,
        proc_root: Path = Path("/proc"),
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        on_event: Callable[[Event], None],
        memories: Callable[[], Awaitable[int | None]] | None = None,
        memories_interval_s: float = 10.0,
        process_factory: Callable[[int], ProcessHandle] = psutil_process,
        data_dir_refresh_s: float = DATA_DIR_REFRESH_S,
    ) -> None:
        self._current = current
        self._clock = clock
        self.interval_s = interval_s
        self._uss_ns = int(uss_interval_s * 1e9)
        self._proc_root = proc_root
        self._cgroup_root = cgroup_root
        self._cgroup: tuple[int, Path | None] | None = None  # (pid, its cgroup folder)
        self._emit = on_event
        self._memories_fn = memories
        self._memories_s = memories_interval_s
        self._factory = process_factory
        self._dir = _DirSizeCache(data_dir, data_dir_refresh_s, clock) if data_dir else None
        self._dir_in_background = False
        self._handle: ProcessHandle | None = None
        self._handle_for: ProcessId | None = None
        self._next_uss_ns: int | None = None
        self._self_proc = psutil.Process()
        self._reported: set[str] = set()
        self._memories: int | None = None
        self._stuck: asyncio.Future[tuple[Sample, list[Event]]] | None = None
        self.ticks = 0
        self.skipped_ticks = 0

    # -- one tick (blocking) -----------------------------------------------------------

    def sample_once(self, now_wall: float) -> Sample:
        """Read everything now (BLOCKING: call it via asyncio.to_thread) and emit any events."""
        sample, events = self._sample(now_wall)
        for event in events:
            self._emit(event)
        return sample

    def _sample(self, now_wall: float) -> tuple[Sample, list[Event]]:
        events: list[Event] = []
        self_rss, self_cpu = self._self_readings()
        if self._dir is not None and not self._dir_in_background and self._dir.due():
            self._dir.refresh()
        data_dir_bytes = self._data_dir_bytes(now_wall, events)
        base = Sample(
            t=now_wall,
            pid=None,
            data_dir_bytes=data_dir_bytes,
            memories=self._memories,
            self_rss_bytes=self_rss,
            self_cpu_s=self_cpu,
        )
        target = self._current()
        if target is None:
            return base, events
        handle = self._handle_of(target)
        if handle is None:  # gone, or its PID now belongs to another process
            return dataclasses.replace(base, pid=target.pid), events
        return self._read_target(base, target, handle, now_wall, events), events

    def _read_target(
        self,
        base: Sample,
        target: ProcessId,
        proc: ProcessHandle,
        now_wall: float,
        events: list[Event],
    ) -> Sample:
        def read(kind: str, fn: Callable[[], T]) -> T | None:
            return self._read(kind, target.pid, fn, now_wall, events)

        with proc.oneshot():
            rss = read("RSS (memory_info)", lambda: proc.memory_info().rss)
            cpu = read("CPU times (cpu_times)", proc.cpu_times)
            io = read("I/O bytes (/proc/PID/io)", proc.io_counters)
            fds = read("open fds (/proc/PID/fd)", proc.num_fds)
            threads = read("threads (num_threads)", proc.num_threads)
        heap = read(
            "heap (/proc/PID/status RssAnon)",
            lambda: read_heap_bytes(self._proc_root / str(target.pid)),
        )
        parts = read(
            "RSS split (/proc/PID/status RssAnon/RssFile/RssShmem)",
            lambda: read_status_memory(self._proc_root / str(target.pid) / "status"),
        )
        parts = parts or {}
        available = read("available memory (meminfo, cgroup)", lambda: self._available(target))
        uss = None
        now_ns = self._clock.monotonic_ns()
        if self._next_uss_ns is None or now_ns >= self._next_uss_ns:
            # Scheduled even when it fails, so a failing USS never costs every tick.
            self._next_uss_ns = now_ns + self._uss_ns
            uss = read("USS (memory_full_info)", lambda: proc.memory_full_info().uss)
        return dataclasses.replace(
            base,
            pid=target.pid,
            rss_bytes=rss,
            heap_bytes=heap,
            uss_bytes=uss,
            rss_anon_bytes=parts.get("anon"),
            rss_file_bytes=parts.get("file"),
            rss_shmem_bytes=parts.get("shmem"),
            mem_available_bytes=available,
            cpu_user_s=None if cpu is None else cpu.user,
            cpu_system_s=None if cpu is None else cpu.system,
            read_bytes=None if io is None else io.read_bytes,
            write_bytes=None if io is None else io.write_bytes,
            num_fds=fds,
            num_threads=threads,
        )

    def _available(self, target: ProcessId) -> int | None:
        """What the target can still get: the host's MemAvailable, or its cgroup's
        room under memory.max when that is smaller (the cgroup folder is looked
        up once per process)."""
        host = read_mem_available(self._proc_root / "meminfo")
        if self._cgroup is None or self._cgroup[0] != target.pid:
            folder = cgroup_dir(self._proc_root / str(target.pid), self._cgroup_root)
            self._cgroup = (target.pid, folder)
        folder = self._cgroup[1]
        room = cgroup_available(folder, self._cgroup_root) if folder is not None else None
        if room is None:
            return host
        return room if host is None else min(host, room)

    def _read(
        self, kind: str, pid: int, fn: Callable[[], T], now_wall: float, events: list[Event]
    ) -> T | None:
        """One reading; None when it cannot be had. AccessDenied is reported once per kind."""
        try:
            return fn()
        except (psutil.AccessDenied, PermissionError):
            self._report_denied(kind, pid, now_wall, events)
        except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
            self._handle, self._handle_for = None, None  # gone mid-tick
        except (OSError, ValueError) as exc:
            if kind not in self._reported:
                self._reported.add(kind)
                log.warning("sampler reading failed", reading=kind, pid=pid, error=str(exc))
        return None

    def _report_denied(self, kind: str, pid: int, now_wall: float, events: list[Event]) -> None:
        if kind in self._reported:
            return
        self._reported.add(kind)
        message = (
            f"cannot read the target's {kind} for PID {pid}: permission denied. "
            f"Fix: {PERMISSION_FIX}. The other readings go on; this one stays empty."
        )
        log.warning("sampler permission denied", reading=kind, pid=pid)
        events.append(
            Event(
                t=now_wall,
                kind=EventKind.PERMISSION,
                message=message,
                detail={"reading": kind, "pid": pid},
            )
        )

    def _handle_of(self, target: ProcessId) -> ProcessHandle | None:
        """A cached handle on ``target``; None if it is gone or its PID was reused."""
        if self._handle is not None and target.same_process(self._handle_for):
            return self._handle
        self._handle, self._handle_for = None, None
        try:
            handle = self._factory(target.pid)
            if abs(handle.create_time() - target.create_time) >= CREATE_TIME_TOLERANCE_S:
                return None
        except psutil.Error:
            return None
        self._handle, self._handle_for, self._next_uss_ns = handle, target, None
        return handle

    def _self_readings(self) -> tuple[int | None, float | None]:
        """soakd's own RSS and CPU seconds (user + system)."""
        try:
            with self._self_proc.oneshot():
                rss = self._self_proc.memory_info().rss
                cpu = self._self_proc.cpu_times()
        except psutil.Error:
            return None, None
        return rss, cpu.user + cpu.system

    def _data_dir_bytes(self, now_wall: float, events: list[Event]) -> int | None:
        if self._dir is None:
            return None
        if self._dir.denied is not None:
            kind = "data dir size"
            if kind not in self._reported:
                self._reported.add(kind)
                events.append(
                    Event(
                        t=now_wall,
                        kind=EventKind.PERMISSION,
                        message=(
                            f"cannot measure the data dir {self._dir.path}: {self._dir.denied}. "
                            "Fix: run soakd as the target's user or grant it CAP_DAC_READ_SEARCH. "
                            "The other readings go on."
                        ),
                        detail={"reading": kind, "path": str(self._dir.path)},
                    )
                )
        return self._dir.value

    # -- the loop ------------------------------------------------------------------------

    async def run(self, on_sample: Callable[[Sample], None]) -> None:
        """Sample every ``interval_s`` on an absolute schedule until cancelled.

        Each tick's blocking reads run in a thread. ``loop_lag_s`` is how late
        the loop woke this task versus its schedule -- the event loop's own lag.
        A tick still running at the next deadline makes that tick be skipped
        (counted in ``skipped_ticks``) rather than pile up threads.
        """
        self._dir_in_background = True
        interval_ns = int(self.interval_s * 1e9)
        next_ns = self._clock.monotonic_ns()
        side: set[asyncio.Task[None]] = set()
        next_memories_ns = next_ns
        try:
            while True:
                await self._clock.sleep_until(next_ns)
                woke_ns = self._clock.monotonic_ns()
                lag_s = max(0, woke_ns - next_ns) / 1e9
                if self._dir is not None and self._dir.due() and not side_named(side, "dir"):
                    self._start_side(side, "dir", asyncio.to_thread(self._dir.refresh))
                if self._memories_fn is not None and woke_ns >= next_memories_ns:
                    next_memories_ns = woke_ns + int(self._memories_s * 1e9)
                    if not side_named(side, "memories"):
                        self._start_side(side, "memories", self._poll_memories(self._memories_fn))
                await self._tick(lag_s, on_sample)
                next_ns += interval_ns
                now_ns = self._clock.monotonic_ns()
                if now_ns >= next_ns:  # fell behind: skip the missed ticks, keep the grid
                    missed = (now_ns - next_ns) // interval_ns + 1
                    self.skipped_ticks += missed
                    next_ns += missed * interval_ns
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)

    async def _tick(self, lag_s: float, on_sample: Callable[[Sample], None]) -> None:
        if self._stuck is not None and not self._stuck.done():
            self.skipped_ticks += 1  # an abandoned read still holds the worker: no second one
            return
        now_wall = self._clock.wall()
        job = asyncio.ensure_future(asyncio.to_thread(self._sample, now_wall))
        # asyncio.wait, not wait_for(shield(job)): on Python 3.11 wait_for returns the
        # result when a cancellation lands as the job completes, and the loop ticked on
        # after its cancel. wait() neither catches the cancellation nor cancels the job.
        try:
            await asyncio.wait((job,), timeout=TICK_TIMEOUT_S)
        except asyncio.CancelledError:
            job.add_done_callback(_discard_outcome)  # the thread finishes on its own
            raise
        if not job.done():
            log.warning("sampler tick took too long; abandoned", timeout_s=TICK_TIMEOUT_S)
            self._stuck = job
            job.add_done_callback(_discard_outcome)
            self.skipped_ticks += 1
            return
        sample, events = job.result()
        for event in events:
            self._emit(event)
        self.ticks += 1
        on_sample(dataclasses.replace(sample, loop_lag_s=lag_s, memories=self._memories))

    def _start_side(self, side: set[asyncio.Task[None]], name: str, coro: Awaitable[None]) -> None:
        async def wrapped() -> None:
            await coro

        task = asyncio.create_task(wrapped(), name=f"sampler-{name}")
        side.add(task)
        task.add_done_callback(side.discard)

    async def _poll_memories(self, fn: Callable[[], Awaitable[int | None]]) -> None:
        """Refresh the data size (memories stored) under a timeout; None when it fails."""
        try:
            # Bounded, but not so tightly that a busy loop turns every poll into a timeout.
            # asyncio.timeout, not wait_for: see _tick.
            # Longer than the client's own timeout, so a slow target is reported as the
            # call's timeout (which names it) rather than cut short here.
            async with asyncio.timeout(max(self._memories_s, 5.0) + 5.0):
                self._memories = await fn()
        except Exception as exc:  # a failed poll must not end sampling
            self._memories = None
            if "memories" not in self._reported:
                self._reported.add("memories")
                log.warning("memories poll failed", error=f"{type(exc).__name__}: {exc}")


def _discard_outcome(job: asyncio.Future[T]) -> None:
    """Retrieve an abandoned job's outcome, so asyncio does not log it as never retrieved."""
    if not job.cancelled():
        job.exception()


def side_named(side: set[asyncio.Task[None]], name: str) -> bool:
    """True if a side job of that name is still running."""
    return any(t.get_name() == f"sampler-{name}" for t in side)
