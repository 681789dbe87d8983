"""HDR-histogram statistics per operation, kept per interval and mergeable.

Every finished request lands in :meth:`StatsHub.on_result`, which records three
latencies (response = done - intended, service = done - sent, schedule lag =
sent - intended) into the *current interval's* histograms. :meth:`StatsHub.roll`
closes the interval: its histograms are encoded into an
:class:`~soakd.model.IntervalRecord` (for the run store), added into the run
totals and reset in place. Only the current-interval and total histograms live in
memory, so memory is bounded whatever the run length; everything older is read
back from stored records and merged (:func:`summarize`, :func:`p99_series`).

Histograms hold MICROseconds from 1 us to 1 h at 3 significant digits (~190 KB
each). Values above 1 h are clamped and counted; negative values (a clock that
went backwards) are recorded as 0.
"""

from __future__ import annotations

import bisect
import ctypes
import itertools
import math
import operator
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

from soakd.model import Clock, IntervalRecord, Op, OpResult, Outcome

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # 1 h
SIGNIFICANT_DIGITS = 3
_SUMMARY_PERCENTILES = (50.0, 95.0, 99.0, 99.9)
#: Per histogram layout: the midpoint of every counter's value range (one list
#: of ~23k ints for soakd's single layout, built on first use).
_MIDPOINTS: dict[tuple[int, int, int], list[int]] = {}


