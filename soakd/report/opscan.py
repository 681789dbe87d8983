"""One streaming pass per operation over its stored interval records.

Each record's response histogram is merged into its chart window and, through
the window, into the run total; its service histogram goes straight into the
run total. Records are read a few hours at a time, so memory stays flat however
long the run. The baseline and last stretches (for the P99 drift) are read
again afterwards: a few hundred records, cheaper than keeping extra mergers.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
from array import array
from collections.abc import Iterator, Sequence

from soakd.model import Op, RunReader
from soakd.report.fastread import IntervalRow, interval_row, interval_rows
from soakd.report.hist import Merger
from soakd.report.lttb import downsample
from soakd.report.model import LatencyPoint, OpReport, Stretch
from soakd.rules.evaluate import PERF_MIN_COUNT
from soakd.stats import quantile_bounded_above, quantile_bounds

CHUNK_S = 6 * 3600.0
#: A third of the last stretch needs this many requests for its P99 to count
#: (the alert rule's own minimum per third).
THIRD_MIN_COUNT = PERF_MIN_COUNT // 3
#: Points per throughput series in the HTML charts.
RATE_POINTS = 800


def iter_records(
    reader: RunReader, conn: sqlite3.Connection | None, op: Op, start: float, end: float
) -> Iterator[list[IntervalRow]]:
    """``op``'s records ordered by start, a window at a time (no record twice)."""
    edges = [-math.inf]
    edge = start + CHUNK_S
    while edge < end:
        edges.append(edge)
        edge += CHUNK_S
    edges.append(math.inf)
    for lo, hi in itertools.pairwise(edges):
        yield _window(reader, conn, op, lo, hi)


def _window(
    reader: RunReader, conn: sqlite3.Connection | None, op: Op, lo: float, hi: float
) -> list[IntervalRow]:
    """Records with ``lo <= start < hi``."""
    if conn is not None:
        return interval_rows(conn, op, lo, hi)
    since = None if math.isinf(lo) else lo
    until = None if math.isinf(hi) else hi
    return [interval_row(r) for r in reader.intervals(op, since, until) if lo <= r.start < hi]


