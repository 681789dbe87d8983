"""What a sampler tick costs on a real ~1.5 GiB process, and whether it stays off the loop.

Run: ``.venv/bin/python bench/sample_tick.py [--gib 1.5] [--ticks 200]``

Prints, for ``Sampler.sample_once()``: mean / p50 / p99 / max milliseconds
without USS (every ordinary tick) and with USS (the once-a-minute tick), then
the cost of a data-dir walk of 10,000 files, then how late a 5 ms asyncio
ticker wakes: alone, and while ``Sampler.run()`` ticks every 50 ms (20x the
default rate) without and with USS on every tick. The blocking reads run in a
thread, so the loop should barely notice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from soakd.clock import SystemClock
from soakd.model import Event, Sample
from soakd.process import ProcessId
from soakd.sampler import Sampler, dir_size_bytes, read_smaps_anonymous, read_status_rss_anon

HOG = r"""
import sys
n = int(float(sys.argv[1]) * 2**30)
b = bytearray(n)
b[::4096] = b"\x01" * len(range(0, n, 4096))  # touch every page: resident, anonymous
print("ready", flush=True)
sys.stdin.read()
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(name: str, ms: list[float]) -> None:
    print(
        f"{name:<28} n={len(ms):<4} mean={statistics.fmean(ms):7.3f} ms  "
        f"p50={pct(ms, 0.5):7.3f}  p99={pct(ms, 0.99):7.3f}  max={max(ms):7.3f}"
    )


def time_ticks(sampler: Sampler, ticks: int) -> list[float]:
    out = []
    for _ in range(ticks):
        t0 = time.perf_counter_ns()
        sampler.sample_once(time.time())
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def ignore(event: Event) -> None:
    print("event:", event.kind, event.message)


def bench_ticks(target: ProcessId, ticks: int) -> None:
    clock = SystemClock()
    plain = Sampler(lambda: target, clock=clock, uss_interval_s=1e9, on_event=ignore)
    first = plain.sample_once(time.time())  # the first tick reads USS; not counted
    print(f"target RSS {first.rss_bytes / 2**30:.2f} GiB, heap {first.heap_bytes / 2**30:.2f} GiB")  # type: ignore[operator]
    report("tick without USS", time_ticks(plain, ticks))
    with_uss = Sampler(lambda: target, clock=clock, uss_interval_s=0.0, on_event=ignore)
    report("tick with USS", time_ticks(with_uss, max(20, ticks // 5)))
    proc_dir = Path("/proc") / str(target.pid)
    readers: list[tuple[str, Callable[[], int | None]]] = [
        ("  heap: status RssAnon", lambda: read_status_rss_anon(proc_dir / "status")),
        ("  heap: smaps_rollup Anon", lambda: read_smaps_anonymous(proc_dir / "smaps_rollup")),
    ]
    for name, fn in readers:
        ms = []
        for _ in range(20):
            t0 = time.perf_counter_ns()
            fn()
            ms.append((time.perf_counter_ns() - t0) / 1e6)
        report(name, ms)


def bench_dir_walk(files: int = 10_000) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for i in range(files):
            sub = root / f"space_{i % 10:02d}" / "wal"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"seg{i}").write_bytes(b"x" * 100)
        ms = []
        for _ in range(10):
            t0 = time.perf_counter_ns()
            dir_size_bytes(root)
            ms.append((time.perf_counter_ns() - t0) / 1e6)
        report(f"data-dir walk, {files} files", ms)


async def ticker_lateness(seconds: float) -> list[float]:
    """How late a 5 ms asyncio.sleep ticker wakes, in ms, over ``seconds``."""
    late_ms = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        want = time.monotonic_ns() + 5_000_000
        await asyncio.sleep(0.005)
        late_ms.append(max(0, time.monotonic_ns() - want) / 1e6)
    return late_ms


async def loop_with_sampler(target: ProcessId, seconds: float, uss_interval_s: float) -> None:
    sampler = Sampler(
        lambda: target,
        clock=SystemClock(),
        interval_s=0.05,
        uss_interval_s=uss_interval_s,
        on_event=ignore,
    )
    samples: list[Sample] = []
    run = asyncio.create_task(sampler.run(samples.append))
    late_ms = await ticker_lateness(seconds)
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run
    what = "USS every tick" if uss_interval_s == 0 else "no USS"
    report(f"loop lateness, {what}", late_ms)
    lags = [s.loop_lag_s * 1e3 for s in samples if s.loop_lag_s is not None]
    report(f"  its loop_lag ({len(samples)} ticks)", lags)


async def bench_loop(target: ProcessId, seconds: float) -> None:
    """Lateness of a 5 ms ticker alone, then while run() samples every 50 ms (20x default)."""
    report("loop lateness, no sampler", await ticker_lateness(seconds))
    await loop_with_sampler(target, seconds, 1e9)
    await loop_with_sampler(target, seconds, 0.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.5)
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--loop-seconds", type=float, default=5.0)
    args = ap.parse_args()
    hog = subprocess.Popen(
        [sys.executable, "-c", HOG, str(args.gib)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert hog.stdout is not None
        if hog.stdout.readline().strip() != "ready":
            raise SystemExit("memory hog did not start")
        target = ProcessId(hog.pid, psutil.Process(hog.pid).create_time())
        py = sys.version.split()[0]
        print(f"python {py}, psutil {psutil.__version__}, {psutil.cpu_count()} cpus")
        bench_ticks(target, args.ticks)
        bench_dir_walk()
        asyncio.run(bench_loop(target, args.loop_seconds))
    finally:
        hog.kill()
        hog.wait(10)


if __name__ == "__main__":
    main()
