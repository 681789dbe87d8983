"""Each alert kind as a pure function of :class:`RuleInputs` (no I/O, no clock).

:func:`evaluate_rule` returns one :class:`RuleResult` per alert instance:
per operation for latency and error rate, per failure mode ("drift",
"stalled") for consolidation, one for the rest. An instance whose condition
cannot be judged yet (warm-up, too few samples) is reported inactive and
``judged=False``, with a summary that says why: the engine keeps a firing
instance firing then (Prometheus's ``keep_firing_for``), as "too little data"
is not "over".

Why one module of more than 600 lines: one short function per alert kind
(eleven of them) and the helpers they share; a module per kind would be
smaller files that only make sense read together.
"""

from __future__ import annotations

import functools
import itertools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from soakd.hdr import Histogram
from soakd.model import DRIVEN_OPS, EventKind, IntervalRecord, Op, Sample
from soakd.rules.cadence import cadence_summary
from soakd.rules.exhaustion import EXHAUSTION_WINDOW_S, forecast
from soakd.rules.inputs import RuleInputs
from soakd.rules.leak import LEAK_COST_FACTOR, MEMORY_COST_BYTES, LeakFit, leak_fit, memory_field
from soakd.rules.windows import Windows, cadence_window_s, default_windows
from soakd.spec.model import AlertKind, AlertRuleSpec
from soakd.stats import merge_blobs, quantile_bounds

#: A latency comparison needs this many requests on each side.
PERF_MIN_COUNT = 200
#: ...and an absolute rise of at least this much (sub-millisecond P99s jitter by 20 %).
PERF_MIN_DELTA_MS = 1.0
#: Engram's own plan flags a leak at R² > 0.8 (engram-api.md §6).
LEAK_MIN_R2 = 0.8
#: A trend must have moved RSS by at least this much (and 1 % of the baseline) to count:
#: minutes of allocator creep extrapolate to tens of percent a day.
LEAK_MIN_GROWTH_BYTES = 4 * 1024 * 1024
LEAK_MIN_GROWTH_SHARE = 0.01
#: The second half of the fitted stretch must still grow at this share of the whole rate.
LEAK_SUSTAINED_SHARE = 0.5
#: An error rate needs this many requests in the window.
ERROR_MIN_COUNT = 20
#: target_overloaded needs this many dropped arrivals in the window (a share of a
#: handful is noise).
OVERLOAD_MIN_DROPPED = 10
#: soakd is saturated when its event loop lags this much (median over the window)...
SATURATED_LOOP_LAG_S = 0.25
#: ...or it burns this share of one core.
SATURATED_CPU_CORES = 0.9
CRASH_EVENTS = (EventKind.TARGET_CRASH, EventKind.TARGET_RESTART, EventKind.TARGET_DOWN)
_DOWN_EVENTS = (EventKind.TARGET_CRASH, EventKind.TARGET_DOWN)


@dataclass(frozen=True)
class RuleResult:
    """The verdict on one alert instance at one evaluation."""

    rule: str
    labels: Mapping[str, str]  # instance labels (e.g. operation) plus the rule's own labels
    active: bool
    value: float | None
    summary: str
    detail: Mapping[str, object] = field(default_factory=dict)
    # False: too little data in the window to say either way ("not judged
    # yet"). The engine holds a firing instance then instead of resolving it.
    judged: bool = True


def _result(
    rule: AlertRuleSpec,
    active: bool,
    value: float | None,
    summary: str,
    *,
    labels: Mapping[str, str] | None = None,
    detail: Mapping[str, object] | None = None,
    judged: bool = True,
) -> RuleResult:
    merged = {**dict(rule.labels), **(labels or {})}
    return RuleResult(rule.name, merged, active, value, summary, dict(detail or {}), judged)


def _ops(rule: AlertRuleSpec, inputs: RuleInputs) -> list[Op]:
    if rule.operations:
        return [Op(o) for o in rule.operations]
    return [op for op in DRIVEN_OPS if op in inputs.intervals]


def _percentile(metric: str | None) -> float:
    """``p99_ms`` -> 99.0, ``p999_ms`` -> 99.9 (default 99)."""
    name = (metric or "p99_ms").split(":", 1)[0].removesuffix("_ms").lstrip("p")
    if not name.isdigit():
        return 99.0
    return float(name) if len(name) <= 2 else float(name[:2] + "." + name[2:])


