"""Sender accuracy benchmark: how fast can soakd hold a fixed rate on one core?

Starts bench/fixed_rate_server.py in a separate process (so client and server do
not share the client's core), then, with uvloop, drives soakd's Sender + an
soakd's HTTP driver (``EngramClient.exchange``, or ``--client aiohttp`` for an aiohttp
ClientSession GET, the driver soakd used before) + StatsHub.on_result (the daemon's hot path) at
each rate for ``--duration`` seconds and prints per rate: achieved/target, error
%, schedule lag p50/p99/max (ms), dropped, late, client CPU seconds per 1000
requests, the server's CPU share and the arrivals scheduled (issued + dropped,
which must equal rate x duration). It keeps raising the rate past the list
until a rate is not held, then names the highest rate held within 0.5 % with
lag p99 <= 5 ms.

Usage:
  .venv/bin/python bench/fixed_rate.py [--duration 20] [--rates 100,1000,5000,10000]
      [--beyond 12500,15000,17500,20000,25000,30000] [--pin] [--aiohttp-server]
      [--max-in-flight 1000] [--conn-limit 100] [--gc-freeze] [--profile RATE]
      [--client soakd|aiohttp]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import aiohttp
import psutil
import uvloop
from yarl import URL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from soakd.clock import SystemClock
from soakd.engram import EngramClient
from soakd.model import Op, OpResult, Outcome
from soakd.scheduler import NS_PER_S, Sender
from soakd.stats import StatsHub

HELD_WITHIN = 0.005
LAG_P99_LIMIT_MS = 5.0


@dataclass(frozen=True)
class RateResult:
    """One rate's figures."""

    rate: int
    duration_s: float
    issued: int
    ok: int
    errors: int
    dropped: int
    late: int
    achieved: float
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    resp_p99_ms: float
    cpu_s_per_1000: float
    client_cpu_pct: float
    server_cpu_pct: float
    cancelled: int

    @property
    def held(self) -> bool:
        target = self.rate * self.duration_s
        return (
            self.ok >= (1 - HELD_WITHIN) * target
            and self.achieved >= (1 - HELD_WITHIN) * self.rate
            and self.lag_p99_ms <= LAG_P99_LIMIT_MS
        )

    def row(self) -> str:
        err_pct = 100.0 * self.errors / self.issued if self.issued else 0.0
        return (
            f"| {self.rate:>6} | {self.achieved:>9.1f} | {self.achieved / self.rate:>6.4f} "
            f"| {err_pct:>5.2f} | {self.lag_p50_ms:>6.3f} | {self.lag_p99_ms:>6.3f} "
            f"| {self.lag_max_ms:>7.2f} | {self.resp_p99_ms:>7.2f} | {self.dropped:>7} "
            f"| {self.late:>6} | {self.cpu_s_per_1000:>6.4f} | {self.client_cpu_pct:>5.1f} "
            f"| {self.server_cpu_pct:>5.1f} | {self.issued + self.dropped:>7} "
            f"| {'yes' if self.held else 'NO':>4} |"
        )


HEADER = (
    "|   rate |  achieved |  ratio |  err% | lag50 | lag99 | lagmax | resp99 | dropped "
    "|   late | cpu/1k | cli%  | srv%  | arrivals | held |\n"
    "|-------:|----------:|-------:|------:|------:|------:|-------:|-------:|--------:"
    "|-------:|-------:|------:|------:|---------:|-----:|"
)


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def run_rate(
    rate: int,
    duration_s: float,
    *,
    url: URL,
    session: aiohttp.ClientSession | EngramClient,
    max_in_flight: int,
    server: psutil.Process,
) -> RateResult:
    """Drive ``rate`` GETs per second for ``duration_s`` and measure."""
    clock = SystemClock()
    hub = StatsHub([Op.RECALL], clock)
    last_done = 0
    monotonic_ns = time.monotonic_ns
    timeout = aiohttp.ClientTimeout(total=10)

    async def fire_soakd(k: int, intended_ns: int) -> None:
        nonlocal last_done
        assert isinstance(session, EngramClient)
        ex = await session.exchange("GET", "/")
        outcome = ex.failure or (Outcome.OK if ex.status == 200 else Outcome.HTTP_ERROR)
        last_done = ex.done_ns
        hub.on_result(
            OpResult(Op.RECALL, "bench", intended_ns, ex.sent_ns, ex.done_ns, outcome, ex.status)
        )

    async def fire_aiohttp(k: int, intended_ns: int) -> None:
        nonlocal last_done
        assert isinstance(session, aiohttp.ClientSession)
        sent = monotonic_ns()
        outcome = Outcome.OK
        status: int | None = None
        try:
            async with session.get(url, timeout=timeout) as resp:
                await resp.read()
                status = resp.status
                if status != 200:
                    outcome = Outcome.HTTP_ERROR
        except TimeoutError:
            outcome = Outcome.TIMEOUT
        except (aiohttp.ClientError, OSError):
            outcome = Outcome.CONNECTION
        done = monotonic_ns()
        last_done = done
        hub.on_result(OpResult(Op.RECALL, "bench", intended_ns, sent, done, outcome, status))

    sched = Sender(
        f"bench-{rate}",
        rate,
        clock=clock,
        fire=fire_soakd if isinstance(session, EngramClient) else fire_aiohttp,
        max_in_flight=max_in_flight,
        on_dropped=lambda k, t: hub.on_dropped(Op.RECALL, t),
        on_late=lambda k, t: hub.on_late(Op.RECALL),
        late_threshold_ns=10_000_000,
    )
    server_cpu0 = sum(server.cpu_times()[:2])
    cpu0 = _cpu_s()
    wall0 = time.monotonic()
    start = clock.monotonic_ns() + 20_000_000
    until = start + int(duration_s * NS_PER_S)
    await sched.run(start, until_ns=until)
    cancelled = await sched.drain(timeout_s=15)
    cpu = _cpu_s() - cpu0
    wall = time.monotonic() - wall0
    server_cpu = sum(server.cpu_times()[:2]) - server_cpu0
    total = hub.totals(Op.RECALL)
    elapsed_s = max(duration_s, (last_done - start) / NS_PER_S)
    return RateResult(
        rate=rate,
        duration_s=duration_s,
        issued=sched.issued,
        ok=total.ok,
        errors=total.count - total.ok,
        dropped=sched.dropped,
        late=sched.late,
        achieved=total.ok / elapsed_s,
        lag_p50_ms=total.lag.p50_ms,
        lag_p99_ms=total.lag.p99_ms,
        lag_max_ms=total.lag.max_ms,
        resp_p99_ms=total.latency.p99_ms,
        cpu_s_per_1000=1000 * cpu / sched.issued if sched.issued else 0.0,
        client_cpu_pct=100 * cpu / wall,
        server_cpu_pct=100 * server_cpu / wall,
        cancelled=cancelled,
    )


