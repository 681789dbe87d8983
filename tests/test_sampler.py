"""Tests for soakd.sampler: /proc parsing, permission handling, cadence, real processes."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from soakd import sampler as sampler_module
from soakd.clock import FakeClock, SystemClock
from soakd.model import Event, Sample
from soakd.process import ProcessId
from soakd.sampler import Sampler, dir_size_bytes, read_heap_bytes, read_smaps_anonymous
from soakd.testing import async_wait_for, stops_when_cancelled

T = TypeVar("T")

PID = 4242
CREATE = 1_700_000_000.0

STATUS = """\
Name:\tengram
State:\tS (sleeping)
Pid:\t4242
VmRSS:\t  204800 kB
RssAnon:\t  153600 kB
RssFile:\t   51200 kB
RssShmem:\t    1024 kB
Threads:\t9
"""
MEMINFO = """\
MemTotal:       24000000 kB
MemFree:        19000000 kB
MemAvailable:   22000000 kB
"""

SMAPS_ROLLUP = """\
55d0c0a00000-7ffd5b1f3000 ---p 00000000 00:00 0                          [rollup]
Rss:              204800 kB
Pss:              200000 kB
Pss_Anon:         150000 kB
Shared_Clean:       4096 kB
Private_Dirty:    150000 kB
Referenced:       204800 kB
Anonymous:        143360 kB
Swap:                  0 kB
"""


@dataclass(frozen=True)
class Mem:
    rss: int


@dataclass(frozen=True)
class FullMem:
    uss: int


@dataclass(frozen=True)
class Cpu:
    user: float
    system: float


@dataclass(frozen=True)
class Io:
    read_bytes: int
    write_bytes: int


class FakeProc:
    """A psutil.Process stand-in; the readings named in ``deny`` raise AccessDenied."""

    def __init__(self, create_time: float = CREATE, deny: tuple[str, ...] = ()) -> None:
        self._create_time = create_time
        self.deny = deny
        self.uss_reads = 0

    def _check(self, name: str) -> None:
        if name in self.deny:
            raise psutil.AccessDenied(PID)

    def oneshot(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def create_time(self) -> float:
        return self._create_time

    def memory_info(self) -> Mem:
        self._check("memory_info")
        return Mem(rss=200 * 2**20)

    def memory_full_info(self) -> FullMem:
        self._check("memory_full_info")
        self.uss_reads += 1
        return FullMem(uss=140 * 2**20)

    def cpu_times(self) -> Cpu:
        self._check("cpu_times")
        return Cpu(user=12.5, system=3.25)

    def io_counters(self) -> Io:
        self._check("io_counters")
        return Io(read_bytes=1000, write_bytes=2000)

    def num_fds(self) -> int:
        self._check("num_fds")
        return 17

    def num_threads(self) -> int:
        self._check("num_threads")
        return 9


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    """A fake /proc with one process: 150 MiB anonymous (status), 140 MiB (smaps_rollup)."""
    root = tmp_path / "proc"
    (root / str(PID)).mkdir(parents=True)
    (root / str(PID) / "status").write_text(STATUS)
    (root / str(PID) / "smaps_rollup").write_text(SMAPS_ROLLUP)
    (root / str(PID) / "cgroup").write_text("0::/system.slice/engram.service\n")
    (root / "meminfo").write_text(MEMINFO)
    return root


def ignore(event: Event) -> None:
    """An on_event that drops events."""


def fake_sampler(
    proc_root: Path,
    fake: FakeProc,
    events: list[Event],
    clock: FakeClock | None = None,
    **kw: object,
) -> Sampler:
    return Sampler(
        lambda: ProcessId(PID, CREATE),
        clock=clock or FakeClock(),
        proc_root=proc_root,
        on_event=events.append,
        process_factory=lambda pid: fake,
        **kw,  # type: ignore[arg-type]
    )


def test_heap_is_rss_anon_from_status_in_bytes(proc_root: Path) -> None:
    """Heap is the RssAnon: line of /proc/PID/status (kB) in bytes, when the kernel has it."""
    assert read_heap_bytes(proc_root / str(PID)) == 153600 * 1024


def test_heap_falls_back_to_smaps_rollup_anonymous(proc_root: Path) -> None:
    """Without RssAnon (old kernels), heap is the Anonymous: line of smaps_rollup."""
    status = proc_root / str(PID) / "status"
    status.write_text(STATUS.replace("RssAnon", "Other"))
    assert read_smaps_anonymous(proc_root / str(PID) / "smaps_rollup") == 143360 * 1024
    assert read_heap_bytes(proc_root / str(PID)) == 143360 * 1024


def test_heap_permission_denied_is_reported_once_and_the_rest_goes_on(
    proc_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A /proc read refused with PermissionError is one permission event; heap None, rest read."""

    def denied(proc_dir: Path) -> int | None:
        raise PermissionError(13, "Permission denied", str(proc_dir / "status"))

    monkeypatch.setattr(sampler_module, "read_heap_bytes", denied)
    events: list[Event] = []
    sampler = fake_sampler(proc_root, FakeProc(), events)
    samples = [sampler.sample_once(float(i)) for i in range(3)]
    assert [(e.kind, e.detail["reading"]) for e in events] == [
        ("permission", "heap (/proc/PID/status RssAnon)")
    ]
    assert all(s.heap_bytes is None and s.rss_bytes == 200 * 2**20 for s in samples)


