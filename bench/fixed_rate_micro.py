"""Micro-benchmarks of soakd's own per-request costs (no HTTP), for docs/perf-scheduler.md.

bench/fixed_rate.py measures the whole client (scheduler + aiohttp + stats) and
so depends on aiohttp and on how busy the machine is; these figures isolate what
soakd itself adds per arrival and per result, and how long the per-interval work
blocks the event loop.

Usage: .venv/bin/python bench/fixed_rate_micro.py
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import uvloop
from hdrh.histogram import HdrHistogram

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from soakd.clock import FakeClock, SystemClock
from soakd.model import Op, OpResult, Outcome
from soakd.scheduler import NS_PER_S, Sender
from soakd.stats import Histogram, StatsHub

T = TypeVar("T")


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _noop(k: int, intended_ns: int) -> None:
    return None


async def scheduler_burst_us(n: int = 200_000) -> float:
    """Wall us per arrival when every arrival is already due (task creation included)."""
    far = 10**15
    clock = FakeClock(start_ns=far)
    sched = Sender(
        "micro",
        10_000,
        clock=clock,
        fire=_noop,
        max_in_flight=n,
        on_dropped=lambda k, t: None,
        late_threshold_ns=far,
    )
    t0 = time.perf_counter()
    await sched.run(far - n * NS_PER_S // 10_000, until_ns=far)
    for _ in range(1000):  # bounded: let the last tasks finish
        if not sched.in_flight:
            break
        await asyncio.sleep(0)
    return (time.perf_counter() - t0) / sched.issued * 1e6


async def scheduler_real_cpu(rate: int, seconds: float = 3.0) -> tuple[float, float]:
    """(CPU %, CPU us per arrival) of the real-clock loop at ``rate`` with a no-op fire."""
    clock = SystemClock()
    sched = Sender(
        "micro", rate, clock=clock, fire=_noop, max_in_flight=10_000, on_dropped=lambda k, t: None
    )
    cpu0 = _cpu_s()
    start = clock.monotonic_ns()
    await sched.run(start, until_ns=start + int(seconds * NS_PER_S))
    cpu = _cpu_s() - cpu0
    return 100 * cpu / seconds, cpu / sched.issued * 1e6


def per_call_us(fn: Callable[[T], object], args: Sequence[T]) -> float:
    t0 = time.perf_counter()
    for a in args:
        fn(a)
    return (time.perf_counter() - t0) / len(args) * 1e6


def stats_figures() -> None:
    rng = random.Random(1)
    values = [int(rng.lognormvariate(15, 2)) for _ in range(200_000)]
    ours = Histogram()
    theirs = HdrHistogram(1, 3_600_000_000, 3)
    print(f"Histogram.record_ns            {per_call_us(ours.record_ns, values):6.2f} us")
    us_values = [v // 1000 for v in values]
    print(f"hdrh record_value (reference)  {per_call_us(theirs.record_value, us_values):6.2f} us")
    clock = FakeClock()
    hub = StatsHub([Op.STORE, Op.RECALL, Op.SPREAD, Op.READBACK], clock)
    results = [OpResult(Op.RECALL, "s", 0, v // 10, v, Outcome.OK, 200) for v in values[:100_000]]
    print(f"StatsHub.on_result             {per_call_us(hub.on_result, results):6.2f} us")
    t0 = time.perf_counter()
    for v in values[:100_000]:
        OpResult(Op.RECALL, "s", 0, v // 10, v, Outcome.OK, 200)
    print(f"OpResult(...) construction     {(time.perf_counter() - t0) * 10:6.2f} us")
    for op in hub.ops:
        for r in results[:50_000]:
            hub.on_result(OpResult(op, "s", r.intended_ns, r.sent_ns, r.done_ns, r.outcome, 200))
    clock.advance(10 * NS_PER_S)
    t0 = time.perf_counter()
    hub.totals(Op.STORE)
    print(f"StatsHub.totals(op)            {(time.perf_counter() - t0) * 1e3:6.2f} ms")
    t0 = time.perf_counter()
    records = hub.roll()
    print(f"StatsHub.roll() 4 ops          {(time.perf_counter() - t0) * 1e3:6.2f} ms ", end="")
    print(f"({sum(len(r.response_hist) for r in records) // 4} B per response histogram)")


async def scheduler_figures() -> None:
    print(f"Sender, all due (burst)        {await scheduler_burst_us():6.2f} us/arrival")
    for rate in (1000, 10_000, 20_000):
        pct, us = await scheduler_real_cpu(rate)
        print(f"Sender real clock    {rate:>6}/s  {pct:5.1f} % CPU, {us:5.2f} us/arrival")


def main() -> int:
    print(f"# loadavg {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    uvloop.run(scheduler_figures())
    stats_figures()
    return 0


if __name__ == "__main__":
    sys.exit(main())