def _stretch_p99(
    reader: RunReader,
    conn: sqlite3.Connection | None,
    op: Op,
    stretch: Stretch | None,
    pad_s: float,
    *,
    thirds: bool = False,
) -> tuple[float | None, int, float | None, float | None, tuple[float, ...]]:
    """P99 (ms), count, the P99's 95 % bounds (ms) of ``op`` in ``stretch``; with ``thirds``,
    each third's P99 too.

    The thirds are consecutive runs of the stretch's records (as the alert rule
    splits its window); empty when a third has fewer than ``THIRD_MIN_COUNT``.
    Each record is decoded once: the thirds are merged into the whole.
    """
    if stretch is None:
        return None, 0, None, None, ()
    rows = [
        r
        for r in _window(reader, conn, op, stretch.start - pad_s, stretch.end + 1e-6)
        if stretch.start <= (r[0] + r[1]) / 2.0 <= stretch.end
    ]
    n, k = len(rows), 3 if thirds else 1
    parts = [Merger() for _ in range(k)]
    for i, part in enumerate(parts):
        for r in rows[i * n // k : (i + 1) * n // k]:
            part.add_blob(r[7])
    judged = thirds and all(part.count >= THIRD_MIN_COUNT for part in parts)
    third_p99s = tuple(part.percentiles_ms((99.0,))[0] for part in parts) if judged else ()
    m = parts[0]  # the thirds' P99s are read: now fold them into the whole
    for part in parts[1:]:
        m.add_merger(part)
    if m.count == 0:
        return None, 0, None, None, ()
    lo_q, hi_q = quantile_bounds(99.0, m.count)
    p99, lo, hi = m.percentiles_ms((99.0, lo_q, hi_q))
    return p99, m.count, lo, hi, third_p99s


class _Acc:
    """Running state of one operation's pass."""

    def __init__(self, origin: float, window_s: float) -> None:
        self.origin = origin
        self.window_s = window_s
        self.total = Merger()
        self.service = Merger()
        self.window = Merger()
        self.window_key: int | None = None
        self.window_end = 0.0
        self.points: list[LatencyPoint] = []
        self.count = self.ok = self.dropped = self.late = 0
        self.errors: dict[str, int] = {}
        self.covered = 0.0
        self.rate_t = array("d")
        self.ok_rate = array("d")
        self.err_rate = array("d")
        self.drop_rate = array("d")

    def add(self, r: IntervalRow) -> None:
        start, end, count, ok, errors, dropped, late, response, service = r
        key = int(((start + end) / 2.0 - self.origin) // self.window_s)
        if key != self.window_key:
            self.close_window()
            self.window_key = key
        self.window.add_blob(response)
        self.window_end = max(self.window_end, end)
        self.service.add_blob(service)
        self.count += count
        self.ok += ok
        self.dropped += dropped
        self.late += late
        for k, n in errors.items():
            self.errors[k] = self.errors.get(k, 0) + n
        width = end - start
        if width > 0:
            self.covered += width
            self.rate_t.append(end)
            self.ok_rate.append(ok / width)
            self.err_rate.append((count - ok) / width)
            self.drop_rate.append(dropped / width)

    def close_window(self) -> None:
        w = self.window
        if w.count:
            p50, p99, p999 = w.percentiles_ms((50.0, 99.0, 99.9))
            self.points.append(LatencyPoint(self.window_end, p50, p99, p999, w.count))
            self.total.add_merger(w)
        w.reset()
        self.window_end = 0.0


def scan_op(
    reader: RunReader,
    conn: sqlite3.Connection | None,
    op: Op,
    *,
    start: float,
    end: float,
    window_s: float,
    target_rate: float | None,
    baseline: Stretch | None,
    last: Stretch | None,
    stats_interval_s: float,
) -> OpReport | None:
    """Reduce ``op``'s records to an :class:`OpReport` (None: no records at all).

    ``conn``: a :func:`~soakd.report.fastread.open_store` connection, or None to
    read through the RunReader protocol.
    """
    acc = _Acc(start, window_s)
    seen = False
    for chunk in iter_records(reader, conn, op, start, end):
        for r in chunk:
            seen = True
            acc.add(r)
    if not seen:
        return None
    acc.close_window()
    base_p99, base_n, _, base_hi, _ = _stretch_p99(reader, conn, op, baseline, stats_interval_s)
    last_p99, last_n, last_lo, _, thirds = _stretch_p99(
        reader, conn, op, last, stats_interval_s, thirds=True
    )
    return OpReport(
        op=op.value,
        target_rate=target_rate,
        achieved_rate=acc.count / acc.covered if acc.covered > 0 else 0.0,
        count=acc.count,
        ok=acc.ok,
        errors=dict(sorted(acc.errors.items())),
        dropped=acc.dropped,
        late=acc.late,
        covered_s=acc.covered,
        latency=acc.total.summary(),
        service=acc.service.summary(),
        baseline=baseline,
        baseline_p99_ms=base_p99,
        baseline_count=base_n,
        baseline_p99_hi_ms=base_hi,
        baseline_p99_bounded=quantile_bounded_above(99.0, base_n),
        last=last,
        last_p99_ms=last_p99,
        last_count=last_n,
        last_p99_lo_ms=last_lo,
        last_thirds_p99_ms=thirds,
        latency_series=tuple(acc.points),
        ok_rate_series=_ds(acc.rate_t, acc.ok_rate),
        error_rate_series=_ds(acc.rate_t, acc.err_rate),
        drop_rate_series=_ds(acc.rate_t, acc.drop_rate),
    )


def _ds(xs: Sequence[float], ys: Sequence[float]) -> tuple[tuple[float, float], ...]:
    return tuple(downsample(xs, ys, RATE_POINTS))
