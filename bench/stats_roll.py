"""How long a stats roll stalls the event loop: on the loop (before) vs in a worker (after).

Run: ``.venv/bin/python bench/stats_roll.py [--rolls 8] [--rate 10000] [--interval-s 10]``
(~10 s on this box).

A :class:`~soakd.stats.StatsHub` with 4 operations (12 HDR histograms) is filled
with one stats interval's worth of results (``--interval-s`` at ``--rate`` per
second, lognormal latencies from ~50 us to seconds) before every roll. While the
roll runs, a ``call_soon`` ticker on the (uvloop) event loop keeps recording
results at ``--rate`` per second, as the load generator would, and notes the gap
between its ticks: the largest gap is the longest the loop could not run a
callback. Three ways of rolling are timed:

* ``on-loop``: ``hub.roll()`` then ``hub.totals(op)`` per op on the loop (what
  ``Daemon._roll`` did before; with an older soakd.stats, which has no
  ``roll_async``, only this mode runs, so the script times the old code too);
* ``worker``: ``await hub.roll_async()`` (the swap on the loop, encoding,
  merging and summaries in a worker thread), read ``hub.summaries``;
* ``worker-np``: the same with the worker's pauses between steps disabled, to
  show why they are there: a busy worker keeps the GIL until the loop has waited
  a whole switch interval (5 ms) for it.

Prints per mode: the largest gap per roll (median, p90 and max over the rolls),
the p99.9 gap, the largest gap of the ticker alone in the 50 ms before each roll
(median and max over the rolls: the box's own noise, as it is shared and a
thread that is descheduled stalls whatever the GIL does), how long a roll took
end to end, and checks that every recorded result was counted exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from itertools import cycle

import uvloop

import soakd.stats
from soakd.clock import SystemClock
from soakd.model import Op, OpResult, Outcome
from soakd.stats import StatsHub

OPS = (Op.STORE, Op.RECALL, Op.SPREAD, Op.READBACK)


def make_results(n: int, seed: int = 1) -> list[OpResult]:
    """``n`` results over the 4 ops with lognormal lag / service times (~0.2 ms .. s)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lag = int(rng.lognormvariate(11.0, 1.5))  # median ~60 us, tail to tens of ms
        service = int(rng.lognormvariate(14.5, 1.2))  # median ~2 ms, tail to ~1 s
        ok = rng.random() > 0.002
        out.append(
            OpResult(
                op=OPS[i % len(OPS)],
                space="s0",
                intended_ns=0,
                sent_ns=lag,
                done_ns=lag + service,
                outcome=Outcome.OK if ok else Outcome.TIMEOUT,
            )
        )
    return out


class Ticker:
    """A call_soon chain that records results at ``rate``/s and notes the gaps between ticks."""

    def __init__(self, hub: StatsHub, results: Sequence[OpResult], rate: float) -> None:
        self.hub = hub
        self._results = cycle(results)
        self.rate = rate
        self.gaps_ns: list[int] = []
        self.recorded = 0
        self._owed = 0.0
        self._last_end = 0
        self._running = False
        self._loop = asyncio.get_running_loop()

    def start(self) -> None:
        self._running = True
        self._last_end = time.perf_counter_ns()
        self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._running = False

    def _tick(self) -> None:
        start = time.perf_counter_ns()
        gap = start - self._last_end
        self.gaps_ns.append(gap)
        self._owed += gap * self.rate / 1e9
        n = int(self._owed)
        self._owed -= n
        on_result = self.hub.on_result
        for _ in range(n):
            on_result(next(self._results))
        self.recorded += n
        self._last_end = time.perf_counter_ns()
        if self._running:
            self._loop.call_soon(self._tick)


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_mode(
    mode: str, args: argparse.Namespace, results: list[OpResult]
) -> dict[str, float]:
    if mode != "worker-np":
        return await _run_mode(mode, args, results)
    pause = soakd.stats._worker_pause
    soakd.stats._worker_pause = soakd.stats._no_pause  # read by each roll's worker
    try:
        return await _run_mode(mode, args, results)
    finally:
        soakd.stats._worker_pause = pause