def start_server(aiohttp_server: bool, cpu: int | None) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, str(Path(__file__).with_name("fixed_rate_server.py"))]
    if aiohttp_server:
        cmd.append("--aiohttp")
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 15
    line = proc.stdout.readline()  # the server prints its port first thing
    if not line.startswith("PORT ") or time.monotonic() > deadline:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, int(line.split()[1])


@contextlib.asynccontextmanager
async def client(
    args: argparse.Namespace, port: int
) -> AsyncIterator[aiohttp.ClientSession | EngramClient]:
    """The HTTP client under test: soakd's driver, or an aiohttp session for comparison."""
    if args.client == "soakd":
        async with EngramClient(
            f"http://127.0.0.1:{port}",
            clock=SystemClock(),
            timeout_s=10,
            max_connections=args.conn_limit,
        ) as engram:
            yield engram
        return
    connector = aiohttp.TCPConnector(limit=args.conn_limit, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def bench(args: argparse.Namespace, port: int, server: psutil.Process) -> list[RateResult]:
    # A prebuilt URL skips yarl parsing on every request (aiohttp client only).
    url = URL(f"http://127.0.0.1:{port}/")
    results: list[RateResult] = []
    async with client(args, port) as session:
        await run_rate(
            1000, 1.0, url=url, session=session, max_in_flight=args.max_in_flight, server=server
        )  # warm-up
        if args.gc_freeze:
            # What a daemon can do after start-up: move everything alive now out of
            # the collector's sight and make young collections rarer.
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
        print(HEADER, flush=True)
        rates = [int(r) for r in args.rates.split(",") if r]
        beyond = [int(r) for r in args.beyond.split(",") if r]
        for i, rate in enumerate(rates + beyond):
            result = await run_rate(
                rate,
                args.duration,
                url=url,
                session=session,
                max_in_flight=args.max_in_flight,
                server=server,
            )
            results.append(result)
            print(result.row(), flush=True)
            if i >= len(rates) and not result.held:
                break  # beyond the list: stop at the first rate not held
    return results


async def profile(args: argparse.Namespace, port: int, server: psutil.Process) -> None:
    from pyinstrument import Profiler

    url = URL(f"http://127.0.0.1:{port}/")
    async with client(args, port) as session:
        await run_rate(
            1000, 1.0, url=url, session=session, max_in_flight=args.max_in_flight, server=server
        )
        profiler = Profiler(async_mode="disabled", interval=0.0005)
        profiler.start()
        result = await run_rate(
            args.profile,
            args.duration,
            url=url,
            session=session,
            max_in_flight=args.max_in_flight,
            server=server,
        )
        profiler.stop()
    print(HEADER)
    print(result.row())
    print(profiler.output_text(unicode=False, color=False, show_all=False))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="soakd fixed-rate scheduler benchmark")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per rate")
    parser.add_argument("--rates", default="100,1000,5000,10000")
    parser.add_argument("--beyond", default="12500,15000,17500,20000,25000,30000")
    parser.add_argument("--max-in-flight", type=int, default=1000)
    parser.add_argument("--conn-limit", type=int, default=100, help="connection pool size")
    parser.add_argument(
        "--client", choices=("soakd", "aiohttp"), default="soakd", help="HTTP client under test"
    )
    parser.add_argument("--pin", action="store_true", help="client on CPU 0, server on CPU 1")
    parser.add_argument("--aiohttp-server", action="store_true")
    parser.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() + higher gen0 threshold after warm-up"
    )
    parser.add_argument("--profile", type=int, default=0, help="profile one rate (pyinstrument)")
    args = parser.parse_args(argv)
    if args.pin:
        os.sched_setaffinity(0, {0})
    proc, port = start_server(args.aiohttp_server, 1 if args.pin else None)
    try:
        server = psutil.Process(proc.pid)
        load = os.getloadavg()
        print(
            f"# python {sys.version.split()[0]}, uvloop {version('uvloop')}, "
            f"aiohttp {aiohttp.__version__}, {os.cpu_count()} CPUs, "
            f"loadavg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
            f"{args.duration:g} s per rate, pinned={args.pin}, client={args.client}",
            flush=True,
        )
        if args.profile:
            uvloop.run(profile(args, port, server))
            return 0
        results = uvloop.run(bench(args, port, server))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    held = [r.rate for r in results if r.held]
    print(
        f"# highest rate held (within {HELD_WITHIN:.1%}, lag p99 <= {LAG_P99_LIMIT_MS} ms): "
        f"{max(held) if held else 'none'}"
    )
    print(f"# loadavg after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
