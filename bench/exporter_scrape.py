"""Cost of the exporter's hot path (on_result) and of one /metrics exposition.

Run: .venv/bin/python bench/exporter_scrape.py
Prints per-call figures; nothing here asserts on speed (the machine is shared and noisy).
"""

from __future__ import annotations

import statistics
import time

from soakd.exporter import Exporter
from soakd.model import Op, OpResult, Outcome, Sample

N = 200_000


def results() -> list[OpResult]:
    ops = (Op.STORE, Op.RECALL, Op.SPREAD, Op.READBACK)
    out = []
    for i in range(N):
        outcome = Outcome.HTTP_ERROR if i % 500 == 0 else Outcome.OK
        done = 10_000_000_000
        out.append(
            OpResult(
                op=ops[i % 4],
                space="space_01",
                intended_ns=done - (1_000_000 + (i % 997) * 20_000),
                sent_ns=done - (900_000 + (i % 997) * 20_000),
                done_ns=done,
                outcome=outcome,
                status=500 if outcome is Outcome.HTTP_ERROR else None,
            )
        )
    return out


def main() -> None:
    e = Exporter(run_id="bench", target="http://127.0.0.1:7432", status=dict)
    batch = results()
    runs = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for r in batch:
            e.on_result(r)
        runs.append((time.perf_counter_ns() - t0) / N)
    print(f"on_result: median {statistics.median(runs):.0f} ns/call over {N} calls x 5 runs")
    print(f"  at 10k results/s that is {statistics.median(runs) * 10_000 / 1e7:.2f} % of a core")
    e.on_sample(Sample(t=0.0, pid=1, rss_bytes=1, heap_bytes=1, cpu_user_s=1.0, cpu_system_s=1.0,
                       read_bytes=1, write_bytes=1, num_fds=1, num_threads=1, self_cpu_s=1.0,
                       self_rss_bytes=1, loop_lag_s=0.001))  # fmt: skip
    times = []
    for _ in range(50):
        t0 = time.perf_counter_ns()
        body = e.exposition()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    samples = sum(1 for line in body.splitlines() if not line.startswith(b"#"))
    print(f"exposition: median {statistics.median(times):.2f} ms, {len(body)} B, {samples} samples")


if __name__ == "__main__":
    main()
