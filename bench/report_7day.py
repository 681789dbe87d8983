"""Benchmark: all three reports of a synthetic 7-day run (1 s samples).

Generates a state dir through the real RunStore (604,800 samples, 181,440
interval records with real HDR encodings, ~100k consolidation runs, events,
alerts), then runs ``write_reports`` in a fresh child process and prints its
wall time and peak RSS (``ru_maxrss`` of the child, so generation does not
count). Target (issue 7): under 30 s and 500 MB.

    .venv/bin/python bench/report_7day.py [--dir DIR] [--days 7] [--lateness]

With ``--dir`` an existing synthetic state dir is reused (generation takes
15-30 s). ``--lateness`` also measures how late a 10 ms asyncio ticker fires
while the report runs in a thread vs in a child process (what a checkpoint
during a live run does to the load's pacing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

from soakd.report import write_reports, write_reports_subprocess
from soakd.report.synthetic import Knobs, make_run, spec_for
from soakd.store import RunStore

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from soakd.report import write_reports
from soakd.report.synthetic import Knobs, spec_for
from soakd.store import RunStore
state, out, days = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
k = Knobs(duration_s=days * 86400.0, alerts=True)
t0 = time.perf_counter()
c0 = time.process_time()
store = RunStore.open(state, readonly=True)
r = write_reports(store, spec_for(k), out, now=k.started_at + k.duration_s + 60.0)
elapsed = time.perf_counter() - t0
print(json.dumps({"seconds": elapsed, "cpu_s": time.process_time() - c0, "verdict": r.verdict,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "sizes": {p.name: p.stat().st_size for p in r.paths}}))
"""


async def _ticker(stop: asyncio.Event, late: list[float]) -> None:
    period = 0.01
    nxt = time.monotonic()
    while not stop.is_set():
        nxt += period
        await asyncio.sleep(max(0.0, nxt - time.monotonic()))
        late.append(time.monotonic() - nxt)


async def _late_while(label: str, work: Awaitable[object]) -> None:
    stop = asyncio.Event()
    late: list[float] = []
    task = asyncio.create_task(_ticker(stop, late))
    await work
    stop.set()
    await task
    late.sort()
    n = len(late)
    print(
        f"  {label:<28} p50 {late[n // 2] * 1e3:6.2f} ms  p99 {late[int(n * 0.99)] * 1e3:6.2f} ms"
        f"  max {late[-1] * 1e3:6.1f} ms  ({n} ticks)"
    )


async def _lateness(state: Path, out: Path, days: float) -> None:
    k = Knobs(duration_s=days * 86400.0, alerts=True)
    now = k.started_at + k.duration_s + 60.0
    store = RunStore.open(state, readonly=True)
    print("asyncio 10 ms ticker lateness:")
    await _late_while("nothing else running", asyncio.sleep(10.0))
    await _late_while(
        "report in a thread",
        asyncio.to_thread(write_reports, store, spec_for(k), out / "thread", now=now),
    )
    await _late_while(
        "report in a child process",
        write_reports_subprocess(state, out / "child", now=now, timeout_s=300.0),
    )
    store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="state dir to create or reuse")
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--lateness", action="store_true", help="also measure loop lateness")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="soakd-bench-"))
    state = args.dir or base / "state"
    k = Knobs(duration_s=args.days * 86400.0, alerts=True)
    if not (state / "run.sqlite").exists():
        t0 = time.perf_counter()
        store, _ = make_run(state, k)
        store.close()
        print(f"generated {args.days:g}-day state dir in {time.perf_counter() - t0:.1f} s: {state}")
    db = state / "run.sqlite"
    print(f"run store size: {db.stat().st_size / 1e6:.1f} MB")
    out = base / "out"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(state), str(out), str(args.days)],
        check=True,
        capture_output=True,
        text=True,
    )
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        f"write_reports: {res['seconds']:.1f} s wall, {res['cpu_s']:.1f} s CPU, "
        f"peak RSS {res['maxrss_kb'] / 1024:.0f} MiB (targets: < 30 s, < 500 MB)"
    )
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"(child ru_maxrss via RUSAGE_CHILDREN: {children / 1024:.0f} MiB)")
    print(f"verdict {res['verdict']}; files: {res['sizes']}")
    print(f"reports in {out}")
    if args.lateness:
        asyncio.run(_lateness(state, base / "lateness", args.days))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