def test_other_proc_read_errors_leave_the_field_empty(proc_root: Path) -> None:
    """An odd /proc (status is a directory) gives heap None without an event or a crash."""
    (proc_root / str(PID) / "status").unlink()
    (proc_root / str(PID) / "status").mkdir()
    events: list[Event] = []
    s = fake_sampler(proc_root, FakeProc(), events).sample_once(1.0)
    assert s.heap_bytes is None and s.rss_bytes == 200 * 2**20 and events == []


def test_sample_reads_every_field_from_the_process(proc_root: Path) -> None:
    """One tick fills every target field from the process and the fake /proc tree."""
    events: list[Event] = []
    s = fake_sampler(proc_root, FakeProc(), events).sample_once(123.0)
    assert s == Sample(
        t=123.0,
        pid=PID,
        rss_bytes=200 * 2**20,
        heap_bytes=153600 * 1024,
        uss_bytes=140 * 2**20,
        cpu_user_s=12.5,
        cpu_system_s=3.25,
        read_bytes=1000,
        write_bytes=2000,
        num_fds=17,
        num_threads=9,
        self_rss_bytes=s.self_rss_bytes,
        self_cpu_s=s.self_cpu_s,
        rss_anon_bytes=153600 * 1024,
        rss_file_bytes=51200 * 1024,
        rss_shmem_bytes=1024 * 1024,
        mem_available_bytes=22000000 * 1024,  # no cgroup limit: the host's
    )
    assert s.self_rss_bytes is not None and s.self_rss_bytes > 0
    assert events == []


def cgroup_tree(tmp_path: Path, limits: dict[str, tuple[str, int]]) -> Path:
    """A fake cgroup v2 root: {relative folder: (memory.max, memory.current)}."""
    root = tmp_path / "cgroup"
    for rel, (limit, current) in limits.items():
        folder = root / rel if rel else root
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "memory.max").write_text(f"{limit}\n")
        (folder / "memory.current").write_text(f"{current}\n")
    return root


def test_available_memory_is_the_cgroup_room_when_smaller_than_the_host(
    proc_root: Path, tmp_path: Path
) -> None:
    """A 4 GiB limit with 3 GiB used leaves 1 GiB: smaller than MemAvailable, so it counts;
    a parent's tighter limit wins over the target's own folder."""
    gib = 2**30
    root = cgroup_tree(
        tmp_path,
        {
            "": ("max", 10 * gib),
            "system.slice": ("max", 9 * gib),
            "system.slice/engram.service": (str(4 * gib), 3 * gib),
        },
    )
    s = fake_sampler(proc_root, FakeProc(), [], cgroup_root=root).sample_once(1.0)
    assert s.mem_available_bytes == gib
    (root / "system.slice" / "memory.max").write_text(f"{int(9.5 * gib)}\n")
    s = fake_sampler(proc_root, FakeProc(), [], cgroup_root=root).sample_once(2.0)
    assert s.mem_available_bytes == gib // 2  # 9.5 - 9 GiB left in the parent


