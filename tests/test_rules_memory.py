"""Memory that can leak told from memory that cannot; exhaustion; overload vs lateness (issue 17).

Pure rule tests on synthetic samples and interval records: the leak rule
judges anonymous memory by default, growth per stored memory is held against
what a memory costs, memory_exhaustion forecasts from minutes of samples, and
dropped arrivals are the target's (target_overloaded, error rate) while late
ones stay soakd's (soakd_saturated).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from soakd.model import IntervalRecord, Op, Sample
from soakd.rules import RuleInputs, evaluate_rule, leak_fit
from soakd.rules.evaluate import leak_excuse
from soakd.rules.leak import MEMORY_COST_BYTES
from soakd.spec.model import AlertKind, AlertRuleSpec, MemorySeries
from soakd.stats import Histogram

T0 = 1_700_000_000.0
MB = 1_000_000
GB = 1_000_000_000
LEAK = AlertRuleSpec("memory_leak", AlertKind.MEMORY_LEAK, 10.0)
EXHAUSTION = AlertRuleSpec("memory_exhaustion", AlertKind.MEMORY_EXHAUSTION, 86400.0)


def samples(
    duration_s: float,
    *,
    anon: Callable[[float], float],
    file: Callable[[float], float] = lambda e: 0.0,
    memories: Callable[[float], int] | None = None,
    available: float = 20 * GB,
    step_s: float = 1.0,
    pid: int = 100,
) -> list[Sample]:
    """One sample every ``step_s``: RSS = anon + file, as the kernel splits it."""
    out = []
    for i in range(int(duration_s / step_s) + 1):
        e = i * step_s
        a, f = int(anon(e)), int(file(e))
        out.append(
            Sample(
                t=T0 + e,
                pid=pid,
                rss_bytes=a + f,
                heap_bytes=a,
                rss_anon_bytes=a,
                rss_file_bytes=f,
                rss_shmem_bytes=0,
                mem_available_bytes=int(available - a),
                memories=memories(e) if memories else None,
            )
        )
    return out


def inputs(
    now_elapsed: float,
    *,
    planned_s: float = 600.0,
    samples: Sequence[Sample] = (),
    intervals: Mapping[Op, Sequence[IntervalRecord]] | None = None,
) -> RuleInputs:
    now = T0 + now_elapsed
    return RuleInputs(
        now=now,
        run_started=T0,
        planned_duration_s=planned_s,
        samples=[s for s in samples if s.t <= now],
        intervals={op: [r for r in recs if r.end <= now] for op, recs in (intervals or {}).items()},
        consolidation_runs=[],
        expected_interval_s=None,
        consolidation_tolerance_s=5.0,
        events=[],
        integrity_lost=0,
        integrity_corrupted=0,
    )


def record(op: Op, start: float, n: int, *, dropped: int = 0, late: int = 0) -> IntervalRecord:
    h = Histogram()
    for _ in range(n):
        h.record_ns(1_000_000)
    return IntervalRecord(
        op=op,
        start=start,
        end=start + 10.0,
        count=n,
        ok=n,
        errors={},
        dropped=dropped,
        late=late,
        response_hist=h.encode(),
        service_hist=h.encode(),
        lag_hist=h.encode(),
    )


# -- which memory the leak rule judges ---------------------------------------------------


def test_file_backed_growth_is_not_a_leak_but_judging_rss_says_it_is() -> None:
    """RSS climbs 2 GB of page cache (RssFile) over the run while anonymous memory is flat:
    the default rule (anon) is quiet; a rule that chose total RSS fires."""
    s = samples(3600, anon=lambda e: 300 * MB, file=lambda e: 1 * GB + e * 600_000, step_s=5)
    quiet = evaluate_rule(LEAK, inputs(3600, planned_s=3600, samples=s))[0]
    assert not quiet.active
    assert quiet.detail["field"] == "rss_anon_bytes"
    rss_rule = AlertRuleSpec("memory_leak", AlertKind.MEMORY_LEAK, 10.0, memory=MemorySeries.RSS)
    loud = evaluate_rule(rss_rule, inputs(3600, planned_s=3600, samples=s))[0]
    assert loud.active and loud.summary.startswith("RSS grows")


def test_anonymous_growth_fires_even_under_a_flat_rss_share() -> None:
    """Anonymous memory grows 30 MB/h under 20 GB of page cache: still a leak (the
    percentage is of anonymous memory, not of the 20 GB)."""
    s = samples(
        3600, anon=lambda e: 300 * MB + e * 30 * MB / 3600, file=lambda e: 20 * GB, step_s=5
    )
    r = evaluate_rule(LEAK, inputs(3600, planned_s=3600, samples=s))[0]
    assert r.active and r.summary.startswith("anonymous memory grows")


def growing_data(per_memory: float) -> list[Sample]:
    """10 stores/s for an hour; anonymous memory grows ``per_memory`` bytes per store."""
    return samples(
        3600,
        anon=lambda e: 200 * MB + 10 * e * per_memory,
        memories=lambda e: int(10 * e),
        step_s=5,
    )


def test_growth_20x_a_memorys_cost_is_a_leak_while_the_data_grows() -> None:
    """20 x a memory's cost per stored memory: memory_leak fires although the count grows."""
    r = evaluate_rule(
        LEAK, inputs(3600, planned_s=3600, samples=growing_data(20 * MEMORY_COST_BYTES))
    )[0]
    assert r.active
    assert r.detail["judged"] == "exceeds_data" and r.detail["data_growing"]
    assert "per stored memory" in r.summary