class Histogram:
    """A latency histogram in microseconds (a thin, typed wrapper over ``hdrh``)."""

    __slots__ = ("_h", "_half", "_half_mag", "_mask", "_shift", "_unit", "clamped")

    def __init__(self, _inner: HdrHistogram | None = None) -> None:
        h: HdrHistogram = (
            _inner
            if _inner is not None
            else HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        )
        self._h = h
        self.clamped = 0  # values above HIGHEST_US recorded as HIGHEST_US (not encoded)
        # hdrh's own record_value costs ~1.2 us (five method calls and a bin()
        # string per value); record_ns does the same bucket arithmetic inline with
        # int.bit_length(), ~3x cheaper, and it runs three times per request.
        self._mask: int = h.sub_bucket_mask
        self._unit: int = h.unit_magnitude
        self._half_mag: int = h.sub_bucket_half_count_magnitude
        self._half: int = h.sub_bucket_half_count
        self._shift: int = h.unit_magnitude + h.sub_bucket_half_count_magnitude + 1

    @property
    def count(self) -> int:
        return int(self._h.total_count)

    def record_ns(self, ns: int) -> None:
        """Record one duration given in nanoseconds (rounded to the nearest microsecond)."""
        us = (ns + 500) // 1000
        if us < 0:
            us = 0
        elif us > HIGHEST_US:
            us = HIGHEST_US
            self.clamped += 1
        h = self._h
        # Same index as HdrHistogram._counts_index_for(us) (bit_length == 64 - clz).
        bucket = (us | self._mask).bit_length() - self._shift
        h.counts[((bucket + 1) << self._half_mag) + (us >> (bucket + self._unit)) - self._half] += 1
        h.total_count += 1
        # Plain ifs, not max()/min(): no call and no store on the common path.
        if us > h.max_value:  # noqa: PLR1730
            h.max_value = us
        if us < h.min_value:  # noqa: PLR1730
            h.min_value = us

    def merge(self, other: Histogram) -> None:
        """Add every value of ``other`` into this histogram (C-speed array add)."""
        if other._h.total_count:
            self._h.add(other._h)
        self.clamped += other.clamped

    def percentile_ms(self, q: float) -> float:
        """The value at percentile ``q`` (0..100) in milliseconds; 0.0 when empty."""
        return self.percentiles_ms((q,))[q]

    def percentiles_ms(self, qs: Sequence[float]) -> dict[float, float]:
        """Several percentiles at once, with hdrh's semantics (highest equivalent value).

        hdrh walks all 23k counters with a method call each (~10 ms a percentile
        set); a C-speed running sum plus bisect gives the same answer in ~1 ms,
        which matters because summaries run on the event loop.
        """
        total = self._h.total_count
        if not total:
            return dict.fromkeys(qs, 0.0)
        cumulative = list(itertools.accumulate(self._used_counts()))
        result: dict[float, float] = {}
        for q in qs:
            target = max(int(min(q, 100.0) * total / 100 + 0.5), 1)
            index = bisect.bisect_left(cumulative, target)
            lowest, size = self._index_range(index)
            result[q] = float(lowest + size - 1 if q else lowest) / 1000.0
        return result

    def max_ms(self) -> float:
        if not self._h.total_count:
            return 0.0
        return float(self._h.get_max_value()) / 1000.0

    def mean_ms(self) -> float:
        """Mean in milliseconds, from bucket midpoints (hdrh's definition)."""
        total_count = self._h.total_count
        if not total_count:
            return 0.0
        # hdrh's get_mean_value builds an iterator object per bucket (~40 ms for
        # 50k distinct values); a C-speed dot product with cached midpoints is ~1 ms.
        # map() stops at the shorter list: only the counters in use are read.
        total = sum(map(operator.mul, self._used_counts(), self._midpoints()))
        return float(total) / float(total_count) / 1000.0

    def _midpoints(self) -> list[int]:
        """The midpoint of every counter's value range, cached per histogram layout."""
        key = (self._unit, self._half_mag, self._h.counts_len)
        cached = _MIDPOINTS.get(key)
        if cached is None:
            cached = []
            for index in range(self._h.counts_len):
                lowest, size = self._index_range(index)
                cached.append(lowest + (size >> 1))
            _MIDPOINTS[key] = cached
        return cached

    def _used_counts(self) -> list[int]:
        """The counters up to the highest one in use (a C-speed copy)."""
        h = self._h
        used: list[int] = h.counts[: h.get_counts_array_index(h.max_value) + 1]
        return used

    def _index_range(self, index: int) -> tuple[int, int]:
        """(lowest value, width) of the values counted at ``index`` (hdrh's layout)."""
        bucket = (index >> self._half_mag) - 1
        sub = (index & (self._half - 1)) + self._half
        if bucket < 0:
            sub -= self._half
            bucket = 0
        shift = bucket + self._unit
        return sub << shift, 1 << shift

    def encode(self) -> bytes:
        """The standard compressed, base64 HDR encoding (readable by other HDR tools)."""
        blob = self._h.encode()
        return blob if isinstance(blob, bytes) else str(blob).encode("ascii")

    @classmethod
    def decode(cls, blob: bytes) -> Histogram:
        return cls(HdrHistogram.decode(blob))

    def reset(self) -> None:
        """Empty the histogram in place (no new allocation, so memory stays flat)."""
        h = self._h
        # hdrh's reset() zeroes the 23k counters in a Python loop (~1 ms); memset is ~1 us.
        ctypes.memset(ctypes.addressof(h.counts), 0, ctypes.sizeof(h.counts))
        h.total_count = 0
        h.min_value = sys.maxsize
        h.max_value = 0
        h.start_time_stamp_msec = sys.maxsize
        h.end_time_stamp_msec = 0
        self.clamped = 0


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles of one histogram, in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float

    def as_dict(self) -> dict[str, float]:
        """The ``latency_ms{...}`` shape of report.json."""
        return {
            "p50": self.p50_ms,
            "p95": self.p95_ms,
            "p99": self.p99_ms,
            "p999": self.p999_ms,
            "max": self.max_ms,
            "mean": self.mean_ms,
        }

    @classmethod
    def of(cls, hist: Histogram) -> LatencySummary:
        p = hist.percentiles_ms(_SUMMARY_PERCENTILES)
        return cls(
            count=hist.count,
            p50_ms=p[50.0],
            p95_ms=p[95.0],
            p99_ms=p[99.0],
            p999_ms=p[99.9],
            max_ms=hist.max_ms(),
            mean_ms=hist.mean_ms(),
        )


@dataclass(frozen=True)
class OpSummary:
    """Whole-run (or whole-window) figures for one operation."""

    op: Op
    count: int  # completed results: ok + errors
    ok: int
    errors: Mapping[str, int]
    dropped: int
    late: int
    duration_s: float
    achieved_rate: float  # completed results per second over duration_s
    latency: LatencySummary  # response time: done - intended
    service: LatencySummary  # done - sent
    lag: LatencySummary  # sent - intended