def test_available_memory_is_the_host_when_the_cgroup_has_no_limit_or_is_v1(
    proc_root: Path, tmp_path: Path
) -> None:
    """No memory.max anywhere (or a v1-only /proc/PID/cgroup): MemAvailable of the host."""
    root = cgroup_tree(tmp_path, {"system.slice/engram.service": ("max", 2**30)})
    s = fake_sampler(proc_root, FakeProc(), [], cgroup_root=root).sample_once(1.0)
    assert s.mem_available_bytes == 22000000 * 1024
    (proc_root / str(PID) / "cgroup").write_text("4:memory:/x\n")
    s = fake_sampler(proc_root, FakeProc(), [], cgroup_root=root).sample_once(2.0)
    assert s.mem_available_bytes == 22000000 * 1024


def test_rss_split_without_rss_shmem_leaves_only_that_part_empty(proc_root: Path) -> None:
    """An older status file without RssShmem: anon and file read, shmem None (not 0)."""
    status = proc_root / str(PID) / "status"
    status.write_text(STATUS.replace("RssShmem", "Other"))
    s = fake_sampler(proc_root, FakeProc(), []).sample_once(1.0)
    assert (s.rss_anon_bytes, s.rss_file_bytes, s.rss_shmem_bytes) == (
        153600 * 1024,
        51200 * 1024,
        None,
    )


def test_access_denied_is_reported_once_per_reading_and_others_go_on(proc_root: Path) -> None:
    """AccessDenied on io and USS: one permission event each, with the fix; the rest is read."""
    events: list[Event] = []
    fake = FakeProc(deny=("io_counters", "memory_full_info"))
    sampler = fake_sampler(proc_root, fake, events, uss_interval_s=0.0)
    samples = [sampler.sample_once(float(i)) for i in range(3)]
    assert [e.kind for e in events] == ["permission", "permission"]
    assert {e.detail["reading"] for e in events} == {
        "I/O bytes (/proc/PID/io)",
        "USS (memory_full_info)",
    }
    for e in events:
        assert "CAP_SYS_PTRACE" in e.message and "target's user" in e.message
    for s in samples:
        assert s.read_bytes is None and s.write_bytes is None and s.uss_bytes is None
        assert s.rss_bytes == 200 * 2**20 and s.heap_bytes == 153600 * 1024
        assert s.cpu_user_s == 12.5 and s.num_fds == 17 and s.num_threads == 9


def test_uss_is_read_only_every_uss_interval(proc_root: Path) -> None:
    """USS (costly) is read on the first tick, then once per uss_interval_s."""
    clock = FakeClock()
    fake = FakeProc()
    sampler = fake_sampler(proc_root, fake, [], clock, uss_interval_s=60.0)
    got = []
    for _ in range(121):
        got.append(sampler.sample_once(clock.wall()).uss_bytes is not None)
        clock.advance(1_000_000_000)
    assert [i for i, g in enumerate(got) if g] == [0, 60, 120]
    assert fake.uss_reads == 3


def test_reused_pid_is_not_sampled_as_the_target(proc_root: Path) -> None:
    """A process with the target's PID but another create time gives no readings."""
    sampler = fake_sampler(proc_root, FakeProc(create_time=CREATE + 500), [])
    s = sampler.sample_once(1.0)
    assert s.pid == PID and s.rss_bytes is None and s.heap_bytes is None


