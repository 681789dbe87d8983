"""One streaming pass over the run's process samples.

A week of 1 s samples is 604,800 rows; as :class:`~soakd.model.Sample` objects
that is ~300 MB. The pass therefore reads them in chunks and keeps only what
the report needs: three float arrays for the charts (8 bytes a value), running
figures, gaps and PID changes, and one median sample per bucket for the leak
fit (:func:`soakd.rules.leak.leak_fit` reduces its input to 200 bucket medians
anyway, so ~5,000 bucket medians lose nothing it would use).
"""

from __future__ import annotations

import math
import statistics
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

from soakd.model import RunReader, Sample
from soakd.report.fastread import SampleRow, open_store, sample_row, sample_rows

#: Hours of samples asked for at once when the reader cannot stream.
CHUNK_S = 6 * 3600.0
#: At most this many bucket medians go to the leak fit.
FIT_BUCKETS = 5000

_NAN = float("nan")


@dataclass
class SampleScan:
    """What the pass found (mutable while scanning; read-only afterwards)."""

    t: array[float] = field(default_factory=lambda: array("d"))
    rss: array[float] = field(default_factory=lambda: array("d"))
    heap: array[float] = field(default_factory=lambda: array("d"))
    count: int = 0
    readable: int = 0
    first_t: float | None = None
    last_t: float | None = None
    rss_peak: float | None = None
    heap_peak: float | None = None
    heap_first: float | None = None
    heap_last: float | None = None
    post_sum: float = 0.0
    post_n: int = 0
    post_min: float | None = None
    post_max: float | None = None
    post_first: float | None = None
    post_last: float | None = None
    memories_last: int | None = None
    cpu_s: float = 0.0
    cpu_wall_s: float = 0.0
    gaps: list[tuple[float, float]] = field(default_factory=list)
    pid_changes: list[tuple[float, int, int]] = field(default_factory=list)
    fit_samples: list[Sample] = field(default_factory=list)

    @property
    def cpu_mean_pct(self) -> float | None:
        return self.cpu_s / self.cpu_wall_s * 100.0 if self.cpu_wall_s > 0 else None


def iter_sample_chunks(
    reader: RunReader, start: float, end: float, *, fast: bool = True
) -> Iterator[list[SampleRow]]:
    """Sample rows in time order, a chunk at a time (fast path for a run store)."""
    conn = open_store(reader) if fast else None
    if conn is not None:
        try:
            yield from sample_rows(conn)
            return
        finally:
            conn.close()
    edge = start + CHUNK_S
    yield [sample_row(s) for s in reader.samples(None, edge)]
    last = edge
    while last < end:
        nxt = last + CHUNK_S
        chunk = reader.samples(last, None if nxt >= end else nxt)
        # both bounds are inclusive: drop the rows the previous window already had
        yield [sample_row(s) for s in chunk if s.t > last]
        last = nxt


class _Buckets:
    """Median samples per fixed-width time bucket, for the leak fit."""

    def __init__(self, width_s: float) -> None:
        self.width = width_s
        self.key: int | None = None
        self.ts: list[float] = []
        self.rss: list[float] = []
        self.heap: list[float] = []
        self.mem: int | None = None
        self.pid: int | None = None
        self.out: list[Sample] = []

    def add(self, row: SampleRow) -> None:
        t, pid, rss, heap, _u, _s, mem = row
        key = int(t // self.width)
        if key != self.key:
            self.flush()
            self.key = key
        self.ts.append(t)
        if rss is not None:
            self.rss.append(float(rss))
        if heap is not None:
            self.heap.append(float(heap))
        if mem is not None:
            self.mem = int(mem)
        self.pid = None if pid is None else int(pid)

    def flush(self) -> None:
        if not self.ts:
            return
        self.out.append(
            Sample(
                t=statistics.median(self.ts),
                pid=self.pid,
                rss_bytes=int(statistics.median(self.rss)) if self.rss else None,
                heap_bytes=int(statistics.median(self.heap)) if self.heap else None,
                memories=self.mem,
            )
        )
        self.ts, self.rss, self.heap, self.mem = [], [], [], None


def scan_samples(
    reader: RunReader,
    *,
    start: float,
    end: float,
    warmup_end: float,
    gap_min_s: float,
    fast: bool = True,
) -> SampleScan:
    """Read every sample once and reduce them to a :class:`SampleScan`."""
    scan = SampleScan()
    buckets = _Buckets(max(1.0, (end - start) / FIT_BUCKETS))
    prev: SampleRow | None = None
    for chunk in iter_sample_chunks(reader, start, end, fast=fast):
        for row in chunk:
            if prev is not None and row[0] < prev[0]:
                continue  # out of order (clock step): the charts need ascending time
            _take(scan, row, prev, warmup_end, gap_min_s)
            buckets.add(row)
            prev = row
    buckets.flush()
    scan.fit_samples = buckets.out
    return scan


def _take(
    scan: SampleScan, row: SampleRow, prev: SampleRow | None, warmup_end: float, gap_min_s: float
) -> None:
    t, pid, rss, heap, cpu_u, cpu_s, mem = row
    scan.count += 1
    if scan.first_t is None:
        scan.first_t = t
    scan.last_t = t
    scan.t.append(t)
    scan.rss.append(_NAN if rss is None else rss)
    scan.heap.append(_NAN if heap is None else heap)
    if rss is not None:
        scan.readable += 1
        r = float(rss)
        if scan.rss_peak is None or r > scan.rss_peak:
            scan.rss_peak = r
        if t >= warmup_end:
            scan.post_sum += r
            scan.post_n += 1
            if scan.post_min is None or r < scan.post_min:
                scan.post_min = r
            if scan.post_max is None or r > scan.post_max:
                scan.post_max = r
            if scan.post_first is None:
                scan.post_first = r
            scan.post_last = r
    if heap is not None:
        h = float(heap)
        if scan.heap_peak is None or h > scan.heap_peak:
            scan.heap_peak = h
        if scan.heap_first is None:
            scan.heap_first = h
        scan.heap_last = h
    if mem is not None:
        scan.memories_last = int(mem)
    if prev is None:
        return
    pt, ppid = prev[0], prev[1]
    if t - pt > gap_min_s:
        scan.gaps.append((pt, t))
    if pid is None or ppid is None:
        return
    if pid != ppid:
        scan.pid_changes.append((t, int(ppid), int(pid)))
    elif cpu_u is not None and cpu_s is not None and prev[4] is not None and prev[5] is not None:
        used = (cpu_u + cpu_s) - (prev[4] + prev[5])
        if used >= 0 and not math.isnan(used):
            scan.cpu_s += used
            scan.cpu_wall_s += t - pt
