"""Coordinated omission: what each tool's p99 says when the target stalls 1 s every 10 s.

Issue 8 item 3. Starts the reference target with ``--stall-every 10s --stall-for 1s``
(its whole event loop blocks: every request sent meanwhile waits until the stall ends),
finds the stall phase with a probe (GET /health/alive every 20 ms until one answer takes
over half the stall; that answer's arrival is a stall's end), then runs, one after the
other, at the same offered rate against GET /health/alive:

- soakd's hot path (bench/common.py soakd-fixed): p99 of response time, timed from each
  request's *intended* instant, and of service time (from when it was sent);
- Locust (FastHttpUser, constant_throughput, ``users = ceil(rate / --per-user)``): the
  p99 Locust reports;
- wrk (Debian, closed loop, ``-c --wrk-conns``): the p99 of ``--latency``. wrk has no
  fixed-rate mode (that is wrk2), so it runs flat out; wrk 4 corrects its latency
  histogram for coordinated omission after the run (``stats_correct``: it back-fills
  the samples a connection missed while waiting, at the mean interval per connection).

The true p99 comes from the schedule: arrival k is due at t_k = start + k / rate; one
due at t inside a stall [s, s + stall) cannot be answered before s + stall, so its true
response time is (s + stall - t) + the unstalled median service time. Analytically
(stall fraction f = 1/10) the true p99 is about stall x (1 - 0.01 / f) = 900 ms.

Usage:
  .venv/bin/python bench/co_stall.py [--rate 100] [--duration 60] [--per-user 50]
      [--wrk-conns 10] [--every 10] [--stall 1]
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    load_avg,
    machine_header,
    percentile,
    run_child,
    soakd_fixed_cmd,
    stop_process,
)
from soakd.reference.harness import start_reference

NS = 1_000_000_000


def find_stall_end_ns(url: str, stall_s: float, every_s: float) -> int:
    """Monotonic ns at which a stall ended (probe until an answer takes > stall / 2)."""
    deadline = time.monotonic() + 3 * every_s
    while time.monotonic() < deadline:
        t0 = time.monotonic_ns()
        with urllib.request.urlopen(url, timeout=every_s) as resp:
            resp.read()
        t1 = time.monotonic_ns()
        if t1 - t0 > stall_s * NS / 2:
            return t1
        time.sleep(0.02)
    raise RuntimeError("no stall seen by the probe")


def true_latencies_ms(
    intended: list[int], stall_end_ns: int, every_s: float, stall_s: float, base_ms: float
) -> list[float]:
    """Per arrival: time until the stall it falls in ends (0 outside stalls) + base."""
    every, stall = int(every_s * NS), int(stall_s * NS)
    stall_start = stall_end_ns - stall
    out = []
    for t in intended:
        phase = (t - stall_start) % every
        wait = stall - phase if phase < stall else 0
        out.append(wait / 1e6 + base_ms)
    return sorted(out)


def wrk_p99_ms(url: str, conns: int, duration_s: float) -> tuple[float, float, str]:
    """Run wrk flat out; its reported p99 (ms), requests/s and the raw latency lines."""
    proc = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{int(duration_s)}s", "--latency", "--timeout", "5s", url],
        capture_output=True, text=True, timeout=duration_s + 60, check=False,
    )  # fmt: skip
    out = proc.stdout

    def ms(text: str) -> float:
        m = re.match(r"([\d.]+)(us|ms|s)", text)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    lines = "; ".join(ln.strip() for ln in out.splitlines() if re.match(r"^\s+\d+%", ln))
    return (ms(p99.group(1)) if p99 else float("nan"), float(rps.group(1)) if rps else 0.0, lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--duration", type=float, default=60.0, help="seconds per tool")
    p.add_argument("--per-user", type=float, default=50.0)
    p.add_argument("--wrk-conns", type=int, default=10)
    p.add_argument("--every", type=float, default=10.0)
    p.add_argument("--stall", type=float, default=1.0)
    p.add_argument("--tools", default="soakd,locust,wrk")
    a = p.parse_args(argv)
    tools = a.tools.split(",")
    print(machine_header("co_stall"), flush=True)
    ref = start_reference("--stall-every", f"{a.every}s", "--stall-for", f"{a.stall}s")
    url = f"{ref.url}/health/alive"
    rows: list[str] = []
    try:
        stall_end = find_stall_end_ns(url, a.stall, a.every)
        print(
            f"# reference {ref.url}; stall {a.stall:g} s every {a.every:g} s; "
            f"{a.duration:g} s per tool at {a.rate:g}/s",
            flush=True,
        )
        if "soakd" in tools:
            rec = Path(tempfile.mkstemp(prefix="b8-co-", suffix=".txt", dir="/var/tmp")[1])
            r = run_child(
                soakd_fixed_cmd(url, a.rate, a.duration, window=a.duration, warmup=1,
                                record=rec, timeout=5),
                a.duration + 120,
            )  # fmt: skip
            recs = [tuple(map(int, ln.split())) for ln in rec.read_text().splitlines()]
            rec.unlink()
            intended = [i for i, _d, _o in recs]
            # Unstalled service time: the median is far from any stall (10 % of arrivals).
            base = r.extra["service_p50_ms"]
            true = true_latencies_ms(intended, stall_end, a.every, a.stall, base)
            measured = sorted((d - i) / 1e6 for i, d, _o in recs)
            rows.append(
                f"| true (from soakd's schedule) | {percentile(true, 99):>9.1f} "
                f"| {percentile(true, 50):>7.2f} | {len(true):>8} | arrivals k/rate; "
                f"stalled wait + {base:.2f} ms |"
            )
            rows.append(
                f"| soakd response time (from intended) | {r.resp_p99_ms:>9.1f} "
                f"| {r.resp_p50_ms:>7.2f} | {r.ok:>8} | per-request check: "
                f"{percentile(measured, 99):.1f} ms; dropped {r.dropped}, late {r.late} |"
            )
            rows.append(
                f"| soakd service time (from sent) | {r.extra['service_p99_ms']:>9.1f} "
                f"| {r.extra['service_p50_ms']:>7.2f} | {r.ok:>8} | open model: requests "
                f"keep going out during a stall, so service time sees it too |"
            )
            print(rows[-3], rows[-2], rows[-1], sep="\n", flush=True)
        if "locust" in tools:
            users = max(1, math.ceil(a.rate / a.per_user))
            lo = run_child(
                [sys.executable, str(Path(__file__).with_name("locustfile.py")), "fixed",
                 "--url", url, "--rate", str(a.rate), "--users", str(users),
                 "--duration", str(a.duration), "--window", str(a.duration), "--warmup", "1"],
                a.duration + 120,
            )  # fmt: skip
            rows.append(
                f"| Locust ({users} users x {a.rate / users:g}/s) | {lo.resp_p99_ms:>9.1f} "
                f"| {lo.resp_p50_ms:>7.2f} | {lo.ok:>8} | achieved {lo.achieved_ratio:.3f} "
                f"of target, {lo.dropped} arrivals never sent |"
            )
            print(rows[-1], flush=True)
        if "wrk" in tools:
            p99, rps, lines = wrk_p99_ms(url, a.wrk_conns, a.duration)
            rows.append(
                f"| wrk (-c{a.wrk_conns}, flat out) | {p99:>9.1f} | - "
                f"| {int(rps * a.duration):>8} | {rps:.0f} req/s; {lines} |"
            )
            print(rows[-1], flush=True)
    finally:
        ref.stop()
        stop_process(ref.proc)
    print()
    print("| what | p99 ms | p50 ms | requests | note |")
    print("|---|---:|---:|---:|---|")
    for line in rows:
        print(line)
    print(f"# analytic true p99 ~ {a.stall * (1 - 0.01 * a.every / a.stall) * 1000:.0f} ms + base")
    print(f"# loadavg at end {load_avg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
