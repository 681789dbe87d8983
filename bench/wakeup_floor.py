"""What waking up costs on this machine: the floor under soakd's CPU at the plan's rates.

Issue 8 asks for < 2 % of one core at the plan's rates (100 stores, 50 recalls,
20 spreads per second). An open-model generator must be running at each arrival
instant, so the process wakes at least once per distinct instant: 100 times a
second at the plan's rates (every recall and spread instant is also a store
instant). This script measures what those wake-ups cost before any request is
made, each variant in a fresh child process, one after the other:

- ``c-nanosleep``: a C loop sleeping to 100 instants a second (the OS and
  hypervisor floor; only when a C compiler is installed, else skipped with a note);
- ``py-sleep``: a Python loop of ``time.sleep`` to the same instants;
- ``uvloop-sleep``: the same on a uvloop event loop (``asyncio.sleep``);
- ``gevent-sleep``: the same with ``gevent.sleep`` (the loop Locust runs on; only
  when gevent is installed, i.e. with Locust: ``.venv/bin/pip install locust``);
- ``sched-separate``: soakd's three Schedulers at 100/50/20 per second, each
  running its own loop, with a fire function that does nothing (the task is
  created and finishes);
- ``sched-timeline``: the same three on one ``Pacer`` (what the daemon runs);
- ``timeline-http``: the timeline with soakd's HTTP client sending every arrival
  as a GET to a minimal keep-alive server in another process (bench/fixed_rate_server.py)
  and recording it in a ``StatsHub`` and the ``Exporter`` from the answer's callback,
  as the daemon does: its hot path without its periodic work;
- ``timeline-http-task``: the same with a task per request awaiting
  ``EngramClient.exchange`` (the daemon's path before the fourth session).

Each prints the child's CPU share of one core (user + system, from getrusage),
the CPU per wake-up and per arrival, and voluntary context switches per second.

Usage:
  .venv/bin/python bench/wakeup_floor.py [--duration 20] [--repeat 2] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine_header

#: The plan's rates (shared/soak_test.yaml) and how many distinct instants they make.
PLAN_RATES = (100, 50, 20)
WAKE_RATE = 100
VARIANTS = (
    "c-nanosleep",
    "py-sleep",
    "uvloop-sleep",
    "gevent-sleep",
    "sched-separate",
    "sched-timeline",
    "timeline-http",
    "timeline-http-task",
)

_C_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/resource.h>
int main(int argc, char **argv) {
    double dur = atof(argv[1]); long rate = atol(argv[2]);
    struct timespec t0, due; clock_gettime(CLOCK_MONOTONIC, &t0);
    long n = (long)(dur * rate);
    for (long k = 1; k <= n; k++) {
        long long ns = (long long)t0.tv_nsec + k * (1000000000LL / rate);
        due.tv_sec = t0.tv_sec + ns / 1000000000LL; due.tv_nsec = ns % 1000000000LL;
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
    }
    struct rusage ru; getrusage(RUSAGE_SELF, &ru);
    printf("{\"cpu_s\": %f, \"nvcsw\": %ld, \"wakeups\": %ld, \"arrivals\": %ld}\n",
           ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec
           + ru.ru_stime.tv_usec / 1e6, ru.ru_nvcsw, n, n);
    return 0;
}
"""


def _usage() -> tuple[float, int]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime, ru.ru_nvcsw


def _sleep_loop(duration_s: float, sleep: Callable[[float], None]) -> dict[str, Any]:
    """``sleep`` (time.sleep, gevent.sleep) to each of the 100 instants a second."""
    period = 1_000_000_000 // WAKE_RATE
    n = int(duration_s * WAKE_RATE)
    cpu0, cs0 = _usage()
    t0 = time.monotonic_ns()
    for k in range(1, n + 1):
        remaining = t0 + k * period - time.monotonic_ns()
        if remaining > 0:
            sleep(remaining / 1e9)
    cpu1, cs1 = _usage()
    return {"cpu_s": cpu1 - cpu0, "nvcsw": cs1 - cs0, "wakeups": n, "arrivals": n}


async def _uvloop_sleep(duration_s: float) -> dict[str, Any]:
    from soakd.clock import SystemClock

    clock = SystemClock()
    period = 1_000_000_000 // WAKE_RATE
    n = int(duration_s * WAKE_RATE)
    cpu0, cs0 = _usage()
    t0 = time.monotonic_ns()
    for k in range(1, n + 1):
        await clock.sleep_until(t0 + k * period)
    cpu1, cs1 = _usage()
    return {"cpu_s": cpu1 - cpu0, "nvcsw": cs1 - cs0, "wakeups": n, "arrivals": n}