# -- memory leak ---------------------------------------------------------------


def leak_ceiling(rule: AlertRuleSpec | None) -> float:
    """Marginal bytes per stored memory beyond which growth is a leak while data grows."""
    cost = rule.memory_cost_bytes if rule is not None and rule.memory_cost_bytes else None
    return LEAK_COST_FACTOR * (cost or MEMORY_COST_BYTES)


def _leak(rule: AlertRuleSpec, inputs: RuleInputs, w: Windows) -> list[RuleResult]:
    fit = leak_fit(
        inputs.samples,
        w.leak_warmup_s,
        run_started=inputs.run_started,
        window_s=rule.window_s or w.leak_window_s,
        now=inputs.now,
        min_span_s=w.leak_min_span_s,
        current_process_only=True,
        field=memory_field(inputs.samples, rule.memory),
        bytes_per_memory_ceiling=leak_ceiling(rule),
    )
    active, why = _leak_verdict(rule, fit, w)
    value = fit.judged_pct_per_day if rule.threshold > 0 else fit.judged_mb_per_h
    judged = fit.judged_pct_per_day is not None and fit.span_s >= w.leak_min_span_s
    # A figure over the threshold that a gate (R², levelling off, too little growth) keeps
    # from being called a leak is no verdict either way: a firing page holds until the
    # figure itself is within the threshold. Against the real Engram, R² wandering around
    # the gate resolved and re-fired the same leak four times in 30 minutes.
    if not active and fit.judged != "follows_data" and _over_leak_threshold(rule, fit):
        judged = False
    return [_result(rule, active, value, why, detail=fit.as_dict(), judged=judged)]


def _over_leak_threshold(rule: AlertRuleSpec, fit: LeakFit) -> bool:
    pct, mb = fit.judged_pct_per_day, fit.judged_mb_per_h
    over_pct = rule.threshold > 0 and pct is not None and pct > rule.threshold
    over_abs = rule.abs_mb_per_h is not None and mb is not None and mb > rule.abs_mb_per_h
    return over_pct or over_abs


def _leak_verdict(rule: AlertRuleSpec, fit: LeakFit, w: Windows) -> tuple[bool, str]:
    return leak_verdict(
        fit,
        threshold_pct_per_day=rule.threshold,
        abs_mb_per_h=rule.abs_mb_per_h,
        min_span_s=w.leak_min_span_s,
    )


def leak_verdict(
    fit: LeakFit,
    *,
    threshold_pct_per_day: float,
    abs_mb_per_h: float | None = None,
    min_span_s: float = 0.0,
) -> tuple[bool, str]:
    """Is ``fit`` a leak under these thresholds? ``(leaking, why)``; the memory_leak rule's test.

    ``threshold_pct_per_day`` <= 0 switches the relative test off (only MB/h
    counts). The report uses this too, so its verdict and the alert agree.
    """
    if fit.judged == "follows_data":
        per = fit.marginal_bytes_per_memory or 0.0
        return False, (
            f"{fit.series} growth follows the dataset ({fit.memories_first}->"
            f"{fit.memories_last} memories, {per / 1024:.1f} KiB per memory, within "
            f"{fit.bytes_per_memory_ceiling / 1024:.1f} KiB): not judged while filling"
        )
    pct, mb, r2 = fit.judged_pct_per_day, fit.judged_mb_per_h, fit.judged_r2
    if pct is None or mb is None or r2 is None or fit.span_s < min_span_s:
        return False, f"memory trend not judged yet ({fit.points} samples over {fit.span_s:.0f} s)"
    over_pct = threshold_pct_per_day > 0 and pct > threshold_pct_per_day
    over_abs = abs_mb_per_h is not None and mb > abs_mb_per_h
    # still growing over the stretch's second half at >= half the whole rate: a growth
    # that levels off (a cache, a metrics window filling) is a warm-up, not a leak
    sustained = (
        fit.recent_pct_per_day is not None
        and fit.recent_pct_per_day > 0
        and fit.recent_pct_per_day >= LEAK_SUSTAINED_SHARE * pct
    )
    per = fit.marginal_bytes_per_memory or 0.0
    where = {
        "after_flat": " since the dataset stopped growing",
        "exceeds_data": (
            f" beyond what the dataset explains ({per / 1024:.1f} KiB per stored memory "
            f"> {fit.bytes_per_memory_ceiling / 1024:.1f} KiB)"
        ),
    }.get(fit.judged, "")
    text = f"{fit.series} grows {pct:+.1f} %/day ({mb:+.2f} MB/h, R² {r2:.2f}){where}"
    growth = fit.judged_growth_bytes or 0.0
    floor = max(LEAK_MIN_GROWTH_BYTES, LEAK_MIN_GROWTH_SHARE * (fit.baseline_bytes or 0.0))
    if growth < floor:
        return False, f"{text}; only {growth / 1e6:.2f} MB so far, too little to call a trend"
    if (over_pct or over_abs) and r2 >= LEAK_MIN_R2 and sustained:
        return True, text
    if not sustained and (over_pct or over_abs):
        return (
            False,
            f"{text}; levelling off (second half {fit.recent_pct_per_day or 0:+.1f} %/day)",
        )
    if (over_pct or over_abs) and r2 < LEAK_MIN_R2:
        return False, f"{text}; trend not significant (R² {r2:.2f} < {LEAK_MIN_R2:g})"
    return False, text