def test_growth_of_twice_a_memorys_cost_follows_the_data() -> None:
    """2 x a memory's cost per stored memory is the data's growth: not judged a leak."""
    r = evaluate_rule(
        LEAK, inputs(3600, planned_s=3600, samples=growing_data(2 * MEMORY_COST_BYTES))
    )[0]
    assert not r.active and r.detail["judged"] == "follows_data"
    assert "follows the dataset" in r.summary


def test_memory_cost_is_configurable_per_rule() -> None:
    """A rule that says a memory costs 64 KiB excuses 20 x the default cost per memory."""
    rule = AlertRuleSpec("memory_leak", AlertKind.MEMORY_LEAK, 10.0, memory_cost_bytes=64 * 1024.0)
    r = evaluate_rule(
        rule, inputs(3600, planned_s=3600, samples=growing_data(20 * MEMORY_COST_BYTES))
    )[0]
    assert not r.active and r.detail["judged"] == "follows_data"


def test_a_figure_over_its_threshold_that_passes_says_why_first() -> None:
    """A steep but noisy trend (R² < 0.8) is not a leak; leak_excuse names the gate."""
    s = samples(
        3600,
        anon=lambda e: 300 * MB + e * 3000 + (60 * MB if int(e / 5) % 2 else 0),
        step_s=5,
    )
    fit = leak_fit(s, 360.0, field="rss_anon_bytes")
    assert fit.judged_pct_per_day is not None and fit.judged_pct_per_day > 10.0
    assert fit.judged_r2 is not None and fit.judged_r2 < 0.8
    excuse = leak_excuse(fit, threshold_pct_per_day=10.0)
    assert excuse is not None and excuse.startswith("trend not significant (R² 0.")


# -- memory exhaustion -------------------------------------------------------------------


def test_exhaustion_pages_within_minutes_with_the_forecast_time() -> None:
    """Anonymous memory +5 MB/s with 20 GB available: ~1.1 h left; pages 2 min into a 7-day
    run (no leak warm-up), with when in the summary."""
    s = samples(180, anon=lambda e: 200 * MB + 5 * MB * e)
    r = evaluate_rule(EXHAUSTION, inputs(120, planned_s=7 * 86400, samples=s))[0]
    assert r.active
    assert r.value is not None and 0.9 < r.value < 1.2  # hours left
    assert "runs out in ~1.1 h, at " in r.summary and "UTC" in r.summary
    assert "within the 24 h horizon" in r.summary


def test_exhaustion_quiet_when_the_forecast_is_past_the_horizon_and_resolves() -> None:
    """+50 KB/s with 20 GB available is ~4.6 days away: quiet. Growth that stops after a
    fast stretch (a start-up) moves the forecast away, so an active page resolves."""
    slow = samples(600, anon=lambda e: 200 * MB + 50_000 * e)
    r = evaluate_rule(EXHAUSTION, inputs(600, samples=slow))[0]
    assert not r.active and "beyond the 24 h horizon" in r.summary
    burst = samples(1800, anon=lambda e: 200 * MB + 5 * MB * min(e, 300.0))
    assert evaluate_rule(EXHAUSTION, inputs(200, samples=burst))[0].active
    later = evaluate_rule(EXHAUSTION, inputs(1500, samples=burst))[0]
    assert not later.active


def test_exhaustion_ignores_file_backed_growth_and_a_process_start() -> None:
    """Page cache growing 50 MB/s is not exhaustion; nor are the first 30 s of a process."""
    cache = samples(300, anon=lambda e: 200 * MB, file=lambda e: 50 * MB * e)
    assert not evaluate_rule(EXHAUSTION, inputs(300, samples=cache))[0].active
    start = samples(300, anon=lambda e: 200 * MB + 40 * MB * min(e, 25.0))
    r = evaluate_rule(EXHAUSTION, inputs(300, samples=start))[0]
    assert not r.active


def test_exhaustion_uses_the_smaller_cgroup_room() -> None:
    """The same growth against 2 GB left (a cgroup limit) runs out in minutes, not hours."""
    s = samples(180, anon=lambda e: 200 * MB + 1 * MB * e, available=2 * GB + 200 * MB)
    r = evaluate_rule(EXHAUSTION, inputs(180, samples=s))[0]
    assert r.active and r.value is not None and r.value < 1.0


