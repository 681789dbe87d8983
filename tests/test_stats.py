"""Tests for soakd.stats: HDR histograms, interval rolling, summaries and windowed series."""

from __future__ import annotations

import gc
import random

import pytest
from hdrh.histogram import HdrHistogram

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
    """After restore(), totals include stored intervals and time since the original start."""
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
    assert total.duration_s == 120.0
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
