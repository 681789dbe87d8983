"""Locust as the comparison tool: a FastHttpUser and a library-mode child driver.

Run as a child process only (Locust monkey-patches the interpreter with gevent):

  python bench/locustfile.py fixed --url URL --rate R --users U [--duration S] [--window S]
      FastHttpUser with ``constant_throughput(R / U)`` per user for S seconds after a
      warm-up; prints one JSON line (bench.common.ToolResult) with the same figures the
      soakd driver prints. Locust has no schedule, so "schedule lag" is measured here
      the way soakd defines it: each user's k-th task should start at t0 + k * U / R;
      lag = actual start - that instant. Locust never drops: an arrival it could not
      send in time is simply later (the lag grows) or never sent (counted as dropped =
      target - issued).
  python bench/locustfile.py max --url URL --users U --count N [--rss-every M]
      Users with no wait, until N requests completed; prints RSS every M requests
      (for the long-run memory comparison) and a JSON line.

Response time is Locust's own ``response_time`` (from when the request was made, not
from when it was due): what Locust's report would show.
"""

from __future__ import annotations

import gevent  # type: ignore[import-untyped]
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

from locust import FastHttpUser, constant, constant_throughput, task  # noqa: E402
from locust.env import Environment  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ToolResult, cpu_seconds_self, percentile, rss_bytes  # noqa: E402


class _Recorder:
    """Everything the request hook and the tasks see (module-level: Locust builds users)."""

    path = "/"
    per_user_rate = 1.0
    measure = False
    start = 0.0
    window = 10.0
    windows: list[int] = []  # noqa: RUF012 - reset per run by the driver
    lags: list[float] = []  # noqa: RUF012
    resp: list[float] = []  # noqa: RUF012
    ok = 0
    errors = 0
    issued = 0
    late = 0
    completed = 0


R = _Recorder


def on_request(
    request_type: str,
    name: str,
    response_time: float,
    response_length: int,
    exception: BaseException | None = None,
    **_: Any,
) -> None:
    """Locust's request event: count completions per window, keep response times."""
    R.completed += 1
    if not R.measure:
        return
    if exception is None:
        R.ok += 1
        w = int((time.monotonic() - R.start) // R.window)
        if 0 <= w < len(R.windows):
            R.windows[w] += 1
    else:
        R.errors += 1
    R.resp.append(response_time)


class FixedRateUser(FastHttpUser):
    """One closed-loop user at ``constant_throughput(per_user_rate)``."""

    wait_time = constant_throughput(1.0)  # replaced per run (see _configure)

    def on_start(self) -> None:
        self.t0: float | None = None
        self.k = 0

    @task
    def get(self) -> None:
        now = time.monotonic()
        if R.measure:
            if self.t0 is None:
                self.t0 = now
                self.k = 0
            lag = now - (self.t0 + self.k / R.per_user_rate)
            R.lags.append(lag * 1000.0)
            if lag > 0.010:
                R.late += 1
            R.issued += 1
            self.k += 1
        self.client.get(R.path)


class MaxRateUser(FastHttpUser):
    """A user with no wait at all (closed loop flat out)."""

    wait_time = constant(0)

    @task
    def get(self) -> None:
        self.client.get(R.path)


def _env(user: type[FastHttpUser], url: str) -> Environment:
    parts = urlsplit(url)
    R.path = parts.path or "/"
    env = Environment(user_classes=[user], host=f"{parts.scheme}://{parts.netloc}")
    env.events.request.add_listener(on_request)  # type: ignore[no-untyped-call]
    return env


def fixed(argv: list[str]) -> int:
    """Fixed offered rate with constant_throughput users; print a ToolResult."""
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--window", type=float, default=10.0)
    a = p.parse_args(argv)
    R.per_user_rate = a.rate / a.users
    FixedRateUser.wait_time = constant_throughput(R.per_user_rate)
    env = _env(FixedRateUser, a.url)
    runner = env.create_local_runner()
    # Spawn every user within ~1 s, then warm up before measuring.
    runner.start(a.users, spawn_rate=max(a.users, 1))
    gevent.sleep(a.warmup + 1.0)
    R.window = a.window
    R.windows = [0] * max(1, int(a.duration // a.window))
    cpu0 = cpu_seconds_self()
    R.start = time.monotonic()
    # Each user's schedule starts at its first task after this point (t0 is None until then).
    R.measure = True
    gevent.sleep(a.duration)
    R.measure = False
    cpu = cpu_seconds_self() - cpu0
    runner.quit()
    lags, resp = sorted(R.lags), sorted(R.resp)
    target = a.rate * a.window
    result = ToolResult(
        tool="locust", rate=a.rate, duration_s=a.duration, issued=R.issued, ok=R.ok,
        errors=R.errors, dropped=max(0, int(a.rate * a.duration) - R.issued), late=R.late,
        window_ratios=[w / target for w in R.windows],
        lag_p50_ms=percentile(lags, 50), lag_p99_ms=percentile(lags, 99),
        lag_max_ms=lags[-1] if lags else 0.0,
        resp_p50_ms=percentile(resp, 50), resp_p99_ms=percentile(resp, 99),
        resp_max_ms=resp[-1] if resp else 0.0, cpu_s=cpu, rss_bytes=rss_bytes(),
        maxrss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        extra={"users": float(a.users), "per_user_rate": R.per_user_rate},
    )  # fmt: skip
    print(json.dumps(dataclasses.asdict(result)), flush=True)
    return 0


def max_rate(argv: list[str]) -> int:
    """Flat out until ``--count`` requests completed; RSS every ``--rss-every``."""
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--users", type=int, default=10)
    p.add_argument("--count", type=int, default=200_000)
    p.add_argument("--rss-every", type=int, default=100_000)
    p.add_argument("--max-seconds", type=float, default=1800.0)
    a = p.parse_args(argv)
    env = _env(MaxRateUser, a.url)
    runner = env.create_local_runner()
    cpu0 = cpu_seconds_self()
    t0 = time.monotonic()
    runner.start(a.users, spawn_rate=a.users)
    next_mark = a.rss_every
    print(f"# locust rss at 0: {rss_bytes()}", flush=True)
    while R.completed < a.count and time.monotonic() - t0 < a.max_seconds:
        gevent.sleep(0.2)
        if R.completed >= next_mark:
            print(f"RSS {R.completed} {rss_bytes()} {time.monotonic() - t0:.1f}", flush=True)
            next_mark += a.rss_every
    runner.quit()
    wall = time.monotonic() - t0
    cpu = cpu_seconds_self() - cpu0
    result = ToolResult(
        tool="locust", rate=0.0, duration_s=wall, issued=R.completed, ok=R.completed,
        errors=0, dropped=0, late=0, window_ratios=[], lag_p50_ms=0.0, lag_p99_ms=0.0,
        lag_max_ms=0.0, resp_p50_ms=0.0, resp_p99_ms=0.0, resp_max_ms=0.0, cpu_s=cpu,
        rss_bytes=rss_bytes(),
        maxrss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        extra={"users": float(a.users), "rate": R.completed / wall},
    )  # fmt: skip
    print(json.dumps(dataclasses.asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    modes = {"fixed": fixed, "max": max_rate}
    if len(sys.argv) < 2 or sys.argv[1] not in modes:
        sys.exit("usage: locustfile.py fixed|max --url URL ...")
    sys.exit(modes[sys.argv[1]](sys.argv[2:]))
