"""Long-run memory of soakd's hot path against Locust's, and the run store's growth per day.

Issue 8 item 4 and issue 4's acceptance figures. Three modes:

``soakd`` (default): drives soakd's hot path — Sender -> fire -> StatsHub.on_result +
  Exporter.on_result, with ``StatsHub.roll()`` every ``--roll-every`` operations as the
  daemon's 10 s roll does (the interval records are dropped, as the daemon hands them to
  the store) — for ``--count`` operations as fast as the machine goes, and prints soakd's
  own RSS every ``--every`` operations. ``--fire synthetic`` (default) completes each
  request at once with plausible latencies (no network: the accelerated run);
  ``--fire network`` sends a real GET through EngramClient.exchange to nginx at ``--rate``.
``locust``: Locust (FastHttpUser, no wait, ``--users``) against nginx until ``--count``
  requests, printing its RSS every ``--every`` (Locust as a library, in a child process).
``store``: writes ``--hours`` simulated hours of the plan's workload into a real
  soakd.store.RunStore — one Sample a second, three IntervalRecords every 10 s with HDR
  histograms encoded from soakd.stats.Histogram filled with plausible latencies (100,
  50 and 20 ops/s), 10 consolidation runs a minute, a few events an hour, flushed every
  5 s like the daemon — and prints the store's bytes, per day and per 7 days.

Usage:
  .venv/bin/python bench/longrun_memory.py soakd [--count 2000000] [--every 1000000]
      [--fire synthetic|network] [--rate 5000]
  .venv/bin/python bench/longrun_memory.py locust [--count 200000] [--every 50000] [--users 20]
  .venv/bin/python bench/longrun_memory.py store [--hours 1]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import load_avg, machine_header, mib, nginx, rss_bytes, stop_process
from soakd.clock import SystemClock
from soakd.model import ConsolidationRun, Event, Op, OpResult, Outcome, RunInfo, Sample
from soakd.scheduler import Sender, arrival_offset_ns
from soakd.stats import Histogram, StatsHub
from soakd.store import DB_NAME, Batch, RunStore

OPS = (Op.STORE, Op.RECALL, Op.SPREAD)


async def soakd_run(a: argparse.Namespace) -> None:
    """The hot path for ``--count`` operations; RSS every ``--every``."""
    from soakd.engram import EngramClient
    from soakd.exporter import Exporter

    clock = SystemClock()
    hub = StatsHub(list(OPS), clock)
    exporter = Exporter(run_id="bench", target="bench", status=dict)
    rnd = random.Random(1)
    lat = [int(rnd.lognormvariate(8.3, 0.8)) * 1000 for _ in range(4096)]  # ~4 ms median, ns
    since_roll = 0
    client: EngramClient | None = None
    url = a.url
    base, _, rest = url.partition("/data")
    target = "/data" + rest

    async def fire_synthetic(k: int, intended_ns: int) -> None:
        nonlocal since_roll
        svc = lat[k & 4095]
        r = OpResult(OPS[k % 3], "space_01", intended_ns, intended_ns + 200_000,
                     intended_ns + 200_000 + svc, Outcome.OK, status=200)  # fmt: skip
        hub.on_result(r)
        exporter.on_result(r)
        since_roll += 1

    async def fire_network(k: int, intended_ns: int) -> None:
        nonlocal since_roll
        assert client is not None
        ex = await client.exchange("GET", target)
        ok = ex.failure is None and ex.status == 200
        r = OpResult(OPS[k % 3], "space_01", intended_ns, ex.sent_ns, ex.done_ns,
                     Outcome.OK if ok else (ex.failure or Outcome.HTTP_ERROR),
                     status=ex.status)  # fmt: skip
        hub.on_result(r)
        exporter.on_result(r)
        since_roll += 1

    synthetic = a.fire == "synthetic"
    rate = 1_000_000 if synthetic else a.rate  # synthetic: every arrival is already due
    if not synthetic:
        client = EngramClient(base, clock=clock, max_connections=1000)
    sched = Sender(
        "longrun", rate, clock=clock, fire=fire_synthetic if synthetic else fire_network,
        # Synthetic requests finish on their first step, but only once the loop runs
        # them: a burst of 512 must never hit the cap (every operation is recorded).
        max_in_flight=10_000 if synthetic else 1000,
        on_dropped=lambda k, t: hub.on_dropped(OPS[k % 3], t),
    )  # fmt: skip
    origin = clock.monotonic_ns() + 10_000_000
    t0 = time.monotonic()
    rss0 = rss_bytes()
    print("| operations | RSS MiB | growth MiB | wall s | ops/s so far | rolls | load1 |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| 0 | {mib(rss0)} | 0.0 | 0.0 | - | 0 | {load_avg().split()[0]} |", flush=True)
    done, rolls = 0, 0
    rss_at_first_mark = None
    while done < a.count:
        chunk = min(a.every, a.count - done)
        # Roll inside the chunk as the daemon does every 10 s (here: every --roll-every ops).
        sub = 0
        while sub < chunk:
            step = min(a.roll_every, chunk - sub)
            k0 = done + sub
            start = origin + arrival_offset_ns(k0, sched.rate)
            await sched.run(start, k0, until_ns=origin + arrival_offset_ns(k0 + step, sched.rate))
            await sched.drain(30.0)
            hub.roll()
            rolls += 1
            sub += step
        done += chunk
        rss = rss_bytes()
        if rss_at_first_mark is None:
            rss_at_first_mark = rss
        wall = time.monotonic() - t0
        print(
            f"| {done:,} | {mib(rss)} | {mib(rss - rss0)} | {wall:.1f} | {done / wall:,.0f} "
            f"| {rolls} | {load_avg().split()[0]} |",
            flush=True,
        )
    if client is not None:
        await client.close()
    final = rss_bytes()
    print(
        f"# {a.fire}: {done:,} operations, issued {sched.issued:,}, dropped {sched.dropped}, "
        f"errors {sched.errors}; RSS start {mib(rss0)} MiB -> end {mib(final)} MiB: growth "
        f"{mib(final - rss0)} MiB over the run, {mib(final - (rss_at_first_mark or rss0))} MiB "
        f"after the first {a.every:,} (goal < 10 MB: "
        f"{'MET' if final - rss0 < 10_000_000 else 'NOT MET'})"
    )


def soakd_mode(a: argparse.Namespace) -> int:
    import uvloop

    print(machine_header(f"longrun_memory soakd --fire {a.fire}"), flush=True)
    if a.fire == "network":
        with nginx() as srv:
            a.url = srv.url
            uvloop.run(soakd_run(a))
    else:
        a.url = ""
        uvloop.run(soakd_run(a))
    print(f"# loadavg at end {load_avg()}")
    return 0


def locust_mode(a: argparse.Namespace) -> int:
    print(machine_header("longrun_memory locust"), flush=True)
    with nginx() as srv:
        cmd = [sys.executable, str(Path(__file__).with_name("locustfile.py")), "max",
               "--url", srv.url, "--users", str(a.users), "--count", str(a.count),
               "--rss-every", str(a.every), "--max-seconds", str(a.max_seconds)]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None
            print("| requests | RSS MiB | growth MiB | wall s | load1 |")
            print("|---:|---:|---:|---:|---:|")
            rss0 = 0
            for line in proc.stdout:  # bounded: the child stops at --count or --max-seconds
                if line.startswith("# locust rss at 0:"):
                    rss0 = int(line.split()[-1])
                    print(f"| 0 | {mib(rss0)} | 0.0 | 0.0 | {load_avg().split()[0]} |")
                elif line.startswith("RSS "):
                    _, n, rss, wall = line.split()
                    print(
                        f"| {int(n):,} | {mib(int(rss))} | {mib(int(rss) - rss0)} | {wall} "
                        f"| {load_avg().split()[0]} |",
                        flush=True,
                    )
                elif line.startswith("{"):
                    print(f"# final: {line.strip()}")
            proc.wait(timeout=a.max_seconds + 60)
        finally:
            stop_process(proc)
    print(f"# loadavg at end {load_avg()}")
    return 0


def _interval_hist(rnd: random.Random, n: int, median_us: float) -> bytes:
    h = Histogram()
    mu = __import__("math").log(median_us * 1000)
    for _ in range(n):
        h.record_ns(int(rnd.lognormvariate(mu, 0.7)))
    return h.encode()


def store_mode(a: argparse.Namespace) -> int:
    """Simulated hours of the plan's workload into a real RunStore; bytes per day."""
    from soakd.model import IntervalRecord

    print(machine_header("longrun_memory store"), flush=True)
    d = Path(tempfile.mkdtemp(prefix="b8-store-", dir="/var/tmp"))
    try:
        t0 = 1_800_000_000.0
        store = RunStore.create(d, RunInfo("bench", "fp", "spec", t0, 7 * 86400.0))
        rnd = random.Random(7)
        # A pool of realistic interval histograms (encoding 3 x 10k values per interval
        # for every interval would take minutes; sizes depend on the spread, not on order).
        rates = {Op.STORE: 100, Op.RECALL: 50, Op.SPREAD: 20}
        pool = {
            op: [(_interval_hist(rnd, 10 * r, 5000), _interval_hist(rnd, 10 * r, 3500),
                  _interval_hist(rnd, 10 * r, 800)) for _ in range(8)]
            for op, r in rates.items()
        }  # fmt: skip
        seconds = int(a.hours * 3600)
        batch = Batch()
        wall0 = time.monotonic()
        rss_self, rss_target = 90_000_000, 2_000_000_000
        for s in range(seconds):
            t = t0 + s
            rss_target += rnd.randint(-4096, 8192)
            batch.samples.append(Sample(
                t, 4242, rss_target, rss_target - 300_000_000, None if s % 60 else rss_target,
                s * 0.5 + rnd.random(), s * 0.1, s * 40_000, s * 90_000, 120, 24,
                10_000_000 + s * 2000, 100 * s, rss_self, s * 0.03, rnd.random() / 1000,
            ))  # fmt: skip
            if s % 10 == 9:
                for op, r in rates.items():
                    resp, svc, lag = pool[op][rnd.randrange(8)]
                    batch.intervals.append(IntervalRecord(
                        op, t - 10, t, 10 * r, 10 * r, {}, 0, rnd.randint(0, 3), resp, svc, lag,
                    ))  # fmt: skip
            if s % 60 == 59:
                for i in range(10):
                    batch.consolidation_runs.append(ConsolidationRun(
                        f"space_{i + 1:02d}", t, "2027-01-15T08:00:00.000Z", t - 0.4,
                        60.0 + rnd.random(),
                    ))  # fmt: skip
            if s % 1200 == 0:
                batch.events.append(Event(t, "note", "simulated event", {"s": s}))
            if s % 5 == 4:
                batch.counters.update({"next_k_store": 100 * s, "next_k_recall": 50 * s})
                store.write(batch.take())
        store.write(batch.take())
        store.close()
        size = sum(p.stat().st_size for p in d.glob(f"{DB_NAME}*"))
        import sqlite3

        conn = sqlite3.connect(d / DB_NAME)
        try:
            tables = conn.execute(
                "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
            ).fetchall()
        finally:
            conn.close()
        for name, nbytes in tables[:8]:
            print(f"#   {name:<28} {nbytes / a.hours * 24 / 1e6:8.1f} MB/day")
        per_day = size / a.hours * 24
        print(
            f"# {a.hours:g} simulated hour(s) written in {time.monotonic() - wall0:.1f} s: "
            f"store {size:,} bytes ({mib(size)} MiB)"
        )
        print(
            f"# -> {per_day / 1e6:.1f} MB/day, {7 * per_day / 1e6:.1f} MB per 7 days "
            f"(goal < 200 MB for 7 days: {'MET' if 7 * per_day < 200e6 else 'NOT MET'})"
        )
        # soakd's retention (Daemon._retain): after a day, 5-minute interval records and
        # one sample per 10 s. Compact everything written, measure again, and
        # estimate a 7-day store as one full day plus six compacted ones.
        store = RunStore.open(d)
        t_end = t0 + seconds
        while store.compact_intervals(until=t_end, width_s=300.0):
            pass
        store.thin_samples(before=t_end, keep_every_s=10)
        store.close()
        conn = sqlite3.connect(d / DB_NAME)
        try:
            conn.execute("VACUUM")
        finally:
            conn.close()
        compacted = sum(p.stat().st_size for p in d.glob(f"{DB_NAME}*")) / a.hours * 24
        week = per_day + 6 * compacted
        print(
            f"# with retention: older days {compacted / 1e6:.1f} MB/day; 7 days = 1 full day"
            f" + 6 compacted = {week / 1e6:.1f} MB "
            f"(goal < 200 MB for 7 days: {'MET' if week < 200e6 else 'NOT MET'})"
        )
        hist_bytes = sum(len(b) for v in pool.values() for t3 in v for b in t3) / (3 * 8 * 3)
        print(
            f"# mean encoded HDR histogram {hist_bytes:,.0f} bytes; per day: "
            f"{8640 * 3} interval records x 3 histograms, {86400} samples, {14400} "
            f"consolidation runs"
        )
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(f"# loadavg at end {load_avg()}")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode")
    s = sub.add_parser("soakd")
    s.add_argument("--count", type=int, default=2_000_000)
    s.add_argument("--every", type=int, default=1_000_000)
    s.add_argument("--roll-every", type=int, default=20_000)
    s.add_argument("--fire", choices=("synthetic", "network"), default="synthetic")
    s.add_argument("--rate", type=float, default=5000.0, help="network mode: ops/s")
    lo = sub.add_parser("locust")
    lo.add_argument("--count", type=int, default=200_000)
    lo.add_argument("--every", type=int, default=50_000)
    lo.add_argument("--users", type=int, default=20)
    lo.add_argument("--max-seconds", type=float, default=1200.0)
    st = sub.add_parser("store")
    st.add_argument("--hours", type=float, default=1.0)
    a = p.parse_args(argv or ["soakd"])
    return {"soakd": soakd_mode, "locust": locust_mode, "store": store_mode}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