async def _schedulers(
    duration_s: float, *, timeline: bool, port: int | None, tasks: bool = False
) -> dict[str, Any]:
    from soakd.clock import SystemClock
    from soakd.engram import EngramClient, Exchange
    from soakd.exporter import Exporter
    from soakd.model import Op, OpResult, Outcome
    from soakd.scheduler import NS_PER_S, Pacer, Sender
    from soakd.stats import StatsHub

    clock = SystemClock()
    ops = (Op.STORE, Op.RECALL, Op.SPREAD)
    hub = StatsHub(list(ops), clock)
    exporter = Exporter(run_id="bench", target="bench", status=dict)
    client = (
        EngramClient(f"http://127.0.0.1:{port}", clock=clock, timeout_s=10, max_connections=64)
        if port is not None
        else None
    )

    def make_fire(op: Op) -> Any:
        if client is None:

            async def nothing(k: int, intended_ns: int) -> None:
                return None

            return nothing

        def record(intended_ns: int, ex: Exchange) -> None:
            outcome = ex.failure or (Outcome.OK if ex.status == 200 else Outcome.HTTP_ERROR)
            r = OpResult(op, "bench", intended_ns, ex.sent_ns, ex.done_ns, outcome, ex.status)
            hub.on_result(r)
            exporter.on_result(r)

        async def task_fire(k: int, intended_ns: int) -> None:
            record(intended_ns, await client.exchange("GET", "/"))

        def callback_fire(k: int, intended_ns: int) -> asyncio.Future[None]:
            return client.begin("GET", "/", then=functools.partial(record, intended_ns))

        return task_fire if tasks else callback_fire

    scheds = [
        Sender(
            op.value,
            rate,
            clock=clock,
            fire=make_fire(op),
            max_in_flight=1000,
            on_dropped=lambda k, t: None,
        )
        for op, rate in zip(ops, PLAN_RATES, strict=True)
    ]
    if client is not None:
        await client.exchange("GET", "/")  # connect before measuring
    start = clock.monotonic_ns() + 20_000_000
    until = start + int(duration_s * NS_PER_S)
    cpu0, cs0 = _usage()
    if timeline:
        await Pacer(clock).run([(s, start, 0) for s in scheds], until)
    else:
        await asyncio.gather(*(s.run(start, 0, until) for s in scheds))
    for s in scheds:
        await s.drain(10.0)
    cpu1, cs1 = _usage()
    if client is not None:
        await client.close()
    arrivals = sum(s.issued for s in scheds)
    errors = sum(hub.totals(op).count - hub.totals(op).ok for op in ops) if client else 0
    return {
        "cpu_s": cpu1 - cpu0,
        "nvcsw": cs1 - cs0,
        "wakeups": int(duration_s * WAKE_RATE),
        "arrivals": arrivals,
        "errors": errors,
    }


def _child(variant: str, duration_s: float, port: int | None) -> dict[str, Any]:
    if variant == "py-sleep":
        return _sleep_loop(duration_s, time.sleep)
    if variant == "gevent-sleep":
        import gevent

        return _sleep_loop(duration_s, gevent.sleep)
    import uvloop

    if variant == "uvloop-sleep":
        return uvloop.run(_uvloop_sleep(duration_s))
    timeline = variant != "sched-separate"
    http = variant.startswith("timeline-http")
    return uvloop.run(
        _schedulers(
            duration_s,
            timeline=timeline,
            port=port if http else None,
            tasks=variant == "timeline-http-task",
        )
    )


def _run_variant(
    variant: str, duration_s: float, port: int, c_binary: Path | None
) -> dict[str, Any] | str:
    if variant == "c-nanosleep":
        if c_binary is None:
            return "skipped: no C compiler (cc) on this machine"
        cmd = [str(c_binary), str(duration_s), str(WAKE_RATE)]
    elif variant == "gevent-sleep" and importlib.util.find_spec("gevent") is None:
        return "skipped: gevent is not installed (pip install locust)"
    else:
        cmd = [sys.executable, __file__, "--child", variant, "--duration", str(duration_s)]
        cmd += ["--port", str(port)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    if out.returncode != 0:
        return f"failed (exit {out.returncode}): {out.stderr.strip()[-300:]}"
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _compile_c(workdir: Path) -> Path | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src, binary = workdir / "floor.c", workdir / "floor"
    src.write_text(_C_SOURCE)
    cmd = [cc, "-O2", "-o", str(binary), str(src)]
    done = subprocess.run(cmd, check=False, capture_output=True, timeout=60)
    return binary if done.returncode == 0 else None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per variant")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each variant")
    parser.add_argument("--only", default="", help="comma-separated variants")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.duration, args.port or None)))
        return 0
    variants = [v for v in args.only.split(",") if v] or list(VARIANTS)
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    print(machine_header("wakeup_floor"), flush=True)
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("fixed_rate_server.py"))],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # the server prints its port first thing
        if not line.startswith("PORT "):
            raise SystemExit(f"server did not start: {line!r}")
        port = int(line.split()[1])
        with tempfile.TemporaryDirectory(prefix="wakeup-floor-") as tmp:
            c_binary = _compile_c(Path(tmp))
            print(
                f"# {args.duration:g} s per run; {WAKE_RATE} wake-ups/s "
                f"(the distinct instants of {'/'.join(map(str, PLAN_RATES))} per s)"
            )
            print("| variant | run | CPU % of one core | us per wake-up | us per arrival "
                  "| voluntary switches/s | errors |")  # fmt: skip
            print("|---|---:|---:|---:|---:|---:|---:|")
            for variant in variants:
                for run in range(1, args.repeat + 1):
                    r = _run_variant(variant, args.duration, port, c_binary)
                    if isinstance(r, str):
                        print(f"| {variant} | {run} | {r} | | | | |", flush=True)
                        break
                    cpu = r["cpu_s"]
                    print(
                        f"| {variant} | {run} | {100 * cpu / args.duration:.2f} "
                        f"| {1e6 * cpu / max(1, r['wakeups']):.0f} "
                        f"| {1e6 * cpu / max(1, r['arrivals']):.0f} "
                        f"| {r['nvcsw'] / args.duration:.0f} | {r.get('errors', 0)} |",
                        flush=True,
                    )
    finally:
        server.terminate()
        server.wait(timeout=10)
    print("# 2 % of one core is 20 ms of CPU per second: 200 us per wake-up at 100 wake-ups/s,")
    print("# or 118 us per arrival at 170 arrivals/s, for everything the daemon does.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