def leak_excuse(fit: LeakFit, *, threshold_pct_per_day: float) -> str | None:
    """Why a judged figure beyond ``threshold_pct_per_day`` is still not a leak, in a few words.

    None when the figure is within it (or nothing was judged). The report puts
    this first beside a PASS, so a figure over its threshold never reads as a
    contradiction.
    """
    pct, r2 = fit.judged_pct_per_day, fit.judged_r2
    if pct is None or r2 is None or threshold_pct_per_day <= 0 or pct <= threshold_pct_per_day:
        return None
    growth = fit.judged_growth_bytes or 0.0
    floor = max(LEAK_MIN_GROWTH_BYTES, LEAK_MIN_GROWTH_SHARE * (fit.baseline_bytes or 0.0))
    if growth < floor:
        return f"too little growth to call a trend ({growth / 1e6:.1f} MB < {floor / 1e6:.1f} MB)"
    if r2 < LEAK_MIN_R2:
        return f"trend not significant (R² {r2:.2f} < {LEAK_MIN_R2:g})"
    recent = fit.recent_pct_per_day
    if recent is None or recent <= 0 or recent < LEAK_SUSTAINED_SHARE * pct:
        return f"levelling off (second half {recent or 0.0:+.1f} %/day)"
    return None


# -- latency -------------------------------------------------------------------


def _perf(rule: AlertRuleSpec, inputs: RuleInputs, w: Windows) -> list[RuleResult]:
    q = _percentile(rule.metric)
    base_lo = inputs.run_started + w.warmup_s
    base_hi = base_lo + w.baseline_s
    window_lo = max(inputs.now - (rule.window_s or w.perf_window_s), base_hi)
    out: list[RuleResult] = []
    for op in _ops(rule, inputs):
        records = inputs.intervals.get(op, ())
        out.append(
            _perf_op(rule, op, records, q=q, bounds=(base_lo, base_hi, window_lo), inputs=inputs)
        )
    return out


