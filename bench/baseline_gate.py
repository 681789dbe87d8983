"""The regression gate's hit rate: same target N times (must be clean), +20 % N times (must fail).

Takes one baseline of the reference target (OLD), then N more of the same target and N of
the target with ``--latency-scale 1.2`` (every operation's own work 20 % longer), each with
latency at OLD's rates (``--rates-from``), and runs ``soakd compare OLD NEW`` on each.
Every target does a few ms of CPU per operation (``--work-ms``; ``--target-args``): its
latency is then mostly its own work, as the real Engram's is, so a build 20 % slower is a 20 % step
end to end. Prints one line per try and the tally; figures go to docs/baseline.md.

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
from common import machine_header

HERE = Path(__file__).resolve().parent
#: Latency made mostly of the target's own work, as the real Engram's is.
TARGET_ARGS = "--work-ms recall=5,spread=5"
SLOWER = ["--reference-arg=--latency-scale", "--reference-arg=1.2"]


def soakd(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "soakd", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)


def take(spec: Path, out: Path, target_args: str, *extra: str) -> Path:
    ref_args = [f"--reference-arg={a}" for a in shlex.split(target_args)]
    done = soakd("baseline", str(spec), "--out", str(out), *ref_args, *extra)
    if done.returncode != 0:
        raise SystemExit(f"baseline failed ({done.returncode}): {done.stderr[-2000:]}")
    return out / "baseline.json"


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
    print(f"target: reference {args.target_args}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        old = take(args.spec, root / "old", args.target_args)
        tally = {"same": 0, "slower": 0}
        for i in range(args.tries):
            for kind, extra in (("same", []), ("slower", SLOWER)):
                t0 = time.monotonic()
                rates = ("--rates-from", str(old))
                new = take(args.spec, root / f"{kind}{i}", args.target_args, *rates, *extra)
                code, why = verdict(old, new)
                expected = 0 if kind == "same" else 1
                tally[kind] += code == expected
                took = time.monotonic() - t0
                print(f"try {i + 1} {kind:6s}: compare exit {code} ({took:.0f} s) {why[:160]}")
                sys.stdout.flush()
        print(f"same target clean: {tally['same']}/{args.tries}")
        print(f"+20 % caught:      {tally['slower']}/{args.tries}")
        print(machine_header("baseline_gate (end)"))


if __name__ == "__main__":
    main()
