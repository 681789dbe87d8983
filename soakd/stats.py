"""HDR-histogram statistics per operation, kept per interval and mergeable.

Every finished request lands in :meth:`StatsHub.on_result`, which records three
latencies (response = done - intended, service = done - sent, schedule lag =
sent - intended) into the *current interval's* histograms. Closing an interval
encodes its histograms into an :class:`~soakd.model.IntervalRecord` (for the run
store) and adds them into the run totals. Only the current-interval, one spare
and the total histograms live in memory, so memory is bounded whatever the run
length; everything older is read back from stored records and merged
(:func:`summarize`, :func:`p99_series`).

Threads. Recording happens on the event loop only. :meth:`StatsHub.roll_async`
swaps the live histograms for the spare ones on the loop (a few pointer swaps,
so no result is lost or counted twice) and hands the detached ones to a worker
thread, which encodes them, merges them into the totals and publishes
immutable whole-run :attr:`StatsHub.summaries`. The worker sleeps briefly between
its steps (none holds the GIL for more than ~0.2 ms): a CPU-bound thread would
otherwise keep the GIL until the loop had waited a whole switch interval (5 ms).
The totals are written only by that worker (rolls close one after another) and
read by :meth:`StatsHub.totals` under a lock, together with the detached
intervals not merged yet.

Histograms hold MICROseconds from 1 us to 1 h at 3 significant digits (~190 KB
each). Values above 1 h are clamped and counted; negative values (a clock that
went backwards) are recorded as 0.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from soakd.hdr import Histogram
from soakd.model import Clock, IntervalRecord, Op, OpResult, Outcome

_SUMMARY_PERCENTILES = (50.0, 95.0, 99.0, 99.9)
#: How long the roll worker sleeps between its steps (each < ~0.2 ms of GIL-holding
#: work, see bench/stats_roll.py): long enough for a waiting event loop to take the
#: GIL (a zero sleep may hand it straight back to the worker), short enough that a
#: roll of 12 histograms still takes only tens of milliseconds.
WORKER_PAUSE_S = 0.0002


def _no_pause() -> None:
    pass


def _worker_pause() -> None:
    time.sleep(WORKER_PAUSE_S)


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


@dataclass(eq=False, slots=True)
class _Part:
    """One operation's closed interval, detached on the loop and closed by the worker.

    The loop no longer writes ``counters`` or ``hists`` once detached; the worker
    reads them, merges them into the totals (setting ``merged`` under the hub's
    lock), then resets ``hists`` for reuse as the operation's spare set.
    """

    stats: OpStats
    counters: _Counters
    hists: _HistSet
    merged: bool = False


@dataclass(eq=False, slots=True)
class _Roll:
    """Every operation's interval ``[start, end]``, closed together."""

    start: float
    end: float
    started_wall: float  # the run's start, for the summaries' duration
    parts: list[_Part]


class OpStats:
    """One operation's accumulator: the CURRENT interval plus the run totals.

    ``cur`` / ``cur_hists`` belong to the event loop (recording); ``total`` /
    ``total_hists`` are written only while closing an interval (by the roll
    worker, or inline by :meth:`StatsHub.roll`) and read under the hub's lock.
    """

    def __init__(self, op: Op) -> None:
        self.op = op
        self.cur = _Counters()
        self.cur_hists = _HistSet()
        self.total = _Counters()
        self.total_hists = _HistSet()
        # Empty sets swapped in at the next roll (one is enough unless rolls overlap).
        self._spares: list[_HistSet] = [_HistSet()]
        self._scratch: _HistSet | None = None  # for summary(); built on first use

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

    def detach(self) -> _Part:
        """Swap the current interval for an empty one (loop thread; no allocation usually)."""
        part = _Part(self, self.cur, self.cur_hists)
        self.cur = _Counters()
        self.cur_hists = self._spares.pop() if self._spares else _HistSet()
        return part

    def reuse(self, hists: _HistSet) -> None:
        """Take back a detached set the worker has merged and reset (loop thread)."""
        self._spares.append(hists)

    def seed(self, record: IntervalRecord) -> None:
        """Fold a stored interval into the totals (after a resume)."""
        self.total.add(record.ok, record.errors, record.dropped, record.late)
        self.total_hists.response.merge(Histogram.decode(record.response_hist))
        self.total_hists.service.merge(Histogram.decode(record.service_hist))
        self.total_hists.lag.merge(Histogram.decode(record.lag_hist))

    def summary(self, duration_s: float, pending: Sequence[_Part] = ()) -> OpSummary:
        """Totals plus ``pending`` (detached, not merged yet) plus the current interval."""
        s = self._scratch
        if s is None:
            s = self._scratch = _HistSet()
        s.reset()
        s.merge(self.total_hists)
        both = _Counters()
        both.add(self.total.ok, self.total.errors, self.total.dropped, self.total.late)
        for part in pending:
            s.merge(part.hists)
            c = part.counters
            both.add(c.ok, c.errors, c.dropped, c.late)
        s.merge(self.cur_hists)
        both.add(self.cur.ok, self.cur.errors, self.cur.dropped, self.cur.late)
        return _op_summary(self.op, both, s, duration_s)

    def total_summary(self, duration_s: float, pause: Callable[[], None]) -> OpSummary:
        """The totals alone (no scratch copy): for the roll worker, which owns them."""
        return _op_summary(self.op, self.total, self.total_hists, duration_s, pause)