def _perf_op(
    rule: AlertRuleSpec,
    op: Op,
    records: Sequence[IntervalRecord],
    *,
    q: float,
    bounds: tuple[float, float, float],
    inputs: RuleInputs,
) -> RuleResult:
    base_lo, base_hi, window_lo = bounds
    labels = {"op": op.value}
    window_records = [r for r in records if r.start >= window_lo]
    thirds_hists = _thirds(window_records)
    recent = Histogram()
    for h in thirds_hists:
        recent.merge(h)
    file_base = inputs.baseline_p99_ms.get(op) if q == 99.0 else None
    if file_base is not None:
        base_ms, base_n, source = file_base, PERF_MIN_COUNT, "baseline file"
        base_hi_ms = file_base
    else:
        blobs = tuple(r.response_hist for r in records if r.start >= base_lo and r.end <= base_hi)
        base_ms, base_n = _baseline_percentile(blobs, q)
        base_hi_ms = _baseline_percentile(blobs, quantile_bounds(q, base_n)[1])[0]
        source = "first stretch after warm-up"
    name = f"P{q:g}"
    if base_n < PERF_MIN_COUNT or recent.count < PERF_MIN_COUNT or base_ms <= 0:
        why = f"{op} {name} not judged yet (baseline {base_n}, window {recent.count} requests)"
        return _result(rule, False, None, why, labels=labels, judged=False)
    now_ms = recent.percentile_ms(q)
    now_lo_ms = recent.percentile_ms(quantile_bounds(q, recent.count)[0])
    pct = (now_ms / base_ms - 1.0) * 100.0
    # Beyond the noise: the window's lower 95 % bound must clear the baseline's
    # upper bound by the threshold (a week's bounds are tight; a minute's are not).
    sure_pct = (now_lo_ms - base_hi_ms) / base_ms * 100.0

    def degraded(ms: float) -> bool:
        return (ms / base_ms - 1.0) * 100.0 > rule.threshold and ms - base_ms >= PERF_MIN_DELTA_MS

    thirds = (
        [h.percentile_ms(q) for h in thirds_hists]
        if all(h.count >= PERF_MIN_COUNT // 3 for h in thirds_hists)
        else []
    )
    active = degraded(now_ms) and sure_pct > rule.threshold and all(degraded(ms) for ms in thirds)
    detail = {
        "baseline_ms": base_ms,
        "window_ms": now_ms,
        "window_thirds_ms": thirds,
        "baseline_source": source,
        "window_count": recent.count,
        "baseline_count": base_n,
        "increase_at_95pct_confidence": sure_pct,
    }
    why = f"{op} {name} {now_ms:.1f} ms vs baseline {base_ms:.1f} ms ({pct:+.0f} %)"
    return _result(rule, active, pct, why, labels=labels, detail=detail)


def _thirds(records: Sequence[IntervalRecord]) -> list[Histogram]:
    """The window's histogram in three consecutive parts (each record decoded once).

    A degradation must show in every third: a burst of load on a shared machine
    lifts one stretch's tail, a regression or a drift lifts them all.
    """
    n = len(records)
    return [
        merge_blobs(r.response_hist for r in records[i * n // 3 : (i + 1) * n // 3])
        for i in range(3)
    ]


@functools.lru_cache(maxsize=8)  # one per op and percentile; each holds its blobs
def _baseline_percentile(blobs: tuple[bytes, ...], q: float) -> tuple[float, int]:
    """(percentile ms, count) of the baseline records; memoised, as the baseline stops
    changing once its stretch is over (keyed by the encodings themselves, so never stale)."""
    hist = merge_blobs(blobs)
    return hist.percentile_ms(q), hist.count


# -- consolidation ---------------------------------------------------------------


def _consolidation(rule: AlertRuleSpec, inputs: RuleInputs, w: Windows) -> list[RuleResult]:
    expected = inputs.expected_interval_s
    if not expected:
        return []
    tol = rule.threshold if rule.threshold > 0 else inputs.consolidation_tolerance_s
    window = rule.window_s or cadence_window_s(expected, tol)
    recent = [r for r in inputs.consolidation_runs if r.t >= inputs.now - window]
    drift = cadence_summary(recent, expected, tol, inputs.now)
    drift_active = bool(drift.drifted_spaces)
    drift_text = (
        f"consolidation interval off by {drift.max_drift_s:.1f} s (> {tol:g} s) in "
        f"{', '.join(drift.drifted_spaces)}"
        if drift_active and drift.max_drift_s is not None
        else "consolidation cadence within tolerance"
    )
    drift_result = _result(
        rule,
        drift_active,
        drift.max_drift_s,
        drift_text,
        labels={"failure": "drift"},
        detail={"spaces": list(drift.drifted_spaces), "expected_interval_s": expected},
    )
    return [drift_result, _stall(rule, inputs, w, expected, tol)]


def _stall(
    rule: AlertRuleSpec, inputs: RuleInputs, w: Windows, expected: float, tol: float
) -> RuleResult:
    summary = cadence_summary(inputs.consolidation_runs, expected, tol, inputs.now)
    labels = {"failure": "stalled"}
    if summary.runs == 0:
        waited = inputs.now - inputs.run_started - w.warmup_s
        active = waited > 2 * expected + tol
        why = (
            f"no consolidation observed in {waited:.0f} s"
            if active
            else "waiting for the first consolidation"
        )
        return _result(rule, active, None, why, labels=labels, detail={"spaces": []})
    stalled = summary.stalled_spaces
    overdue = summary.max_overdue_s
    why = (
        f"no consolidation within {expected + tol:g} s in {', '.join(stalled)} "
        f"(overdue by {overdue:.0f} s)"
        if stalled and overdue is not None
        else "consolidation running"
    )
    return _result(
        rule, bool(stalled), overdue, why, labels=labels, detail={"spaces": list(stalled)}
    )


# -- crash, errors, integrity, saturation, disk ------------------------------------


def _crash(rule: AlertRuleSpec, inputs: RuleInputs, w: Windows) -> list[RuleResult]:
    window = rule.window_s or w.rate_window_s
    events = sorted((e for e in inputs.events if e.kind in CRASH_EVENTS), key=lambda e: e.t)
    recent = [e for e in events if e.t >= inputs.now - window]
    down_now = bool(events) and events[-1].kind in _DOWN_EVENTS
    restarts = _pid_changes(inputs.samples, inputs.now - window)
    active = down_now or bool(recent) or bool(restarts)
    if down_now:
        why = f"target is down since {events[-1].message or events[-1].kind}"
    elif recent:
        why = f"target {recent[-1].kind.removeprefix('target_')}: {recent[-1].message}"
    elif restarts:
        why = f"target restarted (pid {restarts[-1][0]} -> {restarts[-1][1]})"
    else:
        why = "target running"
    total = sum(1 for e in events if e.kind != EventKind.TARGET_RESTART) or len(events)
    detail = {"events": len(events), "down": down_now, "pid_changes": len(restarts)}
    return [_result(rule, active, float(total), why, detail=detail)]


def _pid_changes(samples: Sequence[Sample], since: float) -> list[tuple[int, int]]:
    pids = [(s.t, s.pid) for s in samples if s.pid is not None]
    return [
        (a[1], b[1])
        for a, b in itertools.pairwise(pids)
        if b[0] >= since and a[1] != b[1] and a[1] is not None and b[1] is not None
    ]


def _error_rate(rule: AlertRuleSpec, inputs: RuleInputs, w: Windows) -> list[RuleResult]:
    lo = inputs.now - (rule.window_s or w.rate_window_s)
    out: list[RuleResult] = []
    for op in _ops(rule, inputs):
        recs = [r for r in inputs.intervals.get(op, ()) if r.end > lo]
        # An arrival dropped because the target had max_in_flight requests outstanding
        # is a failure of the target (class "dropped"), not a request left out.
        dropped = sum(r.dropped for r in recs)
        count = sum(r.count for r in recs) + dropped
        failed = count - sum(r.ok for r in recs)
        labels = {"op": op.value}
        if count < ERROR_MIN_COUNT:
            why = f"{op}: {count} requests, not judged"
            out.append(_result(rule, False, None, why, labels=labels, judged=False))
            continue
        rate = failed / count
        keys: dict[str, int] = {"dropped": dropped} if dropped else {}
        for r in recs:
            for k, n in r.errors.items():
                keys[k] = keys.get(k, 0) + n
        why = f"{op} error rate {rate:.2%} ({failed}/{count})" + (
            f", {dropped} of them dropped arrivals" if dropped else ""
        )
        detail = {"count": count, "errors": keys}
        out.append(_result(rule, rate > rule.threshold, rate, why, labels=labels, detail=detail))
    return out


def _integrity(rule: AlertRuleSpec, inputs: RuleInputs, w: Windows) -> list[RuleResult]:
    lost = max(
        inputs.integrity_lost, sum(e.kind == EventKind.INTEGRITY_LOST_WRITE for e in inputs.events)
    )
    bad = max(
        inputs.integrity_corrupted,
        sum(e.kind == EventKind.INTEGRITY_CORRUPTED_READ for e in inputs.events),
    )
    value = float(lost + bad)
    why = f"{lost} lost and {bad} corrupted writes"
    detail = {"lost": lost, "corrupted": bad}
    return [_result(rule, value > rule.threshold, value, why, detail=detail)]


def _saturated(rule: AlertRuleSpec, inputs: RuleInputs, w: Windows) -> list[RuleResult]:
    lo = inputs.now - (rule.window_s or w.rate_window_s)
    recs = [r for rs in inputs.intervals.values() for r in rs if r.end > lo]
    arrivals = sum(r.count + r.dropped for r in recs)
    # Late only: an arrival dropped at the in-flight cap is the target's failure
    # (target_overloaded), not a sign that soakd fell behind.
    behind = sum(r.late for r in recs)
    share = behind / arrivals if arrivals else 0.0
    recent = [s for s in inputs.samples if s.t >= lo]
    lags = [s.loop_lag_s for s in recent if s.loop_lag_s is not None]
    lag = statistics.median(lags) if lags else 0.0
    cpu = _cpu_cores(recent, "self")
    reasons = []
    if arrivals and share > rule.threshold:
        reasons.append(f"{share:.2%} of arrivals sent late (soakd's loop behind)")
    if lag > SATURATED_LOOP_LAG_S:
        reasons.append(f"event-loop lag {lag * 1000:.0f} ms")
    if cpu is not None and cpu > SATURATED_CPU_CORES:
        reasons.append(f"soakd uses {cpu:.0%} of a core")
    why = "; ".join(reasons) or "soakd keeps up"
    detail = {"late_share": share, "loop_lag_s": lag, "cpu_cores": cpu}
    return [_result(rule, bool(reasons), share, why, detail=detail)]


def _overloaded(rule: AlertRuleSpec, inputs: RuleInputs, w: Windows) -> list[RuleResult]:
    """Per operation: the share of arrivals dropped because max_in_flight requests were
    outstanding at the target (the target is not keeping up; soakd's lateness is
    soakd_saturated's)."""
    lo = inputs.now - (rule.window_s or w.rate_window_s)
    out: list[RuleResult] = []
    for op in _ops(rule, inputs):
        recs = [r for r in inputs.intervals.get(op, ()) if r.end > lo]
        dropped = sum(r.dropped for r in recs)
        arrivals = sum(r.count for r in recs) + dropped
        share = dropped / arrivals if arrivals else 0.0
        labels = {"op": op.value}
        active = dropped >= OVERLOAD_MIN_DROPPED and share > rule.threshold
        why = (
            f"{op}: {share:.1%} of arrivals dropped ({dropped:,} of {arrivals:,}): the target "
            "had max_in_flight requests outstanding and got no more"
            if dropped
            else f"{op}: no arrival dropped ({arrivals:,} arrivals)"
        )
        detail = {"dropped": dropped, "arrivals": arrivals, "dropped_share": share}
        out.append(
            _result(rule, active, share, why, labels=labels, detail=detail, judged=arrivals > 0)
        )
    return out


def _exhaustion(rule: AlertRuleSpec, inputs: RuleInputs, w: Windows) -> list[RuleResult]:
    """Available memory runs out within the horizon (``threshold`` seconds) at the current
    anonymous-memory growth; no warm-up (see soakd.rules.exhaustion)."""
    f = forecast(inputs.samples, inputs.now, rule.window_s or EXHAUSTION_WINDOW_S)
    horizon = rule.threshold
    detail = {**f.as_dict(), "horizon_s": horizon}
    if f.seconds_left is None or f.slope_bytes_per_s is None:
        # Too few samples, or available memory unread: no verdict, so a firing page holds.
        # Nor is a fit that would exhaust memory within the horizon but fails a gate (R²,
        # levelling off): the page resolves when the forecast moves past the horizon.
        slope, available = f.slope_bytes_per_s, f.available_bytes
        within = slope is not None and slope > 0 and (available or 0.0) / slope <= horizon
        judged = slope is not None and available is not None and not within
        return [_result(rule, False, None, f.why_not or "not judged", detail=detail, judged=judged)]
    at = inputs.now + f.seconds_left
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))
    hours = f.seconds_left / 3600.0
    active = f.seconds_left <= horizon
    why = (
        f"anonymous memory grows {f.slope_bytes_per_s * 3600 / 1e6:+.0f} MB/h "
        f"(R² {f.r2 or 0.0:.2f}, {f.span_s / 60:.0f} min fit): the "
        f"{(f.available_bytes or 0.0) / 1e9:.1f} GB available runs out in ~{hours:.1f} h, at "
        f"{when} ({'within' if active else 'beyond'} the {horizon / 3600:g} h horizon)"
    )
    detail["exhausted_at"] = at
    return [_result(rule, active, hours, why, detail=detail)]


def _cpu_cores(samples: Sequence[Sample], who: str) -> float | None:
    """CPU seconds per second over ``samples`` (``who``: "self" for soakd, "target")."""

    def total(s: Sample) -> float | None:
        if who == "self":
            return s.self_cpu_s
        if s.cpu_user_s is None or s.cpu_system_s is None:
            return None
        return s.cpu_user_s + s.cpu_system_s

    pts = [(s.t, v) for s in samples if (v := total(s)) is not None]
    if len(pts) < 2 or pts[-1][0] <= pts[0][0] or pts[-1][1] < pts[0][1]:
        return None  # a restart resets the counter: no figure rather than a wrong one
    return (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])


