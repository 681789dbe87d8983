"""Fixed-rate accuracy and cost, soakd against Locust, same target, same offered rate.

Issue 8 items 1 and 2. Starts nginx (Debian) serving a tiny static JSON on 127.0.0.1
(the reference server would be the bottleneck at these rates), then for each rate runs,
one after the other, each in its own process:

- soakd: Sender -> EngramClient.exchange -> StatsHub.on_result + Exporter.on_result
  under uvloop (``bench/common.py soakd-fixed``);
- Locust 2.x as a library: FastHttpUser with ``constant_throughput(rate / users)``
  (``bench/locustfile.py fixed``). Locust is closed-loop per user: one user cannot
  exceed 1 / response time, and a user blocked on a slow answer sends nothing
  meanwhile. ``users = ceil(rate / --per-user)`` (default 50/s per user: a 20 ms
  budget per request, ~20x nginx's answer time here, so the users are never the limit
  for want of concurrency).

Prints per tool and rate: achieved/target over the run and per window (min..max),
schedule lag p50/p99/max, response p99, dropped, late, CPU seconds per 1,000
requests, RSS, and the goals (soakd >= 10,000/s at <= 0.5 % error with lag p99 <= 5 ms;
soakd's CPU per request <= 2/3 of Locust's).

Usage:
  .venv/bin/python bench/compare_locust.py [--rates 100,1000,5000,10000] [--duration 20]
      [--window 10] [--per-user 50] [--tools soakd,locust]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ToolResult,
    load_avg,
    machine_header,
    mib,
    nginx,
    run_child,
    soakd_fixed_cmd,
)

HEADER = (
    "| tool   |   rate | users | achieved/target | per-window min..max | lag p50 | lag p99 "
    "| lag max | resp p99 | dropped |  late | CPU s/1k req | RSS MiB | load1 |\n"
    "|--------|-------:|------:|----------------:|--------------------:|--------:|--------:"
    "|--------:|---------:|--------:|------:|-------------:|--------:|------:|"
)


def row(r: ToolResult, users: int | str) -> str:
    wr = r.window_ratios or [0.0]
    return (
        f"| {r.tool:<6} | {r.rate:>6.0f} | {users!s:>5} | {r.achieved_ratio:>15.4f} "
        f"| {min(wr):>8.4f}..{max(wr):<9.4f} | {r.lag_p50_ms:>7.2f} | {r.lag_p99_ms:>7.2f} "
        f"| {r.lag_max_ms:>7.1f} | {r.resp_p99_ms:>8.2f} | {r.dropped:>7} | {r.late:>5} "
        f"| {r.cpu_s_per_1000:>12.3f} | {mib(r.rss_bytes):>7} | {load_avg().split()[0]:>5} |"
    )


def held(r: ToolResult) -> bool:
    """Issue 8's bar: every window within 0.5 % of target, lag p99 <= 5 ms."""
    wr = r.window_ratios or [0.0]
    return (
        abs(r.achieved_ratio - 1) <= 0.005
        and all(abs(w - 1) <= 0.005 for w in wr)
        and r.lag_p99_ms <= 5.0
    )


def locust_cmd(url: str, rate: float, users: int, a: argparse.Namespace) -> list[str]:
    return [
        sys.executable, str(Path(__file__).with_name("locustfile.py")), "fixed", "--url", url,
        "--rate", str(rate), "--users", str(users), "--duration", str(a.duration),
        "--window", str(a.window), "--warmup", str(a.warmup),
    ]  # fmt: skip


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="100,1000,5000,10000")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per run")
    p.add_argument("--window", type=float, default=10.0, help="seconds per accuracy window")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--per-user", type=float, default=50.0, help="Locust: ops/s per user")
    p.add_argument("--tools", default="soakd,locust")
    p.add_argument("--nginx-workers", type=int, default=1)
    a = p.parse_args(argv)
    tools = a.tools.split(",")
    print(machine_header("compare_locust"), flush=True)
    results: dict[tuple[str, float], ToolResult] = {}
    bound = a.duration + a.warmup + 120
    with nginx(workers=a.nginx_workers) as srv:
        print(
            f"# target: nginx {srv.url} ({a.nginx_workers} worker); {a.duration:g} s "
            f"measured per run after {a.warmup:g} s warm-up, windows of {a.window:g} s"
        )
        print(HEADER, flush=True)
        for rate in (float(x) for x in a.rates.split(",") if x):
            if "soakd" in tools:
                ncpu0 = srv.cpu_seconds()
                r = run_child(
                    soakd_fixed_cmd(srv.url, rate, a.duration, window=a.window, warmup=a.warmup),
                    bound,
                )
                results["soakd", rate] = r
                print(row(r, "-"), f"nginx cpu {srv.cpu_seconds() - ncpu0:.1f}s", flush=True)
            if "locust" in tools:
                users = max(1, math.ceil(rate / a.per_user))
                ncpu0 = srv.cpu_seconds()
                r = run_child(locust_cmd(srv.url, rate, users, a), bound)
                results["locust", rate] = r
                print(row(r, users), f"nginx cpu {srv.cpu_seconds() - ncpu0:.1f}s", flush=True)
    print()
    print("# goals")
    held_rates = [rt for (tool, rt), r in results.items() if tool == "soakd" and held(r)]
    best = max(held_rates, default=0)
    print(
        f"# soakd highest rate held (every window within 0.5 %, lag p99 <= 5 ms): {best:g}/s "
        f"-> >= 10,000/s goal {'MET' if best >= 10000 else 'NOT MET'}"
    )
    for (tool, rt), r in sorted(results.items()):
        if tool != "soakd" or ("locust", rt) not in results:
            continue
        lo = results["locust", rt]
        ratio = r.cpu_s_per_1000 / lo.cpu_s_per_1000 if lo.cpu_s_per_1000 else float("nan")
        print(
            f"# {rt:>6g}/s: soakd CPU/request = {ratio:.2f} x Locust's "
            f"({r.cpu_s_per_1000:.3f} vs {lo.cpu_s_per_1000:.3f} s/1k; Locust achieved "
            f"{lo.achieved_ratio:.4f}) -> <= 2/3 goal {'MET' if ratio <= 2 / 3 else 'NOT MET'}"
        )
    print(f"# loadavg at end {load_avg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
