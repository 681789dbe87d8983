"""The live views of a run: the /status mapping and the one-line progress.

``build_status`` produces the JSON that ``/status`` serves and that
``soakd status`` renders (soakd.statusview); ``progress_line`` is the terminal
line and the systemd STATUS= text. Pure functions of what they are given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from soakd.consolidation import ConsolidationWatcher
from soakd.model import Alert, AlertState, Op, RunInfo, Sample
from soakd.spec.model import Spec
from soakd.stats import OpSummary


def build_status(
    *,
    info: RunInfo,
    spec: Spec,
    now: float,
    totals: Mapping[Op, OpSummary],
    alerts: Sequence[Alert],
    sample: Sample | None,
    restarts: int,
    crashes: int,
    watcher: ConsolidationWatcher | None,
    integrity: tuple[int, int, int],
    running: bool,
) -> dict[str, object]:
    """Everything the weekly review needs, as plain JSON values."""
    elapsed = max(0.0, now - info.started_at)
    firing = [a for a in alerts if a.state is AlertState.FIRING]
    checked, lost, corrupted = integrity
    failing = bool(firing) or crashes > 0 or lost > 0 or corrupted > 0
    operations: dict[str, object] = {}
    for op, t in totals.items():
        o = spec.operation(op.value)
        operations[op.value] = {
            "target_rate": o.rate_per_s if o else None,
            "achieved_rate": round(t.achieved_rate, 3),
            "count": t.count,
            "ok": t.ok,
            "errors": sum(t.errors.values()),
            "dropped": t.dropped,
            "p99_ms": round(t.latency.p99_ms, 3),
        }
    consolidation: dict[str, object] = {}
    if watcher is not None:
        consolidation = {
            "runs_observed": watcher.runs_observed,
            "last_interval_s": watcher.last_interval_s,
            "max_drift_s": watcher.max_drift_s,
            "stalls": watcher.stalls,
        }
    return {
        "run_id": info.run_id,
        "status": "running" if running else "stopping",
        "started_at": info.started_at,
        "elapsed_s": round(elapsed, 1),
        "planned_s": spec.duration_s,
        "hours_done": round(elapsed / 3600, 2),
        "hours_planned": round(spec.duration_s / 3600, 2),
        "verdict_so_far": "fail" if failing else "pass",
        "firing_alerts": [
            {
                "alertname": a.rule,
                "severity": a.severity,
                "summary": a.summary,
                "since": a.since,
                "labels": dict(a.labels),
            }
            for a in firing
        ],
        "operations": operations,
        "target": {
            "pid": sample.pid if sample else None,
            "rss_bytes": sample.rss_bytes if sample else None,
            "restarts": restarts,
            "crashes": crashes,
        },
        "consolidation": consolidation,
        "integrity": {"checked": checked, "lost": lost, "corrupted": corrupted},
    }


BAR_WIDTH = 30


def progress_line(status: Mapping[str, object]) -> str:
    """``26h10m/168h [====>   ] 15.6% | store 100.0/s p99 3.1ms err 0 drop 0 | alerts firing: 0``.

    Elapsed and planned time in the units a reader counts in (as k6 shows them),
    and a bar, rather than fractions of an hour that read 0.01/0.01 h in a demo.
    """
    elapsed = _seconds(status.get("elapsed_s"))
    planned = _seconds(status.get("planned_s"))
    parts = [f"{clock_span(elapsed, planned)}/{clock_span(planned, planned, total=True)}"]
    if planned > 0:
        parts[0] += f" {bar(elapsed / planned)} {min(100.0, 100 * elapsed / planned):.1f}%"
    ops = status.get("operations")
    if isinstance(ops, Mapping):
        for name, o in ops.items():
            if isinstance(o, Mapping):
                parts.append(
                    f"{name} {o.get('achieved_rate', 0):.1f}/s p99 {o.get('p99_ms', 0):.1f}ms"
                    f" err {o.get('errors', 0)} drop {o.get('dropped', 0)}"
                )
    firing = status.get("firing_alerts")
    n = len(firing) if isinstance(firing, list) else 0
    parts.append(f"alerts firing: {n}")
    return " | ".join(parts)


def clock_span(seconds: float, scale_s: float, *, total: bool = False) -> str:
    """``00m12s`` when ``scale_s`` (the run's length) is under an hour, else ``26h10m``.

    Both ends of ``elapsed/total`` take the total's units, so they line up and
    the seconds of a week-long run do not flicker. A total of whole hours drops
    its minutes (``168h``). Elapsed time is truncated, never rounded past the truth.
    """
    whole = max(0, int(seconds))
    if scale_s < 3600:
        return f"{whole // 60:02d}m{whole % 60:02d}s"
    hours, minutes = whole // 3600, whole % 3600 // 60
    if total and minutes == 0:
        return f"{hours:02d}h"
    return f"{hours:02d}h{minutes:02d}m"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """``[=========>          ]``: ``fraction`` of ``width`` filled, clipped to 0..1."""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    if filled >= width:
        return "[" + "=" * width + "]"
    return "[" + "=" * filled + ">" + " " * (width - filled - 1) + "]"


def _seconds(v: object) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0