async def _run_mode(
    mode: str, args: argparse.Namespace, results: list[OpResult]
) -> dict[str, float]:
    hub = StatsHub(OPS, SystemClock())
    per_interval = int(args.rate * args.interval_s)
    fill = cycle(results)
    prefilled = 0
    max_gaps: list[float] = []
    p999_gaps: list[float] = []
    walls: list[float] = []
    idle_max: list[float] = []
    counted = 0
    recorded = 0

    async def roll_on_loop() -> int:
        records = hub.roll()
        summaries = {op: hub.totals(op) for op in OPS}
        assert len(summaries) == len(OPS)
        return sum(r.count for r in records)

    async def roll_in_worker() -> int:
        records = await hub.roll_async()
        assert len(hub.summaries) == len(OPS)
        return sum(r.count for r in records)

    roll: Callable[[], Awaitable[int]] = roll_on_loop if mode == "on-loop" else roll_in_worker
    for i in range(args.rolls + 1):  # the first roll warms up (and gives the totals a history)
        for _ in range(per_interval):
            hub.on_result(next(fill))
        prefilled += per_interval
        ticker = Ticker(hub, results, args.rate)
        ticker.start()
        await asyncio.sleep(0.05)  # the ticker alone: the idle gaps
        idle = len(ticker.gaps_ns)
        t0 = time.perf_counter_ns()
        counted += await roll()
        wall = time.perf_counter_ns() - t0
        await asyncio.sleep(0.01)  # an on-loop roll's stall shows as the gap before the next tick
        during = ticker.gaps_ns[idle:]
        ticker.stop()
        await asyncio.sleep(0)
        recorded += ticker.recorded
        if i == 0:
            continue
        idle_max.append(max(ticker.gaps_ns[1:idle]) / 1e6)
        max_gaps.append(max(during) / 1e6)
        p999_gaps.append(quantile(during, 0.999) / 1e6)
        walls.append(wall / 1e6)
    counted += sum(r.count for r in hub.roll())
    expected = prefilled + recorded
    if (
        counted != expected
        or hub.totals(Op.STORE).count
        + hub.totals(Op.RECALL).count
        + hub.totals(Op.SPREAD).count
        + hub.totals(Op.READBACK).count
        != expected
    ):
        print(f"  COUNT MISMATCH: {counted} counted, {expected} recorded", file=sys.stderr)
    return {
        "idle_median_max": statistics.median(idle_max),
        "idle_max": max(idle_max),
        "max_gap": max(max_gaps),
        "median_max_gap": statistics.median(max_gaps),
        "p90_max_gap": quantile(max_gaps, 0.9),
        "p999_gap": statistics.median(p999_gaps),
        "wall": statistics.median(walls),
    }


async def main(args: argparse.Namespace) -> None:
    results = make_results(50_000)
    print(
        f"# stats_roll | python {sys.version.split()[0]} | switchinterval "
        f"{sys.getswitchinterval() * 1e3:.0f} ms | {args.rolls} rolls of "
        f"{args.interval_s:g} s at {args.rate:g}/s over {len(OPS)} ops (12 histograms)"
    )
    print(
        "mode       largest loop gap per roll, ms: median    p90    max | "
        "p99.9 gap | idle: median    max | roll wall (median)"
    )
    modes = ["on-loop", "worker-np", "worker"] if hasattr(StatsHub, "roll_async") else ["on-loop"]
    for mode in modes:
        f = await run_mode(mode, args, results)
        print(
            f"{mode:<10} {'':>32}{f['median_max_gap']:6.2f} {f['p90_max_gap']:6.2f} "
            f"{f['max_gap']:6.2f} | {f['p999_gap']:6.2f} ms |     {f['idle_median_max']:6.2f} "
            f"{f['idle_max']:6.2f} | {f['wall']:6.1f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rolls", type=int, default=8)
    parser.add_argument("--rate", type=float, default=10_000.0)
    parser.add_argument("--interval-s", type=float, default=10.0)
    uvloop.run(main(parser.parse_args()))
