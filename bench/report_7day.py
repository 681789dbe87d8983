"""Benchmark: all three reports of a synthetic 7-day run (1 s samples).

Generates a state dir through the real RunStore (604,800 samples, 181,440
interval records with real HDR encodings, ~100k consolidation runs, events,
alerts), then runs ``write_reports`` in a fresh child process and prints its
wall time and peak RSS (``ru_maxrss`` of the child, so generation does not
count). Target (issue 7): under 30 s and 500 MB.

    .venv/bin/python bench/report_7day.py [--dir DIR] [--days 7] [--keep]

With ``--dir`` an existing synthetic state dir is reused (generation takes a
minute or two).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from soakd.report.synthetic import Knobs, make_run

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="state dir to create or reuse")
    ap.add_argument("--days", type=float, default=7.0)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