def test_target_down_still_samples_soakd_itself(tmp_path: Path) -> None:
    """With no target, the sample has pid None, no target readings, and soakd's own RSS/CPU."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_bytes(b"x" * 10_000)
    sampler = Sampler(lambda: None, clock=FakeClock(), on_event=ignore, data_dir=data)
    s = sampler.sample_once(5.0)
    assert s.pid is None and s.rss_bytes is None and s.cpu_user_s is None
    assert s.self_rss_bytes is not None and s.self_rss_bytes > 0 and s.self_cpu_s is not None
    assert s.data_dir_bytes is not None and s.data_dir_bytes >= 10_000


def test_data_dir_size_is_cached_between_refreshes(tmp_path: Path) -> None:
    """The data dir walk is repeated at most every 30 s; in between the cached size is used."""
    data = tmp_path / "data"
    (data / "space_01" / "wal").mkdir(parents=True)
    (data / "space_01" / "wal" / "seg1").write_bytes(b"x" * 1_000_000)
    clock = FakeClock()
    sampler = Sampler(lambda: None, clock=clock, on_event=ignore, data_dir=data)
    first = sampler.sample_once(0.0).data_dir_bytes
    assert first is not None and first >= 1_000_000
    (data / "space_01" / "wal" / "seg2").write_bytes(b"y" * 2_000_000)
    clock.advance(29 * 10**9)
    assert sampler.sample_once(29.0).data_dir_bytes == first
    clock.advance(1 * 10**9)
    second = sampler.sample_once(30.0).data_dir_bytes
    assert second is not None and second >= first + 2_000_000


def test_dir_size_of_missing_dir_is_none(tmp_path: Path) -> None:
    """A data dir that does not exist has no size (None), not zero."""
    assert dir_size_bytes(tmp_path / "nope") is None
    (tmp_path / "empty").mkdir()
    assert dir_size_bytes(tmp_path / "empty") == 0


# --- real processes -------------------------------------------------------------------------

ALLOCATOR = r"""
import sys
keep = []
for line in sys.stdin:
    n = int(line) * 2**20
    b = bytearray(n)
    b[::4096] = b"\x01" * len(range(0, n, 4096))  # touch every page so it is resident
    keep.append(b)
    print("done", flush=True)
"""


@pytest.fixture
def allocator() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", ALLOCATOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    yield proc
    proc.kill()
    proc.wait(10)


def test_rss_and_heap_rise_when_a_real_child_allocates(
    allocator: subprocess.Popen[str],
) -> None:
    """A real child allocating 200 MiB shows RSS and heap up by about that much."""
    target = ProcessId(allocator.pid, psutil.Process(allocator.pid).create_time())
    sampler = Sampler(lambda: target, clock=SystemClock(), on_event=ignore)
    before = sampler.sample_once(0.0)
    assert before.rss_bytes is not None and before.heap_bytes is not None
    assert before.cpu_user_s is not None and before.num_threads == 1 and before.num_fds
    assert allocator.stdin is not None and allocator.stdout is not None
    allocator.stdin.write("200\n")
    allocator.stdin.flush()
    assert allocator.stdout.readline().strip() == "done"
    after = sampler.sample_once(1.0)
    assert after.rss_bytes is not None and after.heap_bytes is not None
    assert after.rss_bytes - before.rss_bytes >= 180 * 2**20
    assert after.heap_bytes - before.heap_bytes >= 180 * 2**20
    assert after.rss_anon_bytes is not None and before.rss_anon_bytes is not None
    assert after.rss_anon_bytes - before.rss_anon_bytes >= 180 * 2**20
    assert after.rss_file_bytes is not None and after.mem_available_bytes is not None


async def test_run_samples_on_schedule_with_loop_lag_and_memories(proc_root: Path) -> None:
    """run() delivers samples with loop lag and the polled memories; events come on the loop."""
    events: list[Event] = []
    event_threads: set[int] = set()

    def on_event(e: Event) -> None:
        event_threads.add(threading.get_ident())
        events.append(e)

    async def memories() -> int | None:
        return 42

    sampler = Sampler(
        lambda: ProcessId(PID, CREATE),
        clock=SystemClock(),
        interval_s=0.05,
        proc_root=proc_root,
        on_event=on_event,
        process_factory=lambda pid: FakeProc(deny=("num_fds",)),
        memories=memories,
        memories_interval_s=0.05,
    )
    samples: list[Sample] = []
    task = asyncio.create_task(sampler.run(samples.append))
    try:
        await async_wait_for(
            lambda: sum(s.memories == 42 for s in samples) >= 3, 10, what="samples"
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert all(s.loop_lag_s is not None and s.loop_lag_s >= 0 for s in samples)
    assert all(s.rss_bytes == 200 * 2**20 and s.num_fds is None for s in samples)
    assert [e.kind for e in events] == ["permission"]
    assert event_threads == {threading.get_ident()}  # emitted on the loop, not the worker
    assert sampler.ticks >= 3


def test_sample_of_a_process_that_exited_is_empty_not_an_error() -> None:
    """Sampling a process that has gone gives a sample with the PID and no readings."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    target = ProcessId(proc.pid, psutil.Process(proc.pid).create_time())
    proc.wait(10)
    sampler = Sampler(lambda: target, clock=SystemClock(), on_event=ignore)
    s = sampler.sample_once(0.0)
    assert s.pid == proc.pid and s.rss_bytes is None and s.heap_bytes is None


