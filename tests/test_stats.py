"""Tests for soakd.stats: HDR histograms, interval rolling, summaries and windowed series."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import threading
from collections.abc import Iterator, Sequence

import pytest
from hdrh.histogram import HdrHistogram

from soakd import stats as stats_module
from soakd.clock import FakeClock
from soakd.model import IntervalRecord, Op, OpResult, Outcome
from soakd.stats import (
    Histogram,
    LatencySummary,
    StatsHub,
    merge_blobs,
    p99_series,
    summarize,
)
from soakd.testing import async_wait_for

MS = 1_000_000
SEC = 1_000_000_000


def result(
    op: Op = Op.STORE,
    *,
    intended: int = 0,
    lag_ms: float = 1.0,
    service_ms: float = 10.0,
    outcome: Outcome = Outcome.OK,
    status: int | None = 200,
) -> OpResult:
    sent = intended + int(lag_ms * MS)
    return OpResult(
        op=op,
        space="s0",
        intended_ns=intended,
        sent_ns=sent,
        done_ns=sent + int(service_ms * MS),
        outcome=outcome,
        status=status,
    )


def test_percentiles_of_known_data() -> None:
    """Values 1..1000 ms give p50 500, p99 990, max 1000 and mean 500.5 ms within 0.1 %."""
    h = Histogram()
    for i in range(1, 1001):
        h.record_ns(i * MS)
    assert h.count == 1000
    assert h.percentile_ms(50) == pytest.approx(500, rel=1e-3)
    assert h.percentile_ms(99) == pytest.approx(990, rel=1e-3)
    assert h.percentile_ms(99.9) == pytest.approx(999, rel=1e-3)
    assert h.max_ms() == pytest.approx(1000, rel=1e-3)
    assert h.mean_ms() == pytest.approx(500.5, rel=1e-3)
    assert h.percentiles_ms([50.0, 99.0]) == {
        50.0: h.percentile_ms(50),
        99.0: h.percentile_ms(99),
    }


def test_small_values_keep_microsecond_resolution() -> None:
    """Sub-millisecond values are kept to the microsecond (rounded to nearest)."""
    h = Histogram()
    h.record_ns(1_499)  # 1 us
    h.record_ns(250_400)  # 250 us
    assert h.percentile_ms(100) == pytest.approx(0.25, abs=0.0005)
    assert h.percentile_ms(50) == pytest.approx(0.001, abs=0.0005)


def test_inline_record_matches_hdrh_record_value() -> None:
    """record_ns puts every value in the same bucket as hdrh's own record_value."""
    rng = random.Random(11)
    values = [int(rng.lognormvariate(14, 3)) for _ in range(50_000)]
    values += [0, 499, 500, 2_047_000, 2_048_000, 2_049_000, 4_096_000, 10**15, -5]
    ours, reference = Histogram(), HdrHistogram(1, 3_600_000_000, 3)
    for v in values:
        ours.record_ns(v)
        reference.record_value(max(0, min((v + 500) // 1000, 3_600_000_000)))
    assert ours.encode() == reference.encode()
    assert ours.count == reference.get_total_count()
    assert ours.max_ms() * 1000 == reference.get_max_value()


def test_percentiles_and_mean_match_hdrh() -> None:
    """Our percentile and mean arithmetic gives exactly hdrh's answers."""
    rng = random.Random(5)
    ours, reference = Histogram(), HdrHistogram(1, 3_600_000_000, 3)
    for _ in range(30_000):
        v = int(rng.lognormvariate(13, 2.5))
        ours.record_ns(v)
        reference.record_value(max(0, min((v + 500) // 1000, 3_600_000_000)))
    qs = [0.0, 0.1, 10.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0]
    expected = reference.get_percentile_to_value_dict(qs)
    assert ours.percentiles_ms(qs) == {q: expected[q] / 1000.0 for q in qs}
    assert ours.percentile_ms(99.0) == reference.get_value_at_percentile(99.0) / 1000.0
    assert ours.mean_ms() == pytest.approx(reference.get_mean_value() / 1000.0, rel=1e-12)


def test_empty_histogram_reads_zero() -> None:
    """An empty histogram reports 0.0 everywhere and a count of 0."""
    h = Histogram()
    assert h.count == 0
    assert h.percentile_ms(99) == 0.0
    assert h.max_ms() == 0.0
    assert h.mean_ms() == 0.0
    assert LatencySummary.of(h) == LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_clamping_and_negative_values() -> None:
    """Values over 1 h are clamped to 1 h and counted; negative values are recorded as 0."""
    h = Histogram()
    h.record_ns(2 * 3600 * SEC)
    h.record_ns(-5 * MS)
    assert h.clamped == 1
    assert h.count == 2
    assert h.max_ms() == pytest.approx(3_600_000, rel=1e-3)
    assert h.percentile_ms(50) == 0.0


def test_merge_equals_recording_everything() -> None:
    """Merging two histograms gives the same distribution as recording all values in one."""
    rng = random.Random(7)
    values = [int(rng.lognormvariate(16, 1.5)) for _ in range(20_000)]
    a, b, both = Histogram(), Histogram(), Histogram()
    for i, v in enumerate(values):
        (a if i % 3 else b).record_ns(v)
        both.record_ns(v)
    a.merge(b)
    assert a.count == both.count == 20_000
    qs = [0.0, 1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0]
    assert a.percentiles_ms(qs) == both.percentiles_ms(qs)
    assert a.max_ms() == both.max_ms()
    assert a.encode() == both.encode()


def test_encode_decode_round_trip() -> None:
    """decode(encode(h)) keeps count, percentiles and max; an empty histogram round-trips too."""
    h = Histogram()
    for i in range(1, 5000):
        h.record_ns(i * 37_000)
    back = Histogram.decode(h.encode())
    assert back.count == h.count
    assert back.percentiles_ms([50.0, 99.0, 99.9]) == h.percentiles_ms([50.0, 99.0, 99.9])
    assert back.max_ms() == h.max_ms()
    assert Histogram.decode(Histogram().encode()).count == 0


def test_reset_empties_in_place() -> None:
    """reset() empties the histogram, which then records afresh."""
    h = Histogram()
    for i in range(1, 100):
        h.record_ns(i * MS)
    h.reset()
    assert h.count == 0
    assert h.max_ms() == 0.0
    h.record_ns(3 * MS)
    assert h.count == 1
    assert h.percentile_ms(100) == pytest.approx(3, rel=1e-3)


def test_roll_closes_intervals_on_wall_clock_boundaries() -> None:
    """Each roll covers [previous roll, now] with that interval's counts only; totals keep all."""
    clock = FakeClock(wall_start=1000.0)
    hub = StatsHub([Op.STORE, Op.RECALL], clock)
    for _ in range(10):
        hub.on_result(result(Op.STORE, service_ms=10))
    hub.on_result(result(Op.STORE, outcome=Outcome.HTTP_ERROR, status=500))
    hub.on_result(result(Op.STORE, outcome=Outcome.TIMEOUT, status=None))
    hub.on_dropped(Op.STORE, 0)
    hub.on_late(Op.STORE)
    clock.advance(10 * SEC)
    first = hub.roll()
    assert [r.op for r in first] == [Op.STORE, Op.RECALL]
    store, recall = first
    assert (store.start, store.end) == (1000.0, 1010.0)
    assert (store.count, store.ok) == (12, 10)
    assert store.errors == {"http_500": 1, "timeout": 1}
    assert (store.dropped, store.late) == (1, 1)
    assert Histogram.decode(store.service_hist).count == 12
    assert recall.count == 0
    hub.on_result(result(Op.STORE, service_ms=500))
    clock.advance(10 * SEC)
    store2 = hub.roll()[0]
    assert (store2.start, store2.end) == (1010.0, 1020.0)
    assert (store2.count, store2.ok, store2.dropped, store2.late) == (1, 1, 0, 0)
    assert store2.errors == {}
    assert Histogram.decode(store2.service_hist).percentile_ms(50) == pytest.approx(500, rel=1e-3)
    hub.on_result(result(Op.STORE))  # still in the current, unrolled interval
    total = hub.totals(Op.STORE)
    assert (total.count, total.ok, total.dropped, total.late) == (14, 12, 1, 1)
    assert total.errors == {"http_500": 1, "timeout": 1}
    assert total.duration_s == 20.0
    assert total.achieved_rate == pytest.approx(14 / 20)
    assert total.service.count == 14
    assert total.service.max_ms == pytest.approx(500, rel=1e-3)
    assert total.lag.p50_ms == pytest.approx(1.0, rel=1e-3)
    assert total.latency.p50_ms == pytest.approx(11.0, rel=1e-3)


def test_undeclared_op_is_kept() -> None:
    """A result for an op the hub was not built with is still counted."""
    clock = FakeClock()
    hub = StatsHub([Op.STORE], clock)
    hub.on_result(result(Op.READBACK))
    assert hub.totals(Op.READBACK).count == 1
    assert Op.READBACK in hub.ops


def test_restore_seeds_totals_from_records() -> None:
    """After restore(), totals include stored intervals; the rate is over time actually run.

    Issue 18: the duration used to run from the original start, so the time
    soakd was down (100 s here) diluted the live achieved rate.
    """
    clock = FakeClock(wall_start=5000.0)
    old = StatsHub([Op.RECALL], clock)
    for _ in range(4):
        old.on_result(result(Op.RECALL, service_ms=20))
    old.on_dropped(Op.RECALL, 0)
    clock.advance(10 * SEC)
    records = old.roll()
    clock.advance(100 * SEC)  # soakd was down for a while
    hub = StatsHub([Op.RECALL], clock)
    hub.restore(records, started_wall=5000.0)
    hub.on_result(result(Op.RECALL, service_ms=40))
    clock.advance(10 * SEC)
    total = hub.totals(Op.RECALL)
    assert (total.count, total.dropped) == (5, 1)
    assert total.duration_s == 20.0  # 10 s before the kill, 10 s since: not the gap
    assert total.achieved_rate == 5 / 20.0
    assert total.service.max_ms == pytest.approx(40, rel=1e-3)
    assert hub.roll()[0].start == 5110.0


def test_summarize_records_uses_interval_widths() -> None:
    """summarize() merges one op's records and rates count over the sum of interval widths."""
    clock = FakeClock(wall_start=0.0)
    hub = StatsHub([Op.STORE, Op.SPREAD], clock)
    records: list[IntervalRecord] = []
    for i in range(3):
        for _ in range(100):
            hub.on_result(result(Op.STORE, service_ms=5 + i))
        hub.on_result(result(Op.SPREAD))
        hub.on_result(result(Op.STORE, service_ms=1, outcome=Outcome.CONNECTION, status=None))
        clock.advance(10 * SEC)
        records.extend(hub.roll())
        clock.advance(50 * SEC)  # a gap that must not dilute the rate
        hub.roll()  # discarded: the gap interval
    s = summarize(Op.STORE, records)
    assert (s.count, s.ok) == (303, 300)
    assert s.errors == {"connection_error": 3}
    assert s.duration_s == 30.0
    assert s.achieved_rate == pytest.approx(10.1)
    assert s.service.count == 303
    assert s.service.max_ms == pytest.approx(7, rel=1e-3)
    assert summarize(Op.SPREAD, records).count == 3
    assert summarize(Op.RECALL, records).achieved_rate == 0.0


def test_p99_series_merges_per_window() -> None:
    """p99_series merges 10 s records into 30 s windows, with the window's p99 and count."""
    clock = FakeClock(wall_start=100.0)
    hub = StatsHub([Op.STORE], clock)
    records: list[IntervalRecord] = []
    for i in range(7):
        service = 100.0 if i == 4 else 1.0
        for _ in range(50):
            hub.on_result(result(Op.STORE, lag_ms=0, service_ms=service))
        clock.advance(10 * SEC)
        records.extend(hub.roll())
    series = p99_series(records, 30.0)
    assert [(end, n) for end, _, n in series] == [(130.0, 150), (160.0, 150), (170.0, 50)]
    assert series[0][1] == pytest.approx(1.0, rel=1e-3)
    assert series[1][1] == pytest.approx(100.0, rel=1e-3)
    assert series[2][1] == pytest.approx(1.0, rel=1e-3)
    assert p99_series([], 30.0) == []
    with pytest.raises(ValueError):
        p99_series(records, 0)


def test_merge_blobs_equals_direct_merge() -> None:
    """merge_blobs over encodings equals merging the histograms themselves."""
    parts = []
    direct = Histogram()
    for j in range(5):
        h = Histogram()
        for i in range(1, 200):
            h.record_ns(i * (j + 1) * 10_000)
        direct.merge(h)
        parts.append(h.encode())
    merged = merge_blobs(parts)
    assert merged.count == direct.count == 995
    assert merged.encode() == direct.encode()


def _live_hdr_histograms() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, HdrHistogram))


def test_memory_stays_bounded_as_intervals_roll() -> None:
    """Rolling 200 intervals (and summarizing) does not grow the number of live histograms."""
    clock = FakeClock()
    hub = StatsHub([Op.STORE, Op.RECALL, Op.SPREAD], clock)

    def one_interval(i: int) -> None:
        for op in (Op.STORE, Op.RECALL, Op.SPREAD):
            hub.on_result(result(op, service_ms=1 + i % 50))
        clock.advance(10 * SEC)
        hub.roll()
        hub.totals(Op.STORE)

    one_interval(0)
    baseline = _live_hdr_histograms()
    for i in range(1, 200):
        one_interval(i)
    assert _live_hdr_histograms() == baseline
    assert hub.totals(Op.SPREAD).count == 200


def test_latency_summary_as_dict_keys() -> None:
    """as_dict() has the report.json latency keys."""
    s = LatencySummary(3, 1.0, 2.0, 3.0, 4.0, 5.0, 1.5)
    assert s.as_dict() == {
        "p50": 1.0,
        "p95": 2.0,
        "p99": 3.0,
        "p999": 4.0,
        "max": 5.0,
        "mean": 1.5,
    }


def test_mean_is_exact_when_uint64_would_overflow() -> None:
    """Counts whose weighted sum passes 2**64 still give hdrh's mean (Python-int fallback)."""
    ours, reference = Histogram(), HdrHistogram(1, 3_600_000_000, 3)
    for value_us, times in ((3_000_000_000, 2**40), (1_000, 2**41), (7, 3)):
        ours._h.record_value(value_us, times)
        reference.record_value(value_us, times)
    assert ours.count * 3_000_000_000 > 2**64
    assert ours.mean_ms() == reference.get_mean_value() / 1000.0
    qs = [0.0, 50.0, 99.0, 99.9, 100.0]
    expected = reference.get_percentile_to_value_dict(qs)
    assert ours.percentiles_ms(qs) == {q: expected[q] / 1000.0 for q in qs}


# -- rolling in a worker thread ------------------------------------------------------------


class Gate:
    """A worker pause that parks the roll's worker at its ``block_at``-th pause until opened."""

    def __init__(self, block_at: int = 1) -> None:
        self.block_at = block_at
        self.calls = 0
        self.parked = threading.Event()
        self._open = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        if self.calls == self.block_at:
            self.parked.set()
            if not self._open.wait(10.0):
                raise TimeoutError("the test never opened the gate")

    def open(self) -> None:
        self._open.set()


@contextlib.contextmanager
def parked_worker(monkeypatch: pytest.MonkeyPatch, block_at: int = 1) -> Iterator[Gate]:
    """Roll workers pause through a :class:`Gate`, opened on the way out even on failure."""
    gate = Gate(block_at)
    monkeypatch.setattr(stats_module, "_worker_pause", gate)
    try:
        yield gate
    finally:
        gate.open()  # a failing test must not leave a worker thread parked


def _record_n(hub: StatsHub, n: int, op: Op = Op.STORE, service_ms: float = 5.0) -> None:
    for i in range(n):
        ok = i % 10 != 0
        hub.on_result(
            result(
                op,
                service_ms=service_ms + i % 7,
                outcome=Outcome.OK if ok else Outcome.TIMEOUT,
                status=200 if ok else None,
            )
        )


def _count(records: Sequence[IntervalRecord], op: Op = Op.STORE) -> int:
    return sum(r.count for r in records if r.op == op)


def _pauses_of_one_roll(monkeypatch: pytest.MonkeyPatch) -> int:
    """How many pauses the worker takes to roll the data of the tests below."""
    counter = Gate(block_at=0)
    monkeypatch.setattr(stats_module, "_worker_pause", counter)
    hub = StatsHub([Op.STORE, Op.RECALL], FakeClock())
    _record_n(hub, 100)
    asyncio.run(hub.roll_async())
    return counter.calls


def test_totals_exact_while_roll_in_flight_at_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wherever the worker is, records made meanwhile go to the next interval and totals are exact.

    The worker is parked at each of its pauses in turn (before, during and after
    the merge into the totals): totals() must count the detached interval
    exactly once, plus what was recorded since.
    """
    steps = _pauses_of_one_roll(monkeypatch)
    assert steps > 10

    async def one(block_at: int) -> None:
        clock = FakeClock(wall_start=100.0)
        hub = StatsHub([Op.STORE, Op.RECALL], clock)
        _record_n(hub, 100)
        hub.on_dropped(Op.STORE, 0)
        clock.advance(10 * SEC)
        with parked_worker(monkeypatch, block_at) as gate:
            rolling = asyncio.create_task(hub.roll_async())
            await async_wait_for(gate.parked.is_set, what=f"worker parked at pause {block_at}")
            assert hub.rolling
            _record_n(hub, 7, service_ms=900.0)  # during the roll: the next interval
            hub.on_late(Op.STORE)
            total = hub.totals(Op.STORE)
            assert (total.count, total.dropped, total.late) == (107, 1, 1), block_at
            assert total.errors == {"timeout": 11}
            assert total.service.count == total.latency.count == total.lag.count == 107
            assert total.service.max_ms == pytest.approx(906, rel=1e-3)
            gate.open()
            records = await rolling
        store = next(r for r in records if r.op == Op.STORE)
        assert (store.count, store.ok, store.dropped, store.late) == (100, 90, 1, 0)
        assert (store.start, store.end) == (100.0, 110.0)
        assert Histogram.decode(store.service_hist).count == 100
        assert Histogram.decode(store.service_hist).max_ms() < 20
        summary = hub.summaries[Op.STORE]
        assert (summary.count, summary.dropped, summary.duration_s) == (100, 1, 10.0)
        clock.advance(5 * SEC)
        (store2, _) = await hub.roll_async()
        assert (store2.count, store2.late, store2.start, store2.end) == (7, 1, 110.0, 115.0)
        assert Histogram.decode(store2.service_hist).percentile_ms(50) >= 900
        assert hub.totals(Op.STORE).count == 107
        assert hub.summaries[Op.STORE].count == 107

    for block_at in range(1, steps + 1):
        asyncio.run(one(block_at))


async def test_counts_add_up_over_many_rolls_with_concurrent_recording() -> None:
    """Recording non-stop while 15 rolls run in the worker: every result counted exactly once."""
    clock = FakeClock(wall_start=0.0)
    hub = StatsHub([Op.STORE, Op.RECALL, Op.SPREAD], clock)
    recorded = dict.fromkeys((Op.STORE, Op.RECALL, Op.SPREAD), 0)
    during_rolls = 0
    stop = False

    async def load() -> None:
        nonlocal during_rolls
        rng = random.Random(9)
        while not stop:
            op = rng.choice((Op.STORE, Op.RECALL, Op.SPREAD))
            n = rng.randrange(1, 30)
            _record_n(hub, n, op, service_ms=rng.uniform(0.1, 2000))
            recorded[op] += n
            during_rolls += n if hub.rolling else 0
            # Pacing, not waiting: a loop that never idles would let the worker in
            # only once per GIL switch interval, making 15 rolls take seconds.
            await asyncio.sleep(0.0002)

    loader = asyncio.create_task(load())
    records: list[IntervalRecord] = []
    live_after_first = 0
    for i in range(15):
        clock.advance(SEC)
        records.extend(await hub.roll_async())
        if i == 0:
            live_after_first = _live_hdr_histograms()
    stop = True
    await loader
    clock.advance(SEC)
    records.extend(await hub.roll_async())
    assert _live_hdr_histograms() == live_after_first  # spare sets are reused, not piled up
    assert during_rolls > 0  # the load did run while workers were closing intervals
    for op, n in recorded.items():
        mine = [r for r in records if r.op == op]
        assert _count(mine, op) == n > 0
        assert sum(Histogram.decode(r.response_hist).count for r in mine) == n
        assert [(r.start, r.end) for r in mine] == [(float(i), float(i + 1)) for i in range(16)]
        assert hub.totals(op).count == n
        assert hub.summaries[op] == hub.totals(op)  # nothing recorded since the last roll
        assert summarize(op, records).latency == hub.totals(op).latency


async def test_cancelled_roll_is_returned_by_the_next_roll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A caller cancelled mid-roll (shutdown) loses nothing: the next roll waits, returns both."""
    clock = FakeClock(wall_start=0.0)
    hub = StatsHub([Op.STORE], clock)
    _record_n(hub, 30)
    clock.advance(10 * SEC)
    with parked_worker(monkeypatch) as gate:
        first = asyncio.create_task(hub.roll_async())
        await async_wait_for(gate.parked.is_set, what="worker parked")
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        _record_n(hub, 4)
        clock.advance(2 * SEC)
        final = asyncio.create_task(hub.roll_async())  # the daemon's last partial interval
        # A negative check needs a window: the final roll must not close before the first
        # (were its worker not chained, it would finish well within this time).
        done, _ = await asyncio.wait({final}, timeout=0.2)
        assert not done
        gate.open()
        records = await final
    assert [(r.start, r.end, r.count) for r in records] == [(0.0, 10.0, 30), (10.0, 12.0, 4)]
    assert hub.summaries[Op.STORE].count == 34
    assert await hub.roll_async() == [
        IntervalRecord(
            Op.STORE, 12.0, 12.0, 0, 0, {}, 0, 0, *(Histogram().encode() for _ in range(3))
        )
    ]


async def test_roll_and_restore_refuse_while_a_roll_is_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker owns the totals during a roll: an inline roll or a restore would race it."""
    hub = StatsHub([Op.STORE], FakeClock())
    _record_n(hub, 3)
    with parked_worker(monkeypatch) as gate:
        rolling = asyncio.create_task(hub.roll_async())
        await async_wait_for(gate.parked.is_set, what="worker parked")
        with pytest.raises(RuntimeError):
            hub.roll()
        with pytest.raises(RuntimeError):
            hub.restore([], 0.0)
        gate.open()
        assert _count(await rolling) == 3
    assert hub.roll()[0].count == 0


async def test_worker_failure_is_raised_and_the_hub_keeps_rolling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exception in the worker reaches the caller; the next roll works normally."""
    clock = FakeClock(wall_start=0.0)
    hub = StatsHub([Op.STORE], clock)
    _record_n(hub, 5)

    def broken() -> None:
        raise OSError("boom")

    monkeypatch.setattr(stats_module, "_worker_pause", broken)
    with pytest.raises(OSError, match="boom"):
        await hub.roll_async()
    assert not hub.rolling
    monkeypatch.undo()
    _record_n(hub, 2)
    clock.advance(SEC)
    records = await hub.roll_async()
    assert _count(records) == 2
    assert hub.totals(Op.STORE).count == hub.summaries[Op.STORE].count
