"""Throughput and CPU cost of the reference server (soakd.reference); prints its figures.

Starts the server on an ephemeral port, pre-fills ``--spaces`` spaces with
``--prefill`` memories each, then:

1. max throughput per operation (store, recall, spread, get) with ``--concurrency``
   requests in flight from one client (closed loop: this measures the server, not a
   schedule). ``--client soakd`` (default) sends with soakd's own HTTP/1.1 pool,
   ``--client aiohttp`` with aiohttp: on two cores aiohttp's client costs more CPU per
   request than the server does, so the figure would be the client's ceiling, not the
   server's;
2. the plan's rates (100 stores/s + 50 recalls/s + 20 spreads/s over 10 spaces)
   for ``--plan-seconds``, open loop, reporting the server's CPU use as a
   fraction of one core and the client-side latency percentiles.

Usage: ``.venv/bin/python bench/reference_throughput.py [--prefill 20000] [--spaces 10]``.
The client shares the machine, so the maxima are lower bounds of the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable

import aiohttp
import numpy as np
import psutil
import uvloop

from soakd.clock import SystemClock
from soakd.http1 import HttpPool
from soakd.reference.harness import ReferenceProcess, start_reference


class Client:
    """One request, its status back (599: no answer): aiohttp or soakd's HTTP/1.1 pool."""

    def __init__(self, base_url: str, kind: str, concurrency: int) -> None:
        self.base_url = base_url
        self.kind = kind
        self._session: Client | None = None
        self._pool: HttpPool | None = None
        if kind == "aiohttp":
            connector = aiohttp.TCPConnector(limit=concurrency)
            self._session = aiohttp.ClientSession(connector=connector)
        else:
            self._pool = HttpPool(base_url, clock=SystemClock(), max_connections=concurrency)

    async def call(self, method: str, path: str, body: bytes | None = None) -> int:
        if self._session is not None:
            hdrs = {"Content-Type": "application/json"} if body is not None else {}
            async with self._session.request(
                method, self.base_url + path, data=body, headers=hdrs
            ) as resp:
                await resp.read()
                return resp.status
        assert self._pool is not None
        headers = "Content-Type: application/json\r\n" if body is not None else ""
        ex = await self._pool.request(method, path, headers=headers, body=body, timeout_s=30.0)
        return ex.status or 599

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._pool is not None:
            await self._pool.close()


Send = Callable[[Client, int], Awaitable[int]]