@dataclass
class _Counters:
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    late: int = 0

    def add(self, ok: int, errors: Mapping[str, int], dropped: int, late: int) -> None:
        self.ok += ok
        for key, n in errors.items():
            self.errors[key] = self.errors.get(key, 0) + n
        self.dropped += dropped
        self.late += late

    def clear(self) -> None:
        self.ok = 0
        self.errors = {}
        self.dropped = 0
        self.late = 0

    @property
    def count(self) -> int:
        return self.ok + sum(self.errors.values())


class _HistSet:
    """The three histograms of one operation."""

    __slots__ = ("lag", "response", "service")

    def __init__(self) -> None:
        self.response = Histogram()
        self.service = Histogram()
        self.lag = Histogram()

    def merge(self, other: _HistSet) -> None:
        self.response.merge(other.response)
        self.service.merge(other.service)
        self.lag.merge(other.lag)

    def reset(self) -> None:
        self.response.reset()
        self.service.reset()
        self.lag.reset()


class OpStats:
    """One operation's accumulator: the CURRENT interval plus the run totals.

    Totals hold only intervals already rolled; :meth:`summary` merges the
    current interval in on the fly (into a scratch set reused across calls).
    """

    def __init__(self, op: Op) -> None:
        self.op = op
        self.cur = _Counters()
        self.cur_hists = _HistSet()
        self.total = _Counters()
        self.total_hists = _HistSet()
        self._scratch = _HistSet()

    def record(self, r: OpResult) -> None:
        cur = self.cur
        if r.outcome is Outcome.OK:
            cur.ok += 1
        else:
            key = r.error_key
            cur.errors[key] = cur.errors.get(key, 0) + 1
        h = self.cur_hists
        h.response.record_ns(r.done_ns - r.intended_ns)
        h.service.record_ns(r.done_ns - r.sent_ns)
        h.lag.record_ns(r.sent_ns - r.intended_ns)

    def close(self, start: float, end: float) -> IntervalRecord:
        """Encode the current interval, fold it into the totals and start afresh."""
        cur, h = self.cur, self.cur_hists
        record = IntervalRecord(
            op=self.op,
            start=start,
            end=end,
            count=cur.count,
            ok=cur.ok,
            errors=dict(cur.errors),
            dropped=cur.dropped,
            late=cur.late,
            response_hist=h.response.encode(),
            service_hist=h.service.encode(),
            lag_hist=h.lag.encode(),
        )
        self.total.add(cur.ok, cur.errors, cur.dropped, cur.late)
        self.total_hists.merge(h)
        cur.clear()
        h.reset()
        return record

    def seed(self, record: IntervalRecord) -> None:
        """Fold a stored interval into the totals (after a resume)."""
        self.total.add(record.ok, record.errors, record.dropped, record.late)
        self.total_hists.response.merge(Histogram.decode(record.response_hist))
        self.total_hists.service.merge(Histogram.decode(record.service_hist))
        self.total_hists.lag.merge(Histogram.decode(record.lag_hist))

    def summary(self, duration_s: float) -> OpSummary:
        s = self._scratch
        s.reset()
        s.merge(self.total_hists)
        s.merge(self.cur_hists)
        both = _Counters()
        both.add(self.total.ok, self.total.errors, self.total.dropped, self.total.late)
        both.add(self.cur.ok, self.cur.errors, self.cur.dropped, self.cur.late)
        count = both.count
        return OpSummary(
            op=self.op,
            count=count,
            ok=both.ok,
            errors=dict(both.errors),
            dropped=both.dropped,
            late=both.late,
            duration_s=duration_s,
            achieved_rate=count / duration_s if duration_s > 0 else 0.0,
            latency=LatencySummary.of(s.response),
            service=LatencySummary.of(s.service),
            lag=LatencySummary.of(s.lag),
        )


