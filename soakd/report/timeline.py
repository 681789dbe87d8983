"""Events, alert history and consolidation runs, reduced for the report.

Event kinds are the ones soakd's pieces write (target.py, runstate.py,
consolidation.py, integrity.py); unknown kinds are kept as "other" so a new
kind shows up in the timeline rather than vanishing.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence

from soakd.model import AlertState, AlertTransition, ConsolidationRun, Event, EventKind
from soakd.report.lttb import downsample
from soakd.report.model import AlertSegment, ConsolidationReport, TimelineEvent
from soakd.spec.model import Spec

#: Event kinds that mean the target died without being asked to.
CRASH_KINDS = frozenset({EventKind.TARGET_CRASH})
#: Event kinds that mean the target (or soakd's view of it) started afresh.
RESTART_KINDS = frozenset({EventKind.TARGET_RESTART})
#: Event kinds that mean soakd saw nothing for a while (a resumed run).
GAP_KINDS = frozenset({EventKind.GAP})
STALL_KINDS = frozenset({EventKind.CONSOLIDATION_STALLED})
#: A PID change this close to a restart/crash event is that event, not another one.
_PID_MATCH_S = 60.0
#: Points in the consolidation-interval chart.
CONSOLIDATION_POINTS = 1500


def category(kind: str) -> str:
    if kind in CRASH_KINDS or kind.endswith("_crash"):
        return "crash"
    if kind in RESTART_KINDS:
        return "restart"
    if kind in GAP_KINDS:
        return "gap"
    return "other"


def timeline_events(
    events: Sequence[Event], pid_changes: Sequence[tuple[float, int, int]]
) -> tuple[TimelineEvent, ...]:
    """Stored events plus PID changes that no stored restart/crash explains."""
    out = [TimelineEvent(e.t, e.kind, category(e.kind), e.message, e.detail) for e in events]
    marks = [e.t for e in out if e.category in ("crash", "restart")]
    for t, old, new in pid_changes:
        if not any(abs(t - m) <= _PID_MATCH_S for m in marks):
            out.append(
                TimelineEvent(
                    t,
                    EventKind.TARGET_PID_CHANGED,
                    "restart",
                    f"target PID changed {old} -> {new} (seen in the samples)",
                    {"old_pid": old, "new_pid": new},
                )
            )
    out.sort(key=lambda e: e.t)
    return tuple(out)


def _key(rule: str, labels: Mapping[str, str]) -> str:
    return rule + json.dumps(dict(sorted(labels.items())), separators=(",", ":"))


def alert_segments(
    history: Iterable[AlertTransition],
) -> tuple[tuple[AlertSegment, ...], dict[str, int]]:
    """Pending/firing stretches per alert instance, and how often each rule fired."""
    open_: dict[str, AlertSegment] = {}
    done: list[AlertSegment] = []
    fired: dict[str, int] = {}
    active = (AlertState.PENDING, AlertState.FIRING)
    for tr in history:
        k = _key(tr.rule, tr.labels)
        seg = open_.pop(k, None)
        if seg is not None:
            done.append(_closed(seg, tr.t))
        if tr.new in active:
            open_[k] = AlertSegment(
                tr.rule, dict(tr.labels), tr.new.value, tr.t, None, tr.value, tr.summary
            )
        if tr.new is AlertState.FIRING:
            fired[tr.rule] = fired.get(tr.rule, 0) + 1
    done.extend(open_.values())
    done.sort(key=lambda s: (s.start, s.rule))
    return tuple(done), fired


def _closed(seg: AlertSegment, end: float) -> AlertSegment:
    return AlertSegment(seg.rule, seg.labels, seg.state, seg.start, end, seg.value, seg.summary)


def consolidation_report(
    spec: Spec,
    runs: Sequence[ConsolidationRun],
    *,
    end: float,
    stall_events: int,
    stall_counter: int,
) -> ConsolidationReport:
    """Cadence figures over every observed run of every space."""
    cfg = spec.consolidation
    expected = cfg.interval_s if cfg is not None else 60.0
    tolerance = cfg.tolerance_s if cfg is not None else 5.0
    last_seen: dict[str, float] = {}
    with_interval: set[str] = set()
    intervals: list[float] = []
    ts: list[float] = []
    for r in runs:
        last_seen[r.space] = max(r.t, last_seen.get(r.space, r.t))
        if r.interval_s is not None:
            with_interval.add(r.space)
            intervals.append(r.interval_s)
            ts.append(r.t)
    drifts = [abs(i - expected) for i in intervals]
    overdue = tuple(sorted(s for s, t in last_seen.items() if end - t > expected + tolerance))
    srt = sorted(intervals)
    return ConsolidationReport(
        configured=cfg is not None,
        expected_interval_s=expected,
        tolerance_s=tolerance,
        spaces_expected=cfg.spaces if cfg is not None else 0,
        spaces_seen=len(last_seen),
        spaces_with_interval=len(with_interval),
        runs_observed=len(runs),
        intervals=len(intervals),
        interval_min_s=srt[0] if srt else None,
        interval_p50_s=statistics.median(srt) if srt else None,
        interval_max_s=srt[-1] if srt else None,
        interval_mean_s=statistics.fmean(srt) if srt else None,
        interval_stdev_s=statistics.pstdev(srt) if len(srt) > 1 else None,
        max_drift_s=max(drifts) if drifts else None,
        within_tolerance=sum(1 for d in drifts if d <= tolerance),
        stalls=max(stall_events, stall_counter),
        overdue_spaces=overdue,
        series=tuple(downsample(ts, intervals, CONSOLIDATION_POINTS)),
    )
