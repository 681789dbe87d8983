"""Consolidation cadence: drift of observed intervals and stalls, per space.

Engram publishes a consolidation snapshot per space; soakd records each new
``generated_at`` as a :class:`~soakd.model.ConsolidationRun`. The first run
seen for a space has no interval. "No consolidation observed" (a stock Engram
never runs one) shows up as a stall, never as a drift of some number of seconds.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from soakd.model import ConsolidationRun


@dataclass(frozen=True)
class CadenceSummary:
    """Cadence figures over a set of consolidation runs."""

    expected_interval_s: float
    tolerance_s: float
    runs: int
    intervals: int  # runs with a previous run of the same space
    on_time: int  # intervals within tolerance of the expected one
    on_time_fraction: float | None  # None: no interval observed
    within_2s_fraction: float | None  # the 24-hour plan's "60 s ± 2 s for >= 95 %"
    mean_interval_s: float | None
    max_drift_s: float | None  # largest |interval - expected|
    drifted_spaces: tuple[str, ...]  # spaces with an interval off by more than tolerance
    last_run_by_space: tuple[tuple[str, float], ...]  # (space, wall time of its last run)
    stalled_spaces: tuple[str, ...]  # no run within expected + tolerance of ``now``
    max_overdue_s: float | None  # how far past expected + tolerance the worst space is


def cadence_summary(
    runs: Sequence[ConsolidationRun],
    expected_interval_s: float,
    tolerance_s: float,
    now: float,
) -> CadenceSummary:
    """Summarise ``runs`` against the expected interval, judging stalls at ``now``."""
    intervals = [(r.space, r.interval_s) for r in runs if r.interval_s is not None]
    drifts = [abs(iv - expected_interval_s) for _, iv in intervals]
    on_time = sum(1 for d in drifts if d <= tolerance_s)
    within_2 = sum(1 for d in drifts if d <= 2.0)
    last: dict[str, float] = {}
    for r in runs:
        last[r.space] = max(r.t, last.get(r.space, r.t))
    limit = expected_interval_s + tolerance_s
    overdue = {space: now - t - limit for space, t in last.items()}
    stalled = tuple(sorted(s for s, o in overdue.items() if o > 0))
    return CadenceSummary(
        expected_interval_s=expected_interval_s,
        tolerance_s=tolerance_s,
        runs=len(runs),
        intervals=len(intervals),
        on_time=on_time,
        on_time_fraction=on_time / len(drifts) if drifts else None,
        within_2s_fraction=within_2 / len(drifts) if drifts else None,
        mean_interval_s=statistics.fmean(iv for _, iv in intervals) if intervals else None,
        max_drift_s=max(drifts) if drifts else None,
        drifted_spaces=tuple(
            sorted({s for (s, iv) in intervals if abs(iv - expected_interval_s) > tolerance_s})
        ),
        last_run_by_space=tuple(sorted(last.items())),
        stalled_spaces=stalled,
        max_overdue_s=max(overdue.values()) if overdue else None,
    )
