"""The regression gate's hit rate: same target N times (must be clean), +20 % N times (must fail).

Baselines are taken in one sitting, interleaved, as a CI job that measures both builds
would take them: OLD₀, NEW₀, OLD₁, NEW₁, …, OLDₙ, where every OLD is the reference target and
every NEW the same target with ``--latency-scale 1.2`` (every operation's own work 20 %
longer). All but the first take latency at OLD₀'s rates (``--rates-from``). Try *i*:

- *same*: ``soakd compare OLDᵢ OLDᵢ₊₁`` must exit 0 (two baselines of the same target);
- *slower*: ``soakd compare OLDᵢ NEWᵢ`` must exit 1 (the build measured right after).

Why interleaved and not every NEW against one committed OLD: on this VM the same target
drifts by several per cent over twenty minutes, as much as a 20 % slower handler moves the
end-to-end P99 (docs/baseline.md, "The gate's hit rate"). Every target does 15 ms of CPU per
operation (``--work-ms``; ``--target-args``): its latency is then almost all its own work, so
a build 20 % slower is a step of nearly 20 % end to end. Prints one line per baseline and per
try, and the tally; figures go to docs/baseline.md (~11 baselines of ~220 s: ~40 minutes).

Usage: ``.venv/bin/python bench/baseline_gate.py [--tries 5] [--target-args FLAGS]
[--keep DIR]``.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine_header

sys.path.insert(0, str(REPO))
from soakd.baseline.model import from_json

HERE = Path(__file__).resolve().parent
#: Latency made almost all of the target's own work, as the real Engram's mostly is. With
#: 5 ms the end-to-end step of a 20 % slower build was only ~11 % (docs/baseline.md).
TARGET_ARGS = "--work-ms recall=15,spread=15"
SLOWER = ["--reference-arg=--latency-scale", "--reference-arg=1.2"]


def soakd(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "soakd", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)


def take(spec: Path, out: Path, target_args: str, *extra: str) -> Path:
    ref_args = [f"--reference-arg={a}" for a in shlex.split(target_args)]
    t0 = time.monotonic()
    done = soakd("baseline", str(spec), "--out", str(out), *ref_args, *extra)
    if done.returncode != 0:
        raise SystemExit(f"baseline failed ({done.returncode}): {done.stderr[-2000:]}")
    path = out / "baseline.json"
    print(f"  {out.name:9s} {summary(path)} ({time.monotonic() - t0:.0f} s)")
    sys.stdout.flush()
    return path


def summary(path: Path) -> str:
    """Each operation's P99 with its bounds and its throughput bracket, one line."""
    cells = []
    for workload in from_json(path.read_text()).workloads:
        for op in workload.ops:
            lat, thr = op.latency, op.throughput
            p99 = (
                "-"
                if lat is None
                else f"{lat.p99_ms:.3g} [{lat.p99_lo_ms:.3g}, {lat.p99_hi_ms:.3g}]"
            )
            hi = "inf" if thr is None or thr.hi_per_s is None else f"{thr.hi_per_s:.4g}"
            rate = "-" if thr is None else f"[{thr.lo_per_s:.4g}, {hi})/s"
            cells.append(f"{op.op} P99 {p99} ms {rate}")
    return "; ".join(cells)


def verdict(old: Path, new: Path) -> tuple[int, str]:
    done = soakd("compare", str(old), str(new))
    worst = [line for line in done.stdout.splitlines() if "REGRESSION" in line]
    return done.returncode, (worst[0] if worst else "clean")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=5)
    parser.add_argument("--spec", type=Path, default=HERE / "baseline_gate.yaml")
    parser.add_argument(
        "--target-args", default=TARGET_ARGS, help="the reference target's flags, every baseline"
    )
    parser.add_argument("--keep", type=Path, help="keep every baseline.json under this folder")
    args = parser.parse_args()
    print(machine_header("baseline_gate"))
    print(f"target: reference {args.target_args}; order OLD0 NEW0 OLD1 NEW1 ... OLD{args.tries}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        olds = [take(args.spec, root / "old0", args.target_args)]
        rates = ("--rates-from", str(olds[0]))
        tally = {"same": 0, "slower": 0}
        for i in range(args.tries):
            new = take(args.spec, root / f"new{i}", args.target_args, *rates, *SLOWER)
            olds.append(take(args.spec, root / f"old{i + 1}", args.target_args, *rates))
            for kind, pair, expected in (
                ("same", (olds[i], olds[i + 1]), 0),
                ("slower", (olds[i], new), 1),
            ):
                code, why = verdict(*pair)
                tally[kind] += code == expected
                names = f"{pair[0].parent.name} vs {pair[1].parent.name}"
                print(f"try {i + 1} {kind:6s} ({names}): compare exit {code} {why[:170]}")
            sys.stdout.flush()
        print(f"same target clean: {tally['same']}/{args.tries}")
        print(f"+20 % caught:      {tally['slower']}/{args.tries}")
        print(machine_header("baseline_gate (end)"))


if __name__ == "__main__":
    main()
