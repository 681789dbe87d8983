"""``python -m soakd.report STATE_DIR``: the child that :mod:`soakd.report.subproc` starts.

Opens the run store read-only, loads the spec the run stored, writes
``<basename>.{json,md,html}`` and prints ``{"verdict": ..., "paths": [...]}``.
Users want ``soakd report`` (the CLI); this entry point exists so the daemon
can write checkpoint reports outside its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from soakd.report import stored_spec
from soakd.report.data import ReportExtras
from soakd.report.writer import write_reports
from soakd.store import RunStore


def _integrity(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("expected CHECKED,LOST,CORRUPTED")
    return parts[0], parts[1], parts[2]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m soakd.report", description=__doc__)
    ap.add_argument("state_dir", type=Path)
    ap.add_argument("--out", type=Path, help="default: the state dir")
    ap.add_argument("--basename", default="report")
    ap.add_argument("--now", type=float, help="wall seconds (default: now)")
    ap.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority")
    ap.add_argument("--integrity", type=_integrity, default=(0, 0, 0))
    args = ap.parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    store = RunStore.open(args.state_dir, readonly=True)
    try:
        info = store.run_info()
        spec = stored_spec(info, f"{args.state_dir} (stored spec)")
        checked, lost, corrupted = args.integrity
        result = write_reports(
            store,
            spec,
            args.out or args.state_dir,
            now=args.now if args.now is not None else time.time(),
            extra=ReportExtras(checked, lost, corrupted),
            basename=args.basename,
        )
    finally:
        store.close()
    json.dump({"verdict": result.verdict, "paths": [str(p) for p in result.paths]}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
