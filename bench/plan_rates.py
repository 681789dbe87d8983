"""soakd's own cost at the plan's rates (issue 8 item 5; issue 4's store growth, real run).

Starts the reference target with ``--capacity 20000`` (so it is not the bottleneck),
then the real ``soakd run config/soak_test.yaml --duration D --target-url URL`` as a
child process, and samples soakd's process from outside with psutil every
``--sample-every`` seconds: CPU seconds, RSS, the load average. Prints a row per
sample, then soakd's CPU share of one core (whole run, and steady state after
``--warmup``), RSS first/last/max and its growth after warm-up, the run store's size
and its growth extrapolated to a day and to 7 days, and the run's report verdict.

Usage:
  .venv/bin/python bench/plan_rates.py [--duration 2m] [--sample-every 10] [--warmup 30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, ProcWatch, load_avg, machine_header, mib, stop_process
from soakd.reference.harness import start_reference


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``2m``, ``1h`` as seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def store_bytes(state_dir: Path) -> int:
    """Bytes of the SQLite run store and its WAL/SHM files only."""
    return sum(p.stat().st_size for p in state_dir.glob("*.sqlite*") if p.is_file())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", default="2m", help="soakd run --duration (e.g. 10m)")
    parser.add_argument("--sample-every", type=float, default=10.0)
    parser.add_argument(
        "--warmup", type=float, default=30.0, help="seconds left out of steady state"
    )
    parser.add_argument("--spec", default=str(REPO / "config" / "soak_test.yaml"))
    args = parser.parse_args(argv)
    duration_s = parse_duration(args.duration)
    print(machine_header("plan_rates"), flush=True)
    ref = start_reference("--capacity", "20000")
    state = Path(tempfile.mkdtemp(prefix="b8-plan-", dir="/var/tmp"))
    soakd_bin = str(Path(sys.executable).with_name("soakd"))
    cmd = [
        soakd_bin, "run", args.spec, "--duration", args.duration, "--target-url", ref.url,
        "--state-dir", str(state / "run"), "--metrics-listen", "127.0.0.1:0",
    ]  # fmt: skip
    log_path = state / "soakd.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
            )
            watch = ProcWatch(proc.pid)
            ref_watch = ProcWatch(ref.pid)
            print(f"# soakd pid {proc.pid}, reference {ref.url} pid {ref.pid}, state {state}")
            print(
                "|   t s | soakd cpu s | cpu% (interval) | RSS MiB | ref cpu% | store MiB | load1 |"
            )
            print(
                "|------:|------------:|----------------:|--------:|---------:|----------:|------:|"
            )
            deadline = time.monotonic() + duration_s + 120  # bounded: run + start + report
            prev = watch.sample()
            prev_ref = ref_watch.sample()
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(args.sample_every)
                if proc.poll() is not None:
                    break
                try:
                    s = watch.sample()
                except Exception:
                    break
                r = ref_watch.sample()
                dt = max(1e-9, s.t - prev.t)
                print(
                    f"| {s.t:>5.0f} | {s.cpu_s:>11.2f} "
                    f"| {100 * (s.cpu_s - prev.cpu_s) / dt:>15.2f} "
                    f"| {mib(s.rss_bytes):>7} | {100 * (r.cpu_s - prev_ref.cpu_s) / dt:>8.1f} "
                    f"| {mib(store_bytes(state / 'run')):>9} | {s.load1:>5.2f} |",
                    flush=True,
                )
                prev, prev_ref = s, r
            if proc.poll() is None:
                print("# soakd did not finish in time: stopping it")
                stop_process(proc, timeout_s=30)
            rc = proc.wait(timeout=60)
    finally:
        if proc is not None:
            stop_process(proc, timeout_s=30)
        ref.stop()
    # The sample taken at Popen time sees an interpreter still loading: leave it out.
    samples = [s for s in watch.samples if s.t >= 1.0] or watch.samples
    first, last = samples[0], samples[-1]
    steady = [s for s in samples if s.t >= args.warmup] or samples
    st0, st1 = steady[0], samples[-1]
    whole_share = 100 * (last.cpu_s - first.cpu_s) / max(1e-9, last.t - first.t)
    steady_share = 100 * (st1.cpu_s - st0.cpu_s) / max(1e-9, st1.t - st0.t)
    rss_max = max(s.rss_bytes for s in samples)
    store = store_bytes(state / "run")
    run_hours = duration_s / 3600
    print(f"# soakd exit code {rc}; loadavg at end {load_avg()}")
    print(
        f"# soakd CPU: {whole_share:.2f} % of one core over the run, "
        f"{steady_share:.2f} % in steady state (t >= {args.warmup:g} s)"
    )
    print(
        f"# soakd RSS: first {mib(first.rss_bytes)} MiB, after warm-up {mib(st0.rss_bytes)} MiB, "
        f"last {mib(last.rss_bytes)} MiB, max {mib(rss_max)} MiB "
        f"(growth after warm-up {mib(last.rss_bytes - st0.rss_bytes)} MiB)"
    )
    mean_load = sum(s.load1 for s in samples) / len(samples)
    print(f"# mean load1 during the run {mean_load:.2f}")
    if run_hours > 0:
        per_day = store / run_hours * 24
        print(
            f"# run store {mib(store)} MiB after {duration_s:g} s -> {mib(per_day)} MiB/day, "
            f"{mib(per_day * 7)} MiB per 7 days (linear; includes start-up rows)"
        )
    report = state / "run" / "report.json"
    if report.exists():
        doc = json.loads(report.read_text())
        print(f"# report verdict: {doc.get('verdict')}; state dir kept at {state}")
        for name, op in doc.get("operations", {}).items():
            lat = op.get("latency_ms", {})
            print(
                f"#   {name}: target {op.get('target_rate')}/s achieved "
                f"{op.get('achieved_rate', 0):.3f}/s ok {op.get('ok')} dropped "
                f"{op.get('dropped')} late {op.get('late')} p99 {lat.get('p99')} ms"
            )
    else:
        print(f"# no report.json; soakd log: {log_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
