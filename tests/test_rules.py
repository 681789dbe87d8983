"""Pure rule tests on synthetic samples and interval records (no store, no clock)."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Mapping, Sequence

import pytest

from soakd.model import ConsolidationRun, Event, EventKind, IntervalRecord, Op, Sample
from soakd.rules import (
    RuleInputs,
    RuleResult,
    cadence_summary,
    downsample,
    evaluate_rule,
    leak_fit,
    leak_verdict,
)
from soakd.spec.model import AlertKind, AlertRuleSpec
from soakd.stats import Histogram

T0 = 1_700_000_000.0
MB = 1_000_000


def rss_samples(
    duration_s: float,
    step_s: float,
    rss: Callable[[float], float],
    *,
    memories: Callable[[float], int] | None = None,
    noise_bytes: float = 0.0,
    seed: int = 1,
    pid: int = 100,
) -> list[Sample]:
    """Samples every ``step_s`` with RSS ``rss(elapsed)`` plus Gaussian noise."""
    rng = random.Random(seed)
    out = []
    n = int(duration_s / step_s) + 1
    for i in range(n):
        e = i * step_s
        value = rss(e) + rng.gauss(0.0, noise_bytes) if noise_bytes else rss(e)
        out.append(
            Sample(
                t=T0 + e,
                pid=pid,
                rss_bytes=int(value),
                memories=memories(e) if memories else None,
            )
        )
    return out


def record(
    op: Op,
    start: float,
    width: float,
    latencies_ms: Sequence[float],
    *,
    ok: int | None = None,
    errors: Mapping[str, int] | None = None,
    late: int = 0,
    dropped: int = 0,
) -> IntervalRecord:
    """One interval record holding ``latencies_ms`` as response times."""
    h = Histogram()
    for ms in latencies_ms:
        h.record_ns(int(ms * 1e6))
    count = len(latencies_ms)
    return IntervalRecord(
        op=op,
        start=start,
        end=start + width,
        count=count,
        ok=count if ok is None else ok,
        errors=dict(errors or {}),
        dropped=dropped,
        late=late,
        response_hist=h.encode(),
        service_hist=h.encode(),
        lag_hist=Histogram().encode(),
    )


def latency_records(
    op: Op, duration_s: float, p99_at: Callable[[float], float], *, per_interval: int = 100
) -> list[IntervalRecord]:
    """10-second records whose P99 follows ``p99_at(elapsed)`` (1 % of values at it)."""
    out = []
    for i in range(int(duration_s / 10)):
        e = i * 10.0
        top = p99_at(e)
        values = [top * 0.3] * (per_interval - 2) + [top, top]
        out.append(record(op, T0 + e, 10.0, values))
    return out


def inputs(
    now_elapsed: float,
    *,
    planned_s: float = 600.0,
    samples: Sequence[Sample] = (),
    intervals: Mapping[Op, Sequence[IntervalRecord]] | None = None,
    runs: Sequence[ConsolidationRun] = (),
    expected: float | None = None,
    tolerance: float = 5.0,
    events: Sequence[Event] = (),
    lost: int = 0,
    corrupted: int = 0,
    baseline: Mapping[Op, float] | None = None,
) -> RuleInputs:
    """RuleInputs at ``T0 + now_elapsed`` for a run planned to last ``planned_s``."""
    return RuleInputs(
        now=T0 + now_elapsed,
        run_started=T0,
        planned_duration_s=planned_s,
        samples=[s for s in samples if s.t <= T0 + now_elapsed],
        intervals={
            op: [r for r in recs if r.end <= T0 + now_elapsed]
            for op, recs in (intervals or {}).items()
        },
        consolidation_runs=[r for r in runs if r.t <= T0 + now_elapsed],
        expected_interval_s=expected,
        consolidation_tolerance_s=tolerance,
        events=[e for e in events if e.t <= T0 + now_elapsed],
        integrity_lost=lost,
        integrity_corrupted=corrupted,
        baseline_p99_ms=dict(baseline or {}),
    )


def cadence(spaces: int, intervals: Sequence[float], start: float = 5.0) -> list[ConsolidationRun]:
    """Consolidation runs per space at the given successive intervals."""
    out = []
    for sp in range(spaces):
        t = start + sp * 0.1
        prev = None
        for iv in [0.0, *intervals]:
            t += iv
            out.append(
                ConsolidationRun(f"space_{sp + 1:02d}", T0 + t, "x", T0 + t, iv if prev else None)
            )
            prev = t
    return sorted(out, key=lambda r: r.t)


# -- memory leak -------------------------------------------------------------------

LEAK = AlertRuleSpec(
    "memory_leak", AlertKind.MEMORY_LEAK, 10.0, phrase="RSS increases >10% per day"
)
DAY = 86400.0


def test_leak_fires_at_15_percent_per_day() -> None:
    """A steady +15 %/day RSS growth with allocator noise fires the 10 %/day rule."""
    samples = rss_samples(
        2 * DAY, 600.0, lambda e: 500 * MB * (1 + 0.15 * e / DAY), noise_bytes=2 * MB
    )
    (result,) = evaluate_rule(LEAK, inputs(2 * DAY, planned_s=7 * DAY, samples=samples))
    assert result.active, result.summary
    assert result.value is not None and 12.0 < result.value < 18.0


def test_leak_quiet_on_flat_noise() -> None:
    """Flat RSS with allocator noise and steps never fires."""
    rng = random.Random(7)
    steps = [rng.choice((-4, 0, 0, 4)) * MB for _ in range(400)]
    samples = rss_samples(
        2 * DAY, 600.0, lambda e: 500 * MB + steps[int(e / 600) % 400], noise_bytes=5 * MB
    )
    (result,) = evaluate_rule(LEAK, inputs(2 * DAY, planned_s=7 * DAY, samples=samples))
    assert not result.active, result.summary


def test_leak_quiet_on_warmup_growth_that_levels_off() -> None:
    """Growth that decelerates to a plateau (a cache warming up) is not a leak."""
    samples = rss_samples(
        600.0, 1.0, lambda e: 100 * MB + 30 * MB * (1 - math.exp(-e / 60.0)), noise_bytes=0.2 * MB
    )
    (result,) = evaluate_rule(LEAK, inputs(600.0, samples=samples))
    assert not result.active, result.summary


def test_leak_quiet_on_five_minute_metrics_window() -> None:
    """RSS that climbs for 5 minutes (Engram's metrics window filling) then levels is quiet."""
    # the shape measured on the reference target (docs/alerting.md §6): +15 kB/s, a 1 MB
    # step at the 5-minute mark, then flat
    samples = rss_samples(
        600.0,
        1.0,
        lambda e: 60 * MB + 15_000 * min(e, 300.0) + (e > 301) * 1 * MB,
        memories=lambda e: 3000,
        noise_bytes=0.1 * MB,
    )
    (result,) = evaluate_rule(LEAK, inputs(600.0, samples=samples))
    assert not result.active, result.summary


def test_leak_quiet_on_small_steady_creep_in_short_run() -> None:
    """A steady 0.6 kB/s creep (seen on the reference target without a leak) is too small."""
    samples = rss_samples(
        540.0, 1.0, lambda e: 72 * MB + 600 * e, memories=lambda e: 3000, noise_bytes=2000
    )
    (result,) = evaluate_rule(LEAK, inputs(540.0, planned_s=540.0, samples=samples))
    assert not result.active, result.summary
    assert "too little" in result.summary


def test_leak_ignores_growth_back_after_a_target_restart() -> None:
    """After a restart (new PID) the fresh process climbing back up is not judged as a leak."""
    before = rss_samples(400.0, 1.0, lambda e: 60 * MB, memories=lambda e: 3000, pid=100)
    after = rss_samples(
        400.0,
        1.0,
        lambda e: 60 * MB + 140 * MB * min(e, 300.0) / 300.0,
        memories=lambda e: 3000,
        pid=200,
    )
    samples = before + [dataclasses.replace(s, t=s.t + 401.0) for s in after]
    (result,) = evaluate_rule(LEAK, inputs(700.0, planned_s=800.0, samples=samples))
    assert not result.active, result.summary  # judged across the restart it would fire
    assert "not judged" in result.summary


def test_leak_short_run_fires_on_fast_leak() -> None:
    """A 10-minute run with 100 KB/s of growth on a flat dataset fires."""
    samples = rss_samples(
        600.0, 1.0, lambda e: 80 * MB + 100_000 * e, memories=lambda e: 5000, noise_bytes=0.3 * MB
    )
    (result,) = evaluate_rule(LEAK, inputs(600.0, samples=samples))
    assert result.active, result.summary
    assert result.detail["judged"] == "rss"


def test_leak_not_judged_during_warmup() -> None:
    """Before warm-up plus the minimum span nothing is judged, whatever the slope."""
    samples = rss_samples(100.0, 1.0, lambda e: 80 * MB + 1 * MB * e)
    (result,) = evaluate_rule(LEAK, inputs(100.0, samples=samples))
    assert not result.active
    assert "not judged" in result.summary


def test_leak_quiet_while_dataset_fills() -> None:
    """RSS that grows with the memory count (data filling) does not fire."""
    samples = rss_samples(
        600.0,
        1.0,
        lambda e: 80 * MB + 4000 * (100 * e),
        memories=lambda e: int(100 * e),
        noise_bytes=0.2 * MB,
    )
    (result,) = evaluate_rule(LEAK, inputs(600.0, samples=samples))
    assert not result.active, result.summary
    assert result.detail["judged"] == "follows_data"
    assert 3000 < float(result.detail["marginal_bytes_per_memory"]) < 5000  # type: ignore[arg-type]


FILL_S = 700.0  # fills past the 5-min leak warm-up and into the 10-min leak window, then flat


def _fill_then(rss_after: Callable[[float], float]) -> list[Sample]:
    def mem(e: float) -> int:
        return int(min(100 * e, 100 * FILL_S))

    def rss(e: float) -> float:
        return 80 * MB + 4000 * mem(e) + (rss_after(e - FILL_S) if e > FILL_S else 0.0)

    return rss_samples(1200.0, 1.0, rss, memories=mem, noise_bytes=0.2 * MB)


def test_leak_quiet_when_dataset_fills_then_flattens() -> None:
    """RSS that follows a filling dataset and then flattens with it does not fire."""
    (result,) = evaluate_rule(
        LEAK, inputs(1200.0, planned_s=1200.0, samples=_fill_then(lambda e: 0.0))
    )
    assert not result.active, result.summary
    assert result.detail["judged"] == "after_flat"


def test_leak_fires_on_growth_after_dataset_is_full() -> None:
    """Growth that goes on once the memory count is flat is judged, and fires."""
    samples = _fill_then(lambda e: 50_000 * e)
    (result,) = evaluate_rule(LEAK, inputs(1200.0, planned_s=1200.0, samples=samples))
    assert result.active, result.summary
    assert result.detail["judged"] == "after_flat"
    assert result.detail["flat_since"] is not None


def test_leak_absolute_form_in_mb_per_hour() -> None:
    """The absolute form (Engram's 10 MB/h) fires on 20 MB/h and not on 5 MB/h."""
    rule = AlertRuleSpec("leak_abs", AlertKind.MEMORY_LEAK, 0.0, abs_mb_per_h=10.0)
    for mb_h, expect in ((20.0, True), (5.0, False)):

        def rss(e: float, r: float = mb_h) -> float:
            return 4000 * MB + r * MB * e / 3600

        samples = rss_samples(6 * 3600, 60.0, rss, noise_bytes=0.2 * MB)
        (result,) = evaluate_rule(rule, inputs(6 * 3600, planned_s=24 * 3600, samples=samples))
        assert result.active is expect, (mb_h, result.summary)


def test_leak_fit_reports_data_figures() -> None:
    """leak_fit gives bytes per memory, the flat point and growth after it for the report."""
    fit = leak_fit(_fill_then(lambda e: 0.0), 60.0, min_span_s=60.0)
    assert fit.data_growing
    assert fit.flat_since is not None and abs(fit.flat_since - (T0 + FILL_S)) < 5
    assert fit.bytes_per_memory is not None and fit.bytes_per_memory > 4000
    assert fit.growth_after_flat_pct_per_day is not None
    assert fit.judged == "after_flat"
    assert fit.judged_r2 is not None and fit.judged_r2 < 0.5  # noise only: no trend


# -- latency -------------------------------------------------------------------------

PERF = AlertRuleSpec("perf", AlertKind.PERFORMANCE_DEGRADATION, 20.0, metric="p99_ms")


def test_perf_degradation_fires_for_the_drifting_operation_only() -> None:
    """Latency drift on store fires for store; recall stays quiet."""
    recs = {
        Op.STORE: latency_records(Op.STORE, 600, lambda e: 10.0 + (e > 400) * 5.0),
        Op.RECALL: latency_records(Op.RECALL, 600, lambda e: 10.0),
    }
    results = {r.labels["op"]: r for r in evaluate_rule(PERF, inputs(600, intervals=recs))}
    assert results["store"].active, results["store"].summary
    assert not results["recall"].active, results["recall"].summary
    assert results["store"].value is not None and 40 < results["store"].value < 60


def test_perf_degradation_ignores_a_burst_in_one_part_of_the_window() -> None:
    """A tail burst in one stretch of the window (a busy machine) does not fire; drift does."""
    steady = latency_records(Op.STORE, 600, lambda e: 10.0)
    burst = [record(Op.STORE, T0 + t, 10, [30.0] * 100) for t in (560, 570)]
    recs = {
        Op.STORE: sorted(
            [r for r in steady if r.start not in (T0 + 560, T0 + 570)] + burst,
            key=lambda r: r.start,
        )
    }
    (r,) = evaluate_rule(PERF, inputs(600, intervals=recs))
    assert not r.active, r.summary
    assert r.value is not None and r.value > 20  # the window's P99 alone would have fired


def test_perf_degradation_needs_samples_and_resolves() -> None:
    """Too few requests are not judged, and the alert clears when latency recovers."""
    few = {Op.STORE: latency_records(Op.STORE, 600, lambda e: 10.0 + (e > 400) * 9, per_interval=5)}
    (r,) = evaluate_rule(PERF, inputs(600, intervals=few))
    assert not r.active and "not judged" in r.summary
    back = {Op.STORE: latency_records(Op.STORE, 900, lambda e: 10.0 + (400 < e < 600) * 9)}
    assert evaluate_rule(PERF, inputs(600, intervals=back))[0].active
    assert not evaluate_rule(PERF, inputs(900, intervals=back))[0].active


def test_perf_degradation_uses_baseline_file() -> None:
    """A baseline P99 from an earlier run replaces the first stretch."""
    recs = {Op.STORE: latency_records(Op.STORE, 600, lambda e: 10.0)}
    (r,) = evaluate_rule(PERF, inputs(600, intervals=recs, baseline={Op.STORE: 5.0}))
    assert r.active
    assert r.detail["baseline_source"] == "baseline file"


def test_perf_degradation_ignores_sub_millisecond_jitter() -> None:
    """A 0.4 ms -> 0.6 ms P99 (+50 %) is below the absolute floor and stays quiet."""
    recs = {Op.STORE: latency_records(Op.STORE, 600, lambda e: 0.4 + (e > 400) * 0.2)}
    assert not evaluate_rule(PERF, inputs(600, intervals=recs))[0].active


# -- consolidation -------------------------------------------------------------------

CONS = AlertRuleSpec("consolidation", AlertKind.CONSOLIDATION_FAILURE, 5.0)


def _cons(results: list[RuleResult]) -> dict[str, RuleResult]:
    return {r.labels["failure"]: r for r in results}


def test_consolidation_drift_fires_and_resolves() -> None:
    """An interval 8 s late fires the drift instance, which clears once it leaves the window."""
    runs = cadence(2, [60, 60, 68, 60, 60, 60, 60, 60])
    at = _cons(evaluate_rule(CONS, inputs(200, runs=runs, expected=60.0)))
    assert at["drift"].active and at["drift"].value == pytest.approx(8.0)
    assert not at["stalled"].active
    later = _cons(evaluate_rule(CONS, inputs(540, runs=runs, expected=60.0)))
    assert not later["drift"].active, later["drift"].summary


def test_consolidation_jitter_within_tolerance_is_quiet() -> None:
    """Intervals within ±4 s never fire."""
    runs = cadence(3, [56, 64, 60, 57, 63])
    at = _cons(evaluate_rule(CONS, inputs(320, runs=runs, expected=60.0)))
    assert not at["drift"].active and not at["stalled"].active


def test_consolidation_stall_marked_stalled() -> None:
    """No run within interval + 5 s fires the stalled instance, and a new run resolves it."""
    runs = cadence(1, [60, 60])
    at = _cons(evaluate_rule(CONS, inputs(125 + 66, runs=runs, expected=60.0)))
    assert at["stalled"].active and at["stalled"].labels["failure"] == "stalled"
    resumed = [*runs, ConsolidationRun("space_01", T0 + 200, "x", T0 + 200, 75.0)]
    after = _cons(evaluate_rule(CONS, inputs(201, runs=resumed, expected=60.0)))
    assert not after["stalled"].active
    assert after["drift"].active  # the 75 s interval itself drifted


def test_consolidation_never_observed_is_stalled() -> None:
    """A target that never consolidates (stock Engram) is reported stalled, not drifted."""
    at = _cons(evaluate_rule(CONS, inputs(300, runs=[], expected=60.0)))
    assert at["stalled"].active and "no consolidation observed" in at["stalled"].summary
    assert not at["drift"].active


# -- crash, errors, integrity, saturation, threshold ---------------------------------

CRASH = AlertRuleSpec("crash", AlertKind.CRASH, 0.0)


def test_crash_fires_while_down_and_resolves_after_restart() -> None:
    """A crash event fires; after a restart it holds for the window and then resolves."""
    events = [
        Event(T0 + 100, "target_crash", "exit -9"),
        Event(T0 + 103, "target_restart", "pid 101"),
    ]
    assert evaluate_rule(CRASH, inputs(101, events=events))[0].active
    assert evaluate_rule(CRASH, inputs(130, events=events))[0].active
    assert not evaluate_rule(CRASH, inputs(200, events=events))[0].active


def test_crash_detects_pid_change_without_event() -> None:
    """A new PID in the samples is a restart even if no event said so."""
    samples = rss_samples(60, 1.0, lambda e: 1.0) + rss_samples(60, 1.0, lambda e: 1.0, pid=200)
    samples = [dataclasses.replace(s, t=s.t + (60.5 if s.pid == 200 else 0)) for s in samples]
    samples.sort(key=lambda s: s.t)
    (r,) = evaluate_rule(CRASH, inputs(120, samples=samples))
    assert r.active and "100 -> 200" in r.summary


def test_error_rate_per_operation() -> None:
    """5 % failed stores fire a 1 % rule for store only."""
    rule = AlertRuleSpec("errors", AlertKind.ERROR_RATE, 0.01)
    recs = {
        Op.STORE: [record(Op.STORE, T0 + 590, 10, [1.0] * 100, ok=95, errors={"http_500": 5})],
        Op.RECALL: [record(Op.RECALL, T0 + 590, 10, [1.0] * 100)],
    }
    results = {r.labels["op"]: r for r in evaluate_rule(rule, inputs(600, intervals=recs))}
    assert results["store"].active and results["store"].value == pytest.approx(0.05)
    assert not results["recall"].active


def test_integrity_fires_on_any_lost_write() -> None:
    """One lost write fires the integrity rule; none keeps it quiet."""
    rule = AlertRuleSpec("integrity", AlertKind.INTEGRITY, 0.0)
    assert evaluate_rule(rule, inputs(60, lost=1))[0].active
    assert not evaluate_rule(rule, inputs(60))[0].active
    corrupted = [Event(T0 + 5, EventKind.INTEGRITY_CORRUPTED_READ, "content differs")]
    assert evaluate_rule(rule, inputs(60, events=corrupted))[0].active


def test_saturated_on_late_arrivals_and_loop_lag() -> None:
    """Late arrivals beyond 1 % or a lagging event loop fire soakd_saturated."""
    rule = AlertRuleSpec("saturated", AlertKind.SOAKD_SATURATED, 0.01)
    late = {Op.STORE: [record(Op.STORE, T0 + 590, 10, [1.0] * 100, late=5)]}
    assert evaluate_rule(rule, inputs(600, intervals=late))[0].active
    fine = {Op.STORE: [record(Op.STORE, T0 + 590, 10, [1.0] * 100)]}
    assert not evaluate_rule(rule, inputs(600, intervals=fine))[0].active
    lagging = [Sample(T0 + 560 + i, 1, loop_lag_s=0.5) for i in range(30)]
    r = evaluate_rule(rule, inputs(600, intervals=fine, samples=lagging))[0]
    assert r.active and "lag" in r.summary


def test_threshold_rule_on_sample_field_and_derived_metric() -> None:
    """The structured form compares a Sample field or a derived metric with its threshold."""
    fds = AlertRuleSpec("fds", AlertKind.THRESHOLD, 1000, metric="num_fds", condition=">")
    samples = [
        Sample(T0 + i, 1, num_fds=1500, cpu_user_s=i * 0.9, cpu_system_s=0.0) for i in range(60)
    ]
    assert evaluate_rule(fds, inputs(60, samples=samples))[0].active
    cpu = AlertRuleSpec("cpu", AlertKind.THRESHOLD, 80, metric="cpu_percent", condition=">")
    r = evaluate_rule(cpu, inputs(60, samples=samples))[0]
    assert r.active and r.value == pytest.approx(90.0)
    p99 = AlertRuleSpec("p99", AlertKind.THRESHOLD, 5, metric="p99_ms:store", condition="<")
    recs = {Op.STORE: [record(Op.STORE, T0 + 50, 10, [10.0] * 100)]}
    assert not evaluate_rule(p99, inputs(60, intervals=recs))[0].active
    assert evaluate_rule(p99, inputs(60, intervals=recs))[0].value == pytest.approx(10.0, rel=0.01)


def test_rule_labels_are_carried() -> None:
    """A rule's own labels appear on every result it gives."""
    rule = AlertRuleSpec("integrity", AlertKind.INTEGRITY, 0.0, labels=(("team", "db"),))
    assert evaluate_rule(rule, inputs(60))[0].labels["team"] == "db"


def test_downsample_keeps_bounds_and_median() -> None:
    """Downsampling bounds the sample count and carries each bucket's median RSS."""
    samples = rss_samples(9999.0, 1.0, lambda e: 100.0 + (e % 10 == 0) * 1e9)
    out = downsample(samples, 1000)
    assert len(out) == 1000
    assert all(s.rss_bytes == 100 for s in out)  # the spikes are gone
    assert out[0].t < out[-1].t


def test_cadence_summary_figures() -> None:
    """cadence_summary counts on-time intervals, the worst drift and stalled spaces."""
    runs = cadence(2, [60, 61, 58, 70])
    s = cadence_summary(runs, 60.0, 5.0, now=T0 + 5 + 249 + 70)
    assert s.intervals == 8 and s.on_time == 6
    assert s.max_drift_s == pytest.approx(10.0)
    assert s.within_2s_fraction == pytest.approx(6 / 8)
    assert s.drifted_spaces == ("space_01", "space_02")
    assert s.stalled_spaces == ("space_01", "space_02")


def test_leak_verdict_is_the_rules_test_for_the_report() -> None:
    """leak_verdict on a leak_fit gives the rule's answer (the report uses it the same way)."""
    samples = rss_samples(
        600.0, 1.0, lambda e: 80 * MB + 100_000 * e, memories=lambda e: 5000, noise_bytes=0.3 * MB
    )
    fit = leak_fit(samples, 360.0, min_span_s=60.0)
    assert leak_verdict(fit, threshold_pct_per_day=10.0, min_span_s=60.0)[0]
    assert not leak_verdict(fit, threshold_pct_per_day=0.0, abs_mb_per_h=1000.0)[0]
    assert leak_verdict(fit, threshold_pct_per_day=0.0, abs_mb_per_h=100.0)[0]  # 360 MB/h