def _disk(rule: AlertRuleSpec, inputs: RuleInputs, w: Windows) -> list[RuleResult]:
    events = sorted(
        (e for e in inputs.events if e.kind in (EventKind.DISK_LOW, EventKind.DISK_OK)),
        key=lambda e: e.t,
    )
    low = bool(events) and events[-1].kind == EventKind.DISK_LOW
    free = events[-1].detail.get("free_bytes") if events else None
    value = float(free) if isinstance(free, int | float) else None
    why = events[-1].message if low else "enough free disk"
    return [_result(rule, low, value, why)]


# -- the structured form -----------------------------------------------------------

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}
#: Metrics the structured form accepts besides the numeric Sample fields.
DERIVED_METRICS: tuple[str, ...] = (
    "cpu_percent",
    "self_cpu_percent",
    "p50_ms:<op>",
    "p99_ms:<op>",
    "p999_ms:<op>",
    "error_rate:<op>",
)


def threshold_value(metric: str, inputs: RuleInputs, window_s: float) -> float | None:
    """The value of a structured rule's ``metric`` over the trailing ``window_s``."""
    lo = inputs.now - window_s
    recent = [s for s in inputs.samples if s.t >= lo]
    if metric in ("cpu_percent", "self_cpu_percent"):
        cores = _cpu_cores(recent, "self" if metric.startswith("self") else "target")
        return None if cores is None else cores * 100.0
    name, _, op_name = metric.partition(":")
    if op_name:
        recs = [r for r in inputs.intervals.get(Op(op_name), ()) if r.end > lo]
        if name == "error_rate":  # dropped arrivals count as failures, as in _error_rate
            count = sum(r.count + r.dropped for r in recs)
            return (count - sum(r.ok for r in recs)) / count if count else None
        hist = merge_blobs(r.response_hist for r in recs)
        return hist.percentile_ms(_percentile(name)) if hist.count else None
    values = [float(v) for s in recent if (v := getattr(s, metric, None)) is not None]
    return statistics.median(values) if values else None