class StatsHub:
    """Per-operation statistics for the whole run; a :class:`~soakd.model.ResultSink`."""

    def __init__(self, ops: Sequence[Op], clock: Clock) -> None:
        self._clock = clock
        self._ops: dict[Op, OpStats] = {op: OpStats(op) for op in ops}
        Histogram()._midpoints()  # build the cache now (~25 ms once), not mid-run
        self._started_wall = clock.wall()
        self._interval_start = self._started_wall

    def _get(self, op: Op) -> OpStats:
        stats = self._ops.get(op)
        if stats is None:  # an op nobody declared: keep it rather than lose data (Op is finite)
            stats = self._ops[op] = OpStats(op)
        return stats

    @property
    def ops(self) -> tuple[Op, ...]:
        return tuple(self._ops)

    def on_result(self, r: OpResult) -> None:
        """Hot path: ~4 us (three histogram records and a counter)."""
        stats = self._ops.get(r.op)
        (stats if stats is not None else self._get(r.op)).record(r)

    def on_dropped(self, op: Op, intended_ns: int) -> None:
        self._get(op).cur.dropped += 1

    def on_late(self, op: Op) -> None:
        self._get(op).cur.late += 1

    def roll(self) -> list[IntervalRecord]:
        """Close the current interval of every operation and start the next one."""
        end = self._clock.wall()
        start = self._interval_start
        self._interval_start = end
        return [stats.close(start, end) for stats in self._ops.values()]

    def totals(self, op: Op) -> OpSummary:
        """Whole-run figures for ``op`` (rolled intervals plus the current one)."""
        duration = max(0.0, self._clock.wall() - self._started_wall)
        return self._get(op).summary(duration)

    def restore(self, records: Sequence[IntervalRecord], started_wall: float) -> None:
        """Seed the totals from stored records after a resume; the next interval starts now."""
        for record in records:
            self._get(record.op).seed(record)
        self._started_wall = started_wall
        self._interval_start = self._clock.wall()


def merge_blobs(blobs: Iterable[bytes]) -> Histogram:
    """Decode and merge stored histogram encodings into one histogram."""
    merged = Histogram()
    for blob in blobs:
        merged.merge(Histogram.decode(blob))
    return merged


def summarize(op: Op, records: Sequence[IntervalRecord]) -> OpSummary:
    """Figures for ``op`` over stored interval records (records of other ops are ignored).

    ``duration_s`` is the sum of interval widths, so gaps while soakd was down do
    not dilute ``achieved_rate``.
    """
    mine = [r for r in records if r.op == op]
    counters = _Counters()
    for r in mine:
        counters.add(r.ok, r.errors, r.dropped, r.late)
    duration = sum(max(0.0, r.end - r.start) for r in mine)
    count = sum(r.count for r in mine)
    return OpSummary(
        op=op,
        count=count,
        ok=counters.ok,
        errors=dict(counters.errors),
        dropped=counters.dropped,
        late=counters.late,
        duration_s=duration,
        achieved_rate=count / duration if duration > 0 else 0.0,
        latency=LatencySummary.of(merge_blobs(r.response_hist for r in mine)),
        service=LatencySummary.of(merge_blobs(r.service_hist for r in mine)),
        lag=LatencySummary.of(merge_blobs(r.lag_hist for r in mine)),
    )


def p99_series(
    records: Sequence[IntervalRecord], window_s: float
) -> list[tuple[float, float, int]]:
    """``(window end, p99 response ms, count)`` per ``window_s`` window, oldest first.

    Windows are aligned on the earliest record's start; a record belongs to the
    window holding its end, and the window's reported end is the latest record end
    in it (the time the data actually covers). Records of every op passed are
    merged together: filter by op first for a per-op series. Windows without
    records are omitted.
    """
    if window_s <= 0:
        raise ValueError(f"window_s must be positive, got {window_s}")
    if not records:
        return []
    origin = min(r.start for r in records)
    windows: dict[int, list[IntervalRecord]] = {}
    for r in records:
        # ceil-1: a record ending exactly on a boundary belongs to the window it
        # closes; the epsilon absorbs float noise in sums of interval widths.
        index = max(0, math.ceil((r.end - origin) / window_s - 1e-9) - 1)
        windows.setdefault(index, []).append(r)
    series: list[tuple[float, float, int]] = []
    for index in sorted(windows):
        group = windows[index]
        hist = merge_blobs(r.response_hist for r in group)
        series.append((max(r.end for r in group), hist.percentile_ms(99.0), hist.count))
    return series


def quantile_bounds(q: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Percentiles bracketing the ``q``-th percentile of ``n`` samples with ~95 % confidence.

    Distribution-free: the order statistics at ranks ``n*p -+ z*sqrt(n*p*(1-p))``
    bracket the true quantile, so no latency model is assumed. With a week of
    samples the bracket is tight; in a short stretch it keeps noise from being
    called drift.
    """
    p = q / 100.0
    half = 100.0 * z * math.sqrt(p * (1.0 - p) / max(n, 1))
    return max(0.0, q - half), min(100.0, q + half)