def _op_summary(
    op: Op,
    counters: _Counters,
    hists: _HistSet,
    duration_s: float,
    pause: Callable[[], None] = _no_pause,
) -> OpSummary:
    count = counters.count
    latency = LatencySummary.of(hists.response)
    pause()
    service = LatencySummary.of(hists.service)
    pause()
    lag = LatencySummary.of(hists.lag)
    return OpSummary(
        op=op,
        count=count,
        ok=counters.ok,
        errors=dict(counters.errors),
        dropped=counters.dropped,
        late=counters.late,
        duration_s=duration_s,
        achieved_rate=count / duration_s if duration_s > 0 else 0.0,
        latency=latency,
        service=service,
        lag=lag,
    )


class StatsHub:
    """Per-operation statistics for the whole run; a :class:`~soakd.model.ResultSink`.

    Recording, rolling and :meth:`totals` belong to the event loop's thread
    (recording takes no lock, by design: it is the hot path); only the closing
    step of :meth:`roll_async` runs in a worker thread. :meth:`restore` may run
    in another thread before the first roll.
    """

    def __init__(self, ops: Sequence[Op], clock: Clock) -> None:
        self._clock = clock
        self._ops: dict[Op, OpStats] = {op: OpStats(op) for op in ops}
        Histogram()._midpoints()  # build the cache now (~25 ms once), not mid-run
        self._started_wall = clock.wall()
        self._interval_start = self._started_wall
        # Guards the totals against totals() reading them while the worker merges,
        # and each _Part.merged flag with them.
        self._lock = threading.Lock()
        self._inflight: list[_Roll] = []  # detached, not closed yet; oldest first
        self._tail: asyncio.Future[None] | None = None  # the last roll_async's closing
        self._outbox: list[IntervalRecord] = []  # closed, not returned yet; oldest first
        self._summaries: Mapping[Op, OpSummary] = MappingProxyType({})

    def _get(self, op: Op) -> OpStats:
        stats = self._ops.get(op)
        if stats is None:  # an op nobody declared: keep it rather than lose data (Op is finite)
            stats = self._ops[op] = OpStats(op)
        return stats

    @property
    def ops(self) -> tuple[Op, ...]:
        return tuple(self._ops)

    @property
    def summaries(self) -> Mapping[Op, OpSummary]:
        """Whole-run figures per op as of the last :meth:`roll_async` (read-only, never mutated)."""
        return self._summaries

    @property
    def rolling(self) -> bool:
        """True while a :meth:`roll_async` is detached and not closed yet."""
        return bool(self._inflight)

    def on_result(self, r: OpResult) -> None:
        """Hot path: ~4 us (three histogram records and a counter)."""
        stats = self._ops.get(r.op)
        (stats if stats is not None else self._get(r.op)).record(r)

    def on_dropped(self, op: Op, intended_ns: int) -> None:
        self._get(op).cur.dropped += 1

    def on_late(self, op: Op) -> None:
        self._get(op).cur.late += 1

    def _detach(self) -> _Roll:
        """End the current interval now: swap every op's live set for its spare (~10 us)."""
        end = self._clock.wall()
        start, self._interval_start = self._interval_start, end
        parts = [stats.detach() for stats in self._ops.values()]
        return _Roll(start, end, self._started_wall, parts)

    def _close(
        self, roll: _Roll, pause: Callable[[], None], summarize: bool
    ) -> tuple[list[IntervalRecord], dict[Op, OpSummary]]:
        """Encode, merge into the totals and (optionally) summarize: the worker's part.

        Touches only the detached parts and the totals, which nothing else writes
        while a roll is in flight; ``pause`` runs between steps to let the loop in.
        """
        records: list[IntervalRecord] = []
        for part in roll.parts:
            c, h = part.counters, part.hists
            response = h.response.encode()
            pause()
            service = h.service.encode()
            pause()
            lag = h.lag.encode()
            pause()
            records.append(
                IntervalRecord(
                    op=part.stats.op,
                    start=roll.start,
                    end=roll.end,
                    count=c.count,
                    ok=c.ok,
                    errors=dict(c.errors),
                    dropped=c.dropped,
                    late=c.late,
                    response_hist=response,
                    service_hist=service,
                    lag_hist=lag,
                )
            )
        for part in roll.parts:
            pause()
            c, stats = part.counters, part.stats
            with self._lock:
                stats.total.add(c.ok, c.errors, c.dropped, c.late)
                stats.total_hists.merge(part.hists)
                part.merged = True
            part.hists.reset()
        summaries: dict[Op, OpSummary] = {}
        if summarize:
            duration = max(0.0, roll.end - roll.started_wall)
            for part in roll.parts:
                pause()
                summaries[part.stats.op] = part.stats.total_summary(duration, pause)
        return records, summaries

    def roll(self) -> list[IntervalRecord]:
        """Close the current interval of every operation inline (no thread) and start the next.

        For callers without a loop to keep responsive (tests, tools): it blocks for
        ~0.3 ms per histogram. Returns the records of any earlier :meth:`roll_async`
        whose caller was cancelled first; raises while a roll_async is in flight.
        Does not update :attr:`summaries`.
        """
        if self._inflight:
            raise RuntimeError("StatsHub.roll() while roll_async() is in flight")
        roll = self._detach()
        records, _ = self._close(roll, _no_pause, summarize=False)
        for part in roll.parts:
            part.stats.reuse(part.hists)
        out, self._outbox = self._outbox, []
        out.extend(records)
        return out

    async def roll_async(self) -> list[IntervalRecord]:
        """Close the current interval of every operation; the heavy part runs in a thread.

        The swap happens here, on the loop, before the first await: results
        recorded from then on belong to the next interval. Encoding, merging into
        the totals and the whole-run :attr:`summaries` (published when done) run
        in a worker thread, one roll after another.

        Returns every closed record not returned yet, oldest first. Cancelling the
        caller does not cancel the closing: its records are returned by the next
        call (which waits for it), so none is lost or reordered.
        """
        roll = self._detach()
        self._inflight.append(roll)
        closing = asyncio.ensure_future(self._close_after(roll, self._tail))
        self._tail = closing
        await asyncio.shield(closing)
        out, self._outbox = self._outbox, []
        return out

    async def _close_after(self, roll: _Roll, previous: asyncio.Future[None] | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait((previous,))  # rolls close in order; its failure is its caller's
        try:
            records, summaries = await asyncio.to_thread(
                self._close, roll, _worker_pause, summarize=True
            )
        except asyncio.CancelledError:
            raise  # the loop is going away; the worker may still finish: leave its state
        except BaseException:
            # A bug, not a condition: the interval never reaches the store (the
            # totals may hold the parts merged before the failure).
            self._inflight.remove(roll)
            raise
        self._inflight.remove(roll)
        for part in roll.parts:
            part.stats.reuse(part.hists)
        self._outbox.extend(records)
        self._summaries = MappingProxyType(summaries)

    def totals(self, op: Op) -> OpSummary:
        """Whole-run figures for ``op`` (rolled intervals plus the current one), computed now.

        ~3 ms on the calling thread; while a roll's worker merges it may wait for
        the lock (briefly: the merge of one op). Intervals detached by an in-flight
        roll and not merged yet are included, so nothing is missing or doubled.
        Prefer :attr:`summaries` on the event loop.
        """
        duration = max(0.0, self._clock.wall() - self._started_wall)
        stats = self._get(op)
        with self._lock:
            pending = [
                part
                for roll in self._inflight
                for part in roll.parts
                if part.stats is stats and not part.merged
            ]
            return stats.summary(duration, pending)

    def restore(self, records: Sequence[IntervalRecord], started_wall: float) -> None:
        """Seed the totals from stored records after a resume; the next interval starts now.

        Durations (and so achieved rates) count the stored records' time plus
        the time from now on, never the gap (at most ``now - started_wall``).

        Called before any roll; it raises while a roll is in flight, because the
        worker owns the totals then.
        """
        if self._inflight:
            raise RuntimeError("StatsHub.restore() while a roll is in flight")
        ran: dict[Op, float] = {}
        for record in records:
            self._get(record.op).seed(record)
            ran[record.op] = ran.get(record.op, 0.0) + max(0.0, record.end - record.start)
        now = self._clock.wall()
        # Rates are over time actually run: the stored intervals' widths, then
        # from now on. The gap while soakd was down is not time it drove load.
        ran_s = min(max(ran.values(), default=0.0), max(0.0, now - started_wall))
        self._started_wall = now - ran_s
        self._interval_start = now


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
    hists = _HistSet()
    hists.response = merge_blobs(r.response_hist for r in mine)
    hists.service = merge_blobs(r.service_hist for r in mine)
    hists.lag = merge_blobs(r.lag_hist for r in mine)
    duration = sum(max(0.0, r.end - r.start) for r in mine)
    return _op_summary(op, counters, hists, duration)


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


def quantile_bounded_above(q: float, n: int, z: float = 1.96) -> bool:
    """Whether ``n`` samples bound the ``q``-th percentile from above at ~95 %.

    With too few samples the upper bracket of :func:`quantile_bounds` falls
    past the largest sample (for P99: fewer than ~380), so the sample cannot
    say how high the true quantile may be.
    """
    p = q / 100.0
    return q + 100.0 * z * math.sqrt(p * (1.0 - p) / max(n, 1)) <= 100.0


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