class StuckProc(FakeProc):
    """A process whose RSS read hangs until the test releases it (a /proc read stuck in D state)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def memory_info(self) -> Mem:
        self.release.wait(30)
        return super().memory_info()


async def test_a_stuck_tick_is_abandoned_and_later_ticks_skipped_until_it_ends(
    proc_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tick stuck past its timeout is abandoned; no second read starts until it finishes."""
    monkeypatch.setattr(sampler_module, "TICK_TIMEOUT_S", 0.1)
    stuck = StuckProc()
    sampler = Sampler(
        lambda: ProcessId(PID, CREATE),
        clock=SystemClock(),
        interval_s=0.02,
        proc_root=proc_root,
        on_event=ignore,
        process_factory=lambda pid: stuck,
    )
    samples: list[Sample] = []
    task = asyncio.create_task(sampler.run(samples.append))
    try:
        await async_wait_for(lambda: sampler.skipped_ticks >= 5, 10, what="skipped ticks")
        assert samples == [] and sampler.ticks == 0
        stuck.release.set()
        await async_wait_for(lambda: len(samples) >= 2, 10, what="samples after release")
    finally:
        stuck.release.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert all(s.rss_bytes == 200 * 2**20 for s in samples)


async def test_run_measures_the_data_dir_in_the_background(tmp_path: Path) -> None:
    """Under run(), the data dir's size arrives in samples from a walk done off the tick."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "seg").write_bytes(b"x" * 100_000)
    sampler = Sampler(
        lambda: None, clock=SystemClock(), interval_s=0.02, on_event=ignore, data_dir=data
    )
    samples: list[Sample] = []
    task = asyncio.create_task(sampler.run(samples.append))
    try:
        await async_wait_for(
            lambda: any(s.data_dir_bytes for s in samples), 10, what="data dir size"
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    sizes = [s.data_dir_bytes for s in samples if s.data_dir_bytes is not None]
    assert sizes and min(sizes) >= 100_000


async def test_run_stops_when_cancelled_at_any_point_of_a_tick(
    proc_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling run() ends it wherever the tick is, even as the tick's read completes.

    The read is held on a gate the test opens, then run() is cancelled 0, 1, 2, ... loop
    steps later -- every point from "read in flight" to "parked until the next tick".
    Python 3.11's ``wait_for`` returned the read's result instead of the cancellation
    when both arrived in one loop pass, and the sampler ticked on forever (issue 19).
    """
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    reads: list[int] = []

    async def gated_to_thread(fn: Callable[..., T], /, *args: object) -> T:
        reads.append(1)
        await gate
        return fn(*args)

    async def memories() -> int | None:
        return 7

    monkeypatch.setattr(sampler_module.asyncio, "to_thread", gated_to_thread)
    kept_running: list[int] = []
    for steps in range(-1, 16):  # -1: cancelled while the read is still held
        gate = asyncio.get_running_loop().create_future()
        reads.clear()
        sampler = fake_sampler(
            proc_root, FakeProc(), [], memories=memories, memories_interval_s=1.0
        )
        task = asyncio.create_task(sampler.run(lambda s: None))
        for _ in range(100):  # loop steps, not time: the fake clock never moves
            if reads:
                break
            await asyncio.sleep(0)
        assert reads, "the first tick never started its read"
        if steps >= 0:
            gate.set_result(None)
            for _ in range(steps):
                await asyncio.sleep(0)
        if not await stops_when_cancelled(task):
            kept_running.append(steps)
    assert kept_running == [], f"run() went on after a cancel {kept_running} steps after the read"