def _threshold(rule: AlertRuleSpec, inputs: RuleInputs, w: Windows) -> list[RuleResult]:
    metric = rule.metric or ""
    try:
        value = threshold_value(metric, inputs, rule.window_s or w.rate_window_s)
    except (ValueError, TypeError):
        return [_result(rule, False, None, f"unknown metric {metric!r}")]
    compare = _COMPARE.get(rule.condition, _COMPARE[">"])
    if value is None:
        return [_result(rule, False, None, f"{metric}: no data", judged=False)]
    active = compare(value, rule.threshold)
    why = f"{metric} = {value:.4g} ({rule.condition} {rule.threshold:g})"
    return [_result(rule, active, value, why)]


_KINDS: dict[AlertKind, Callable[[AlertRuleSpec, RuleInputs, Windows], list[RuleResult]]] = {
    AlertKind.MEMORY_LEAK: _leak,
    AlertKind.PERFORMANCE_DEGRADATION: _perf,
    AlertKind.CONSOLIDATION_FAILURE: _consolidation,
    AlertKind.CRASH: _crash,
    AlertKind.ERROR_RATE: _error_rate,
    AlertKind.INTEGRITY: _integrity,
    AlertKind.SOAKD_SATURATED: _saturated,
    AlertKind.DISK_SPACE: _disk,
    AlertKind.THRESHOLD: _threshold,
    AlertKind.MEMORY_EXHAUSTION: _exhaustion,
    AlertKind.TARGET_OVERLOADED: _overloaded,
}


def evaluate_rule(rule: AlertRuleSpec, inputs: RuleInputs) -> list[RuleResult]:
    """Judge ``rule`` on ``inputs``: one result per alert instance (PURE)."""
    return _KINDS[rule.kind](rule, inputs, default_windows(inputs.planned_duration_s))