def bodies(rng: np.random.Generator, start: int, count: int, spaces: int) -> list[bytes]:
    """Store bodies with distinct random unit embeddings (rounded to 6 decimals)."""
    vecs = rng.standard_normal((count, 768)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    out = []
    for i, vec in enumerate(vecs):
        n = start + i
        body = {
            "id": f"m_{n}",
            "content": f"bench memory {n}",
            "embedding": np.round(vec, 6).tolist(),
            "memory_space_id": f"space_{n % spaces:02d}",
        }
        out.append(json.dumps(body).encode())
    return out


async def closed_loop(session: Client, send: Send, total: int, concurrency: int) -> float:
    """Run ``total`` requests with ``concurrency`` in flight; return requests per second."""
    counter = itertools.count()
    errors = 0
    statuses: collections.Counter[int] = collections.Counter()

    async def worker() -> None:
        nonlocal errors
        while (i := next(counter)) < total:
            status = await send(session, i)
            if status >= 400:
                errors += 1
                statuses[status] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    if errors:
        print(f"    ({errors} error responses: {dict(statuses)})")
    return total / elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


class Bench:
    """The requests of each operation against one server."""

    def __init__(self, ref: ReferenceProcess, args: argparse.Namespace) -> None:
        self.ref = ref
        self.args = args
        self.rng = np.random.default_rng(1)
        self.stored = 0
        self.pending: list[bytes] = []
        self.recall_urls: list[str] = []

    def stock_up(self, count: int) -> None:
        """Prepare ``count`` more store bodies (untimed)."""
        self.pending = bodies(self.rng, self.stored, count, self.args.spaces)

    async def store(self, session: Client, i: int) -> int:
        """One store from the prepared bodies."""
        body = self.pending[i % len(self.pending)]
        return await session.call("POST", "/api/v1/memories/remember", body)

    async def recall(self, session: Client, i: int) -> int:
        """One recall by a stored embedding."""
        return await session.call("GET", self.recall_urls[i % len(self.recall_urls)])

    async def spread(self, session: Client, i: int) -> int:
        """One SPREAD from a stored memory, 5 hops as in the plan."""
        n = (i * 7919) % max(1, self.stored)
        body = {
            "query_text": f"SPREAD FROM m_{n} MAX_HOPS 5",
            "memory_space_id": f"space_{n % self.args.spaces:02d}",
        }
        return await session.call("POST", "/api/v1/query", json.dumps(body).encode())

    async def get(self, session: Client, i: int) -> int:
        """One read-back by id."""
        n = (i * 7919) % max(1, self.stored)
        path = f"/api/v1/memories/m_{n}?space=space_{n % self.args.spaces:02d}"
        return await session.call("GET", path)

    def make_recall_urls(self, count: int) -> None:
        """Recall URLs for embeddings of the next prepared bodies (stored before use)."""
        urls = []
        for raw in self.pending[:count]:
            body = json.loads(raw)
            query = urllib.parse.urlencode(
                {"embedding": json.dumps(body["embedding"]), "space": body["memory_space_id"]}
            )
            urls.append(f"/api/v1/memories/recall?{query}")
        self.recall_urls = urls


async def prefill(bench: Bench, session: Client) -> None:
    """Store ``spaces * prefill`` memories in batches."""
    target = bench.args.spaces * bench.args.prefill
    batch = 5000
    started = time.perf_counter()
    while bench.stored < target:
        count = min(batch, target - bench.stored)
        bench.stock_up(count)
        if not bench.recall_urls:
            bench.make_recall_urls(500)
        await closed_loop(session, bench.store, count, bench.args.concurrency)
        bench.stored += count
        print(f"  prefilled {bench.stored}/{target}", flush=True)
    print(f"  prefill took {time.perf_counter() - started:.1f}s")


async def open_loop(bench: Bench, session: Client, seconds: float) -> None:
    """The plan's mix at fixed rates; prints server CPU share and latency percentiles."""
    rates = {"store": 100.0, "recall": 50.0, "spread": 20.0}
    sends: dict[str, Send] = {"store": bench.store, "recall": bench.recall, "spread": bench.spread}
    bench.stock_up(int(rates["store"] * seconds) + 10)
    latencies: dict[str, list[float]] = {op: [] for op in rates}
    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()

    async def one(op: str, i: int, due: float) -> None:
        status = await sends[op](session, i)
        if status < 400:
            latencies[op].append(time.perf_counter() - due)

    cpu0, wall0 = cpu_seconds(bench.ref.pid), time.perf_counter()
    start = loop.time()
    schedule = sorted(
        (start + k / rate, op, k) for op, rate in rates.items() for k in range(int(rate * seconds))
    )
    for due, op, k in schedule:
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        intended = time.perf_counter() - max(0.0, loop.time() - due)
        tasks.append(asyncio.create_task(one(op, k, intended)))
    await asyncio.wait(tasks, timeout=30)
    cpu = cpu_seconds(bench.ref.pid) - cpu0
    wall = time.perf_counter() - wall0
    print(f"  server CPU: {cpu / wall:.3f} of one core over {wall:.1f}s")
    for op, values in latencies.items():
        if values:
            ms = np.percentile(np.array(values) * 1000.0, [50, 99])
            print(f"  {op:7s} n={len(values):5d} p50={ms[0]:.2f} ms p99={ms[1]:.2f} ms")


async def run(args: argparse.Namespace) -> None:
    """Start the server, prefill, measure, stop."""
    ref = await asyncio.to_thread(
        start_reference, "--capacity", str(args.capacity), "--seed", "1", timeout_s=60
    )
    try:
        bench = Bench(ref, args)
        session = Client(ref.url, args.client, args.concurrency)
        try:
            print(f"server {ref.url} pid {ref.pid}; {args.spaces} spaces; client {args.client}")
            await prefill(bench, session)
            rss = psutil.Process(ref.pid).memory_info().rss
            print(f"  RSS after prefill: {rss / 2**20:.0f} MiB")
            print(f"max throughput, {args.concurrency} in flight:")
            bench.stock_up(args.ops)
            for name, send in (
                ("store", bench.store),
                ("recall", bench.recall),
                ("spread", bench.spread),
                ("get", bench.get),
            ):
                cpu0 = cpu_seconds(ref.pid)
                rate = await closed_loop(session, send, args.ops, args.concurrency)
                cpu = cpu_seconds(ref.pid) - cpu0
                print(f"  {name:7s} {rate:8.0f} req/s  server CPU {cpu / args.ops * 1e3:.3f} ms/op")
                if name == "store":
                    bench.stored += args.ops
            print(
                f"plan rates for {args.plan_seconds:.0f}s (100 store + 50 recall + 20 spread /s):"
            )
            await open_loop(bench, session, args.plan_seconds)
        finally:
            await session.close()
    finally:
        ref.stop()
        if ref.stderr.strip():
            print("server stderr (tail):\n" + ref.stderr[-3000:])


def main() -> None:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", type=int, default=10)
    parser.add_argument("--prefill", type=int, default=2000, help="memories per space first")
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--ops", type=int, default=3000, help="requests per max-throughput run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--plan-seconds", type=float, default=20.0)
    parser.add_argument("--client", choices=("soakd", "aiohttp"), default="soakd")
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
