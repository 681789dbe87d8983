"""Cost per request: soakd, Locust and wrk on the same nginx target ("how close to the limit").

Issue 8 item 2. wrk (Debian's 4.1, C, one thread) is the floor: the least CPU any HTTP/1.1
load generator on this machine spends per request. It has no fixed-rate mode (that is
wrk2, not packaged), so it runs flat out with ``--wrk-conns`` keep-alive connections for
``--duration`` seconds; its CPU comes from the kernel's accounting of the finished child
(``RUSAGE_CHILDREN``), its RSS from psutil half-way through. soakd (bench/common.py
soakd-fixed) and Locust (bench/locustfile.py fixed) run at each of ``--rates``.

Prints per tool: offered and achieved rate, CPU seconds per 1,000 requests, CPU share of
one core, RSS; then soakd / wrk and Locust / wrk per rate.

Usage:
  .venv/bin/python bench/compare_wrk.py [--rates 1000,5000] [--duration 20] [--wrk-conns 16]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil

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


def run_wrk(url: str, conns: int, duration_s: float) -> tuple[int, float, int, float]:
    """wrk flat out: (requests, CPU seconds, RSS bytes half-way, wall seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["wrk", "-t1", f"-c{conns}", f"-d{int(duration_s)}s", url],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    rss = 0
    try:
        time.sleep(duration_s / 2)
        with contextlib.suppress(psutil.Error):
            rss = psutil.Process(proc.pid).memory_info().rss
        out, _ = proc.communicate(timeout=duration_s + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    m = re.search(r"(\d+) requests in", out)
    return (int(m.group(1)) if m else 0), cpu, rss, wall


def line(tool: str, offered: str, *, achieved: float, cpu_1k: float, share: float, rss: int) -> str:
    return (
        f"| {tool:<6} | {offered:>7} | {achieved:>9.0f} | {cpu_1k:>12.4f} | {share:>6.1f} "
        f"| {mib(rss):>7} | {load_avg().split()[0]:>5} |"
    )


def show(r: ToolResult, duration_s: float) -> str:
    """A table row for a soakd or Locust run."""
    return line(
        r.tool,
        f"{r.rate:g}",
        achieved=r.ok / duration_s,
        cpu_1k=r.cpu_s_per_1000,
        share=100 * r.cpu_s / duration_s,
        rss=r.rss_bytes,
    )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="1000,5000")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--wrk-conns", type=int, default=16)
    p.add_argument("--per-user", type=float, default=50.0, help="Locust: ops/s per user")
    p.add_argument("--tools", default="wrk,soakd,locust")
    a = p.parse_args(argv)
    tools = a.tools.split(",")
    print(machine_header("compare_wrk"), flush=True)
    res: dict[tuple[str, float], ToolResult] = {}
    wrk_cpu_1k = float("nan")
    with nginx() as srv:
        print(f"# target nginx {srv.url}; {a.duration:g} s per run")
        print("| tool   | offered |  achieved | CPU s/1k req | CPU %  | RSS MiB | load1 |")
        print("|--------|--------:|----------:|-------------:|-------:|--------:|------:|")
        if "wrk" in tools:
            n, cpu, rss, wall = run_wrk(srv.url, a.wrk_conns, a.duration)
            wrk_cpu_1k = 1000 * cpu / n if n else float("nan")
            print(line("wrk", f"max c{a.wrk_conns}", achieved=n / wall, cpu_1k=wrk_cpu_1k,
                       share=100 * cpu / wall, rss=rss),
                  flush=True)  # fmt: skip
        for rate in (float(x) for x in a.rates.split(",") if x):
            bound = a.duration + 150
            if "soakd" in tools:
                r = run_child(soakd_fixed_cmd(srv.url, rate, a.duration, window=a.duration), bound)
                res["soakd", rate] = r
                print(show(r, a.duration), flush=True)
            if "locust" in tools:
                users = max(1, math.ceil(rate / a.per_user))
                cmd = [sys.executable, str(Path(__file__).with_name("locustfile.py")), "fixed",
                       "--url", srv.url, "--rate", str(rate), "--users", str(users),
                       "--duration", str(a.duration), "--window", str(a.duration)]  # fmt: skip
                r = run_child(cmd, bound)
                res["locust", rate] = r
                print(show(r, a.duration), flush=True)
    print()
    for (tool, rate), r in sorted(res.items()):
        print(
            f"# {tool} at {rate:g}/s: {r.cpu_s_per_1000 / wrk_cpu_1k:.1f} x wrk's CPU per request "
            f"(wrk flat out)"
        )
    print(f"# loadavg at end {load_avg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