# -- overload is the target's, lateness is soakd's ----------------------------------------


def test_drops_fire_target_overloaded_for_that_operation_not_soakd_saturated() -> None:
    """Store drops 30 % of its arrivals at the in-flight cap; recall drops none: only
    store is overloaded, soakd_saturated stays quiet, and store's error rate counts drops."""
    recs = {
        Op.STORE: [record(Op.STORE, T0 + 50 + 10 * i, 70, dropped=30) for i in range(5)],
        Op.RECALL: [record(Op.RECALL, T0 + 50 + 10 * i, 50) for i in range(5)],
    }
    now = inputs(100, intervals=recs)
    rule = AlertRuleSpec("target_overloaded", AlertKind.TARGET_OVERLOADED, 0.01)
    by_op = {r.labels["op"]: r for r in evaluate_rule(rule, now)}
    assert by_op["store"].active and not by_op["recall"].active
    assert by_op["store"].value is not None and abs(by_op["store"].value - 0.3) < 1e-9
    assert "30.0% of arrivals dropped" in by_op["store"].summary
    saturated = AlertRuleSpec("soakd_saturated", AlertKind.SOAKD_SATURATED, 0.05)
    assert not evaluate_rule(saturated, now)[0].active
    errors = AlertRuleSpec("error_rate", AlertKind.ERROR_RATE, 0.01)
    store_errors = next(r for r in evaluate_rule(errors, now) if r.labels["op"] == "store")
    assert store_errors.active and store_errors.value is not None
    assert abs(store_errors.value - 0.3) < 1e-9
    assert store_errors.detail["errors"] == {"dropped": 150}


def test_late_arrivals_stay_soakds() -> None:
    """Arrivals sent late (soakd's loop behind) fire soakd_saturated, not target_overloaded."""
    recs = {Op.STORE: [record(Op.STORE, T0 + 50 + 10 * i, 100, late=20) for i in range(5)]}
    now = inputs(100, intervals=recs)
    saturated = AlertRuleSpec("soakd_saturated", AlertKind.SOAKD_SATURATED, 0.05)
    assert evaluate_rule(saturated, now)[0].active
    rule = AlertRuleSpec("target_overloaded", AlertKind.TARGET_OVERLOADED, 0.01)
    assert not any(r.active for r in evaluate_rule(rule, now))


def test_a_count_that_stops_being_read_is_not_a_flat_count() -> None:
    """Seen against the real Engram: its system/health poll failed under load, so the
    last minute had no memory count; that minute is not "the dataset stopped growing"."""
    known_until = 3000.0
    data = [
        s if s.t - T0 <= known_until else replace(s, memories=None)
        for s in growing_data(2 * MEMORY_COST_BYTES)
    ]
    r = evaluate_rule(LEAK, inputs(3600, planned_s=3600, samples=data))[0]
    assert r.detail["judged"] == "follows_data", r.detail
    assert not r.active


def _zigzag(e: float) -> float:
    """±250 MB on alternate samples: a noisy series whose fit has a low R²."""
    return 250 * MB if int(e) % 2 else -250 * MB


def test_a_steep_but_noisy_forecast_holds_a_firing_exhaustion_page() -> None:
    """Seen against the real Engram: R² wandering around the gate resolved and re-fired
    memory_exhaustion five times in 30 minutes. Growth of 1 MB/s (20 GB gone in ~5.5 h) that
    fails the R² gate is no verdict: not active, and not judged, so a firing page holds."""
    noisy = samples(900, anon=lambda e: 1 * GB + 1 * MB * e + _zigzag(e))
    r = evaluate_rule(EXHAUSTION, inputs(900, samples=noisy))[0]
    assert not r.active and not r.judged, r.summary
    assert "not steadily" in r.summary
    flat = samples(900, anon=lambda e: 1 * GB + _zigzag(e))
    r = evaluate_rule(EXHAUSTION, inputs(900, samples=flat))[0]
    assert not r.active and r.judged, r.summary


def test_a_leak_figure_over_its_threshold_that_fails_the_r2_gate_holds_a_firing_page() -> None:
    """The same for memory_leak: +%/day far over 10 % with R² under the gate holds; a flat
    series (its figure within the threshold) is a verdict, and resolves."""
    noisy = samples(3600, anon=lambda e: 1 * GB + 200_000 * e + _zigzag(e), step_s=5)
    r = evaluate_rule(LEAK, inputs(3600, planned_s=3600, samples=noisy))[0]
    assert not r.active and not r.judged, r.summary
    assert "not significant" in r.summary
    flat = samples(3600, anon=lambda e: 1 * GB + _zigzag(e), step_s=5)
    r = evaluate_rule(LEAK, inputs(3600, planned_s=3600, samples=flat))[0]
    assert not r.active and r.judged, r.summary
