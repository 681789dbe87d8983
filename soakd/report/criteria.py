"""Verdicts: one :class:`Criterion` per acceptance criterion of Prerequisite 5.

The plan's criteria, in its order: 168+ hours continuous operation; zero memory
leaks; P99 latency drift < 5 %; consolidation cadence 60 s ± 5 s; zero crashes
or data corruption. Where the spec's alert rules give a threshold for the same
thing (memory_leak %/day, consolidation_failure drift) the criterion uses it and
says so; otherwise the plan's number. Every other alert rule of the spec adds a
criterion of its own: "never fired during the run".

Choices written down here because the plan leaves them open:

* Duration: the threshold is the plan's 168 h (or the spec's duration if
  longer). "Continuous" means the longest stretch without a crash, a restart or
  an observation gap of more than :data:`GAP_BREAK_S`; a run shorter than
  planned says so and cannot pass.
* Memory: soakd cannot run valgrind/heaptrack on the target; the verdict is the
  trend of :func:`soakd.rules.leak.leak_fit` (the alert rule's own fit) over the
  whole post-warm-up run, of the memory the memory_leak rule judges: anonymous
  memory (RssAnon) unless the rule chose total RSS. File-backed pages of mapped
  data files are reclaimable page cache, not a leak (docs/spec.md).
* A PASS beside a figure beyond its threshold carries the reason as its first
  words (:attr:`Criterion.note`), e.g. "trend not significant (R² 0.74 < 0.8)".
* Performance cannot pass while an operation dropped more than
  :data:`MAX_NO_RESPONSE_SHARE` of its arrivals at the in-flight cap: those got
  no response, and leaving them out of P99 would hide the worst latency.
* P99 drift: P99 of the last stretch against the first stretch after warm-up
  (the rules' default windows), per driven operation; an increase counts when
  it is at least 5 % AND at least :data:`P99_DRIFT_FLOOR_MS` (sub-millisecond
  changes on a shared machine are scheduler jitter, not the target), clears
  the two P99s' 95 % bounds, AND shows in each third of the last stretch, as the
  alert rule requires: the bounds treat requests as independent, but a burst of
  load on the machine slows a run of consecutive requests together, and in a
  short stretch one burst can lift the pooled P99 past them. Faster is not drift.
* Data corruption: corrupted reads AND lost writes (a 201 whose memory later
  reads 404) both fail it: the plan asks for zero crashes or data corruption and
  a lost write is lost data. A run that read nothing back cannot pass it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from soakd.report.model import Criterion, ReportModel
from soakd.rules import leak_verdict
from soakd.rules.evaluate import leak_excuse
from soakd.spec.model import AlertKind, AlertRuleSpec, Spec

PLAN_DURATION_S = 168 * 3600.0
PLAN_P99_DRIFT_PCT = 5.0
PLAN_LEAK_PCT_PER_DAY = 10.0  # the plan's own alert phrase: "RSS increases >10% per day"
PLAN_CADENCE_TOLERANCE_S = 5.0
#: An unobserved stretch longer than this breaks "continuous" operation.
GAP_BREAK_S = 300.0
#: P99 increases smaller than this (ms) are not counted as drift.
P99_DRIFT_FLOOR_MS = 1.0
#: Above this share of an operation's arrivals dropped (no response), its latency
#: cannot be called stable: the missing requests are the slowest ones.
MAX_NO_RESPONSE_SHARE = 0.01

_NOT_SUSTAINED = " (not in every third of the last stretch: a burst, not drift)"

#: Alert kinds an acceptance criterion already covers (no extra criterion for them).
_COVERED = frozenset(
    {AlertKind.MEMORY_LEAK, AlertKind.CONSOLIDATION_FAILURE, AlertKind.CRASH, AlertKind.INTEGRITY}
)


def _rule(spec: Spec, kind: AlertKind) -> AlertRuleSpec | None:
    return next((r for r in spec.alerts if r.kind is kind), None)


def _h(seconds: float) -> str:
    return f"{seconds / 3600.0:.2f} h"


def longest_stretch_s(m: ReportModel) -> float:
    """Longest time without a crash, restart or a gap of more than GAP_BREAK_S."""
    dead: list[tuple[float, float]] = [
        (e.t, e.t) for e in m.events if e.category in ("crash", "restart")
    ]
    dead += [(g.start, g.end) for g in m.gaps if g.seconds > GAP_BREAK_S]
    for e in m.events:
        if e.category == "gap":
            a, b = e.detail.get("from"), e.detail.get("to")
            if isinstance(a, int | float) and isinstance(b, int | float) and b - a > GAP_BREAK_S:
                dead.append((float(a), float(b)))
    best, cursor = 0.0, m.started_at
    for a, b in sorted(dead):
        best = max(best, min(a, m.end) - cursor)
        cursor = max(cursor, b)
    return max(best, m.end - cursor, 0.0)


def duration(m: ReportModel) -> Criterion:
    threshold = max(PLAN_DURATION_S, m.planned_s)
    stretch = min(longest_stretch_s(m), m.duration_s)
    short = m.duration_s + 1.0 < m.planned_s
    parts = [
        f"ran {_h(m.duration_s)} of the planned {_h(m.planned_s)} (status {m.status})",
        f"longest stretch without crash, restart or gap > {GAP_BREAK_S:g} s: {_h(stretch)}",
        f"the plan requires >= {_h(threshold)}",
    ]
    if short:
        parts.insert(0, f"RUN SHORTER THAN PLANNED ({_h(m.duration_s)} < {_h(m.planned_s)})")
    return Criterion(
        key="duration",
        name="168+ hours continuous operation (7+ days)",
        passed=stretch >= threshold and not short,
        measured=stretch / 3600.0,
        threshold=threshold / 3600.0,
        unit="h",
        comparison=">=",
        detail="; ".join(parts),
        source="plan",
    )


def memory_leak(m: ReportModel, spec: Spec) -> Criterion:
    rule = _rule(spec, AlertKind.MEMORY_LEAK)
    threshold = rule.threshold if rule is not None else PLAN_LEAK_PCT_PER_DAY
    abs_mb = rule.abs_mb_per_h if rule is not None else None
    source = f"spec alert rule {rule.name}" if rule is not None else "plan"
    fit = m.memory.fit
    series = fit.series if fit is not None else "anonymous memory"
    note = (
        f"from the {series} trend (soakd does not run valgrind/heaptrack on the target)"
        + _parts_text(m)
    )

    def verdict_(passed: bool, measured: float | None, detail: str, why: str = "") -> Criterion:
        return Criterion(
            key="memory_leak",
            name=f"Zero memory leaks ({series} growth within the rule)",
            passed=passed,
            measured=measured,
            threshold=threshold,
            unit="%/day",
            comparison="<=",
            detail=detail,
            source=source,
            note=why,
        )

    if fit is None or fit.judged == "insufficient":
        return verdict_(
            False,
            None,
            f"not enough {series} samples after the {m.warmup_s:g} s warm-up to judge; {note}",
        )
    fired = m.alerts_fired.get(rule.name, 0) if rule is not None else 0
    tail = f"; R² {fit.r2:.2f}; memory_leak alert fired {fired}x; {note}"
    if fit.judged == "follows_data":
        # No figure to hold against the threshold: the growth is the data's, not a leak's.
        return verdict_(
            True,
            None,
            f"not judged as a leak: {series} grew {fit.pct_per_day:+.2f} %/day while the "
            f"memory count grew ({fit.memories_first} -> {fit.memories_last}); marginal cost "
            f"{_kib(fit.marginal_bytes_per_memory)} per memory is within "
            f"{_kib(fit.bytes_per_memory_ceiling)} (4 x what a memory costs), so no leak is "
            f"judged{tail}",
        )
    pct = fit.judged_pct_per_day if fit.judged_pct_per_day is not None else fit.pct_per_day
    mb_h = fit.judged_mb_per_h if fit.judged_mb_per_h is not None else fit.mb_per_h
    # The alert rule's own test (R² gate, growth still sustained in the second
    # half, a minimum absolute growth), so the verdict and the page agree.
    leaking, why = leak_verdict(fit, threshold_pct_per_day=threshold, abs_mb_per_h=abs_mb)
    ok = not leaking
    limits = f"> {threshold:g} %/day"
    if abs_mb is not None:
        limits += f" or > {abs_mb:g} MB/h"
    what = {
        "rss": f"{series} trend after warm-up",
        "after_flat": f"{series} trend since the memory count became flat",
        "exceeds_data": (
            f"{series} grew faster than the stored data can explain "
            f"({_kib(fit.marginal_bytes_per_memory)} per stored memory > "
            f"{_kib(fit.bytes_per_memory_ceiling)})"
        ),
    }.get(fit.judged, fit.judged)
    excuse = (leak_excuse(fit, threshold_pct_per_day=threshold) or "") if ok else ""
    lead = f"{excuse}: " if excuse else ""
    return verdict_(
        ok,
        pct,
        f"{lead}{what}: {pct:+.2f} %/day ({mb_h:+.3f} MB/h) over {_h(fit.span_s)}; "
        f"a leak is {limits} ({source}), sustained and above the noise: {why}{tail}",
        excuse,
    )


def _parts_text(m: ReportModel) -> str:
    """Total RSS and each part at the end, so the judged memory is seen beside the rest."""
    p = m.memory.parts_last
    if p is None:
        return ""

    def gb(v: int | None) -> str:
        return "n/a" if v is None else f"{v / 1e9:.2f} GB"

    return (
        f"; at the end RSS {gb(p.rss)} = anonymous {gb(p.anon)} + file-backed {gb(p.file)} "
        f"+ shared {gb(p.shmem)}; available {gb(p.available)}"
    )


def _kib(v: float | None) -> str:
    return "n/a" if v is None else f"{v / 1024.0:.1f} KiB"


def p99_drift(m: ReportModel, spec: Spec) -> Criterion:
    driven = [o for o in m.ops if o.op in ("store", "recall", "spread")]
    measured: list[float] = []
    parts: list[str] = []
    ok = True
    for o in driven:
        d = o.drift_pct
        if d is None or o.baseline_p99_ms is None or o.last_p99_ms is None:
            parts.append(f"{o.op}: not measurable (no data in the baseline or last stretch)")
            ok = False
            continue
        measured.append(d)
        base = o.baseline_p99_ms
        sure = o.significant_drift_pct
        risen = (
            d >= PLAN_P99_DRIFT_PCT
            and sure is not None
            and sure >= PLAN_P99_DRIFT_PCT
            and o.last_p99_ms - base >= P99_DRIFT_FLOOR_MS
        )
        # Every third of the last stretch must show it, as the alert rule asks.
        burst = [
            ms
            for ms in o.last_thirds_p99_ms
            if (ms - base) / base * 100.0 < PLAN_P99_DRIFT_PCT or ms - base < P99_DRIFT_FLOOR_MS
        ]
        drifted = risen and not burst
        ok = ok and not drifted
        thirds = "/".join(f"{ms:.3f}" for ms in o.last_thirds_p99_ms)
        parts.append(
            f"{o.op}: baseline P99 {base:.3f} ms ({o.baseline_count} requests) "
            f"-> last {o.last_p99_ms:.3f} ms ({o.last_count}) = {d:+.1f} %"
            + (
                f" (at least {sure:+.1f} % at 95 % confidence)"
                if sure is not None
                else " (too few baseline requests to bound its P99: not judged as drift)"
            )
            + (f", by third {thirds} ms" if thirds else "")
            + (" DRIFT" if drifted else _NOT_SUSTAINED if risen else "")
        )
    if not driven:
        ok = False
        parts.append("no driven operation has any records")
    # Arrivals dropped at the in-flight cap got no response: their latency is the
    # worst there was, and it is in no percentile above.
    dropping = [o for o in driven if o.no_response_share > MAX_NO_RESPONSE_SHARE]
    for o in dropping:
        ok = False
        parts.insert(
            0,
            f"{o.op}: {o.no_response_share:.1%} of arrivals got no response ({o.dropped:,} "
            f"dropped at the in-flight cap; > {MAX_NO_RESPONSE_SHARE:.0%}): its latency "
            "cannot be called stable",
        )
    parts.append(
        f"baseline = first {_h(driven[0].baseline.end - driven[0].baseline.start)} after "
        f"warm-up, last = final stretch; increases under {P99_DRIFT_FLOOR_MS:g} ms are "
        "jitter, not drift; drift counts only when the last P99's lower 95 % bound is "
        "5 % above the baseline P99's upper bound (short stretches are noisy) and every "
        "third of the last stretch is 5 % above the baseline P99"
        if driven and driven[0].baseline is not None
        else "stretches: none"
    )
    worst = max(measured) if measured else None
    note = ""
    if ok and worst is not None and worst >= PLAN_P99_DRIFT_PCT:
        note = "drift not significant (inside the 95 % bounds or not in every third)"
    return Criterion(
        key="p99_drift",
        name="Performance stable (P99 latency drift < 5 %)",
        passed=ok,
        measured=worst,
        threshold=PLAN_P99_DRIFT_PCT,
        unit="%",
        comparison="<",
        detail="; ".join(parts),
        source="plan",
        note=note,
    )


def consolidation(m: ReportModel, spec: Spec) -> Criterion:
    c = m.consolidation
    rule = _rule(spec, AlertKind.CONSOLIDATION_FAILURE)
    tol = rule.threshold if rule is not None else c.tolerance_s
    source = f"spec alert rule {rule.name}" if rule is not None else "spec consolidation tolerance"
    name = f"Consolidation stable (cadence {c.expected_interval_s:g} s ± {tol:g} s)"
    if not c.configured:
        return Criterion(
            "consolidation_cadence",
            name,
            True,
            None,
            tol,
            "s",
            "<=",
            "not applicable: the spec observes no consolidation",
            source,
            applicable=False,
        )
    problems: list[str] = []
    if c.intervals == 0:
        problems.append("no consolidation observed (no space produced two runs)")
    missing = c.spaces_expected - c.spaces_with_interval
    if c.intervals and missing > 0:
        problems.append(
            f"no consolidation interval observed in {missing} of {c.spaces_expected} spaces"
        )
    if c.max_drift_s is not None and c.max_drift_s > tol:
        problems.append(f"max drift {c.max_drift_s:.2f} s > {tol:g} s")
    if c.stalls:
        problems.append(f"{c.stalls} stall(s)")
    if c.overdue_spaces:
        problems.append(f"overdue at the end: {', '.join(c.overdue_spaces[:5])}")
    stats = (
        f"{c.intervals} intervals in {c.spaces_with_interval} spaces; "
        f"{c.within_tolerance} within ±{tol:g} s; p50 {_s(c.interval_p50_s)}, "
        f"min {_s(c.interval_min_s)}, max {_s(c.interval_max_s)}"
    )
    return Criterion(
        key="consolidation_cadence",
        name=name,
        passed=not problems,
        measured=c.max_drift_s,
        threshold=tol,
        unit="s",
        comparison="<=",
        detail="; ".join([*problems, stats, f"tolerance from the {source}"]),
        source=source,
    )


def _s(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} s"


def crashes(m: ReportModel) -> Criterion:
    found = [e for e in m.events if e.category == "crash"]
    restarts = m.count("restart")
    first = "; ".join(f"{e.message}" for e in found[:3])
    return Criterion(
        key="crashes",
        name="Zero crashes",
        passed=not found,
        measured=float(len(found)),
        threshold=0.0,
        unit="crashes",
        comparison="==",
        detail=f"{len(found)} target_crash event(s), {restarts} restart(s)"
        + (f": {first}" if first else ""),
        source="plan",
    )


def corruption(m: ReportModel, spec: Spec) -> Criterion:
    i = m.integrity
    name = "Zero data corruption (corrupted reads and lost writes)"
    if spec.integrity.sample_fraction <= 0:
        return Criterion(
            "data_corruption",
            name,
            True,
            None,
            0.0,
            "events",
            "==",
            "not applicable: the spec reads nothing back (integrity.sample_fraction = 0)",
            "plan",
            applicable=False,
        )
    bad = i.corrupted + i.lost
    detail = (
        f"{i.checked} writes read back: {i.corrupted} corrupted, {i.lost} lost "
        "(a 201 whose memory later reads 404 is lost data and fails this criterion)"
    )
    if i.checked == 0:
        detail = "no read-backs were recorded, so nothing was verified; " + detail
    return Criterion(
        key="data_corruption",
        name=name,
        passed=bad == 0 and i.checked > 0,
        measured=float(bad),
        threshold=0.0,
        unit="events",
        comparison="==",
        detail=detail,
        source="plan",
    )


def spec_added(m: ReportModel, spec: Spec) -> Iterable[Criterion]:
    """An extra criterion per alert rule the plan's criteria do not cover: it never fired."""
    for rule in spec.alerts:
        if rule.kind in _COVERED:
            continue
        fired = m.alerts_fired.get(rule.name, 0)
        extra = ""
        if rule.kind is AlertKind.PERFORMANCE_DEGRADATION:
            drifts = [f"{o.op} {o.drift_pct:+.1f} %" for o in m.ops if o.drift_pct is not None]
            extra = f"; P99 last vs baseline: {', '.join(drifts) or 'n/a'}"
        yield Criterion(
            key=f"alert:{rule.name}",
            name=f"Alert {rule.name} never fired ({rule.phrase or rule.kind.value})",
            passed=fired == 0,
            measured=float(fired),
            threshold=0.0,
            unit="times fired",
            comparison="==",
            detail=f"fired {fired} time(s) during the run (threshold {rule.threshold:g}){extra}",
            source=f"spec alert rule {rule.name}",
        )


def evaluate(m: ReportModel, spec: Spec) -> tuple[Criterion, ...]:
    """Every criterion, the plan's first, in the plan's order."""
    found = (
        duration(m),
        memory_leak(m, spec),
        p99_drift(m, spec),
        consolidation(m, spec),
        crashes(m),
        corruption(m, spec),
        *spec_added(m, spec),
    )
    return tuple(_explained(c) for c in found)


def _explained(c: Criterion) -> Criterion:
    """A PASS beside a figure beyond its threshold always says why first."""
    if c.applicable and c.passed and c.beyond_threshold and not c.note:
        return dataclasses.replace(c, note="judged on more than this figure (see detail)")
    return c


def verdict(criteria: Sequence[Criterion]) -> str:
    """``"pass"`` when every applicable criterion passed, else ``"fail"``."""
    return "pass" if all(c.passed for c in criteria if c.applicable) else "fail"
