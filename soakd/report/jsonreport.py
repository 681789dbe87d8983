"""report.json: the machine-readable report (versioned; schema in docs/report.md).

Everything the Markdown says, as numbers. Times are given twice: RFC 3339 UTC
strings for people and tools (``started_at``) and UNIX seconds (``started_at_s``).
Non-finite floats become ``null`` so the file is strict JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from soakd.report.model import (
    SCHEMA_VERSION,
    AlertSegment,
    ConsolidationReport,
    Criterion,
    MemoryParts,
    MemoryReport,
    OpReport,
    ReportModel,
    Stretch,
)
from soakd.report.plan import GO_NO_GO_SECTION, go_no_go, progress_hours, progress_line
from soakd.stats import LatencySummary

#: At most this many events go into the JSON (the newest are dropped last).
MAX_EVENTS = 2000

JSON = dict[str, object]


def iso(t: float | None) -> str | None:
    if t is None or not math.isfinite(t):
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clean(value: object) -> object:
    """Replace NaN/inf by None, recursively (json.dumps would write NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _lat(s: LatencySummary) -> JSON:
    return {
        "p50": s.p50_ms,
        "p95": s.p95_ms,
        "p99": s.p99_ms,
        "p999": s.p999_ms,
        "max": s.max_ms,
        "mean": s.mean_ms,
        "count": s.count,
    }


def _stretch(s: Stretch | None) -> JSON | None:
    return None if s is None else {"start": iso(s.start), "end": iso(s.end)}


def _op(o: OpReport) -> JSON:
    return {
        "target_rate": o.target_rate,
        "achieved_rate": o.achieved_rate,
        "count": o.count,
        "ok": o.ok,
        "errors": dict(o.errors),
        "dropped": o.dropped,
        # dropped arrivals are the target's failures (class "dropped"): no response
        "failures": o.failures,
        "no_response_share": o.no_response_share,
        "late": o.late,
        "covered_s": o.covered_s,
        "latency_ms": _lat(o.latency),
        "service_ms": _lat(o.service),
        "p99_baseline_ms": o.baseline_p99_ms,
        "p99_last_ms": o.last_p99_ms,
        "p99_last_thirds_ms": list(o.last_thirds_p99_ms),
        "p99_drift_pct": o.drift_pct,
        "baseline": _stretch(o.baseline),
        "last": _stretch(o.last),
    }


def _consolidation(c: ConsolidationReport) -> JSON:
    return {
        "configured": c.configured,
        "expected_interval_s": c.expected_interval_s,
        "tolerance_s": c.tolerance_s,
        "runs_observed": c.runs_observed,
        "intervals_observed": c.intervals,
        "intervals_s": {
            "min": c.interval_min_s,
            "p50": c.interval_p50_s,
            "max": c.interval_max_s,
            "mean": c.interval_mean_s,
            "stdev": c.interval_stdev_s,
        },
        "max_drift_s": c.max_drift_s,
        "within_tolerance": c.within_tolerance,
        "stalls": c.stalls,
        "spaces_expected": c.spaces_expected,
        "spaces_seen": c.spaces_seen,
        "spaces_with_interval": c.spaces_with_interval,
        "overdue_spaces": list(c.overdue_spaces),
    }


def _memory(mem: MemoryReport) -> JSON:
    return {
        "samples": mem.samples,
        "readable": mem.readable,
        "warmup_s": mem.warmup_s,
        "rss_bytes": {
            "mean": mem.rss_mean,
            "min": mem.rss_min,
            "max": mem.rss_max,
            "first": mem.rss_first,
            "last": mem.rss_last,
            "peak": mem.rss_peak,
        },
        "heap_bytes": {"first": mem.heap_first, "last": mem.heap_last, "peak": mem.heap_peak},
        "cpu_mean_pct": mem.cpu_mean_pct,
        "memories_last": mem.memories_last,
        "judged": mem.fit.series if mem.fit is not None else None,
        "fit": mem.fit.as_dict() if mem.fit is not None else None,
        "heap_fit": mem.heap_fit.as_dict() if mem.heap_fit is not None else None,
        "rss_fit": mem.rss_fit.as_dict() if mem.rss_fit is not None else None,
        "parts_first": _parts(mem.parts_first),
        "parts_last": _parts(mem.parts_last),
    }


def _parts(p: MemoryParts | None) -> JSON | None:
    if p is None:
        return None
    return {
        "t": iso(p.t),
        "rss_bytes": p.rss,
        "anon_bytes": p.anon,
        "file_bytes": p.file,
        "shmem_bytes": p.shmem,
        "available_bytes": p.available,
    }


def _criterion(c: Criterion) -> JSON:
    return {
        "key": c.key,
        "name": c.name,
        "passed": c.passed,
        "status": "n/a" if not c.applicable else ("pass" if c.passed else "fail"),
        "measured": c.measured,
        "threshold": c.threshold,
        "unit": c.unit,
        "comparison": c.comparison,
        "detail": c.detail,
        "source": c.source,
        "applicable": c.applicable,
        "note": c.note,
        "verdict": c.verdict_text,
    }


def _segment(s: AlertSegment) -> JSON:
    return {
        "rule": s.rule,
        "labels": dict(s.labels),
        "state": s.state,
        "start": iso(s.start),
        "end": iso(s.end),
        "value": s.value,
        "summary": s.summary,
    }


def to_dict(m: ReportModel, criteria: Sequence[Criterion], verdict: str, kind: str) -> JSON:
    """The whole report.json document as plain data."""
    done_h, total_h = progress_hours(m)
    events = m.events[-MAX_EVENTS:]
    doc: JSON = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "run_id": m.run_id,
        "name": m.name,
        "target_url": m.target_url,
        "spec_fingerprint": m.spec_fingerprint,
        "status": m.status,
        "started_at": iso(m.started_at),
        "ended_at": iso(m.ended_at),
        "report_end": iso(m.end),
        "generated_at": iso(m.generated_at),
        "last_data_at": iso(m.last_data_at),
        "started_at_s": m.started_at,
        "ended_at_s": m.ended_at,
        "duration_s": m.duration_s,
        "planned_duration_s": m.planned_s,
        "verdict": verdict,
        "criteria": [_criterion(c) for c in criteria],
        "workload": {
            "operations": [
                {
                    "operation": w.operation,
                    "rate_per_s": w.rate_per_s,
                    "spaces": w.spaces,
                    "note": w.note,
                }
                for w in m.workload
            ],
            "spaces": m.spaces,
            "stats_interval_s": m.stats_interval_s,
            "warmup_s": m.warmup_s,
        },
        "operations": {o.op: _op(o) for o in m.ops},
        "consolidation": _consolidation(m.consolidation),
        "integrity": {
            "checked": m.integrity.checked,
            "lost": m.integrity.lost,
            "corrupted": m.integrity.corrupted,
        },
        "memory": _memory(m.memory),
        "events": [
            {
                "t": iso(e.t),
                "t_s": e.t,
                "kind": e.kind,
                "category": e.category,
                "message": e.message,
                "detail": dict(e.detail),
            }
            for e in events
        ],
        "events_omitted": len(m.events) - len(events),
        "gaps": [{"start": iso(g.start), "end": iso(g.end), "seconds": g.seconds} for g in m.gaps],
        "gaps_total": m.gaps_total,
        "gaps_total_s": m.gaps_total_s,
        "alerts": {
            "fired": dict(m.alerts_fired),
            "history": [_segment(s) for s in m.alerts],
        },
        "go_no_go": {
            "section": GO_NO_GO_SECTION,
            "items": [
                {"item": i.text, "checked": i.checked, "criterion": i.criterion}
                for i in go_no_go(criteria)
            ],
        },
        "progress": {"line": progress_line(m), "hours_complete": done_h, "hours_total": total_h},
    }
    return doc


def render(m: ReportModel, criteria: Sequence[Criterion], verdict: str, kind: str) -> str:
    cleaned = _clean(to_dict(m, criteria, verdict, kind))
    return json.dumps(cleaned, indent=2, default=str, allow_nan=False) + "\n"
