"""When checkpoint reports are due: daily, and at the plan's mid-point.

The plan's monitoring: "Daily: Analyze memory growth trend", "Day 3: Mid-point
validation (restart if issues)", "Day 7: Final validation". The daemon asks
:func:`checkpoint_due` now and then and, when it names a checkpoint, writes a
full report with ``basename=f"checkpoint-{name}"`` into ``state_dir/checkpoints``
while the run goes on. The final report is not a checkpoint.

Mid-point: at the end of day ``floor(planned_days / 2)`` for runs of two days
or more (day 3 of a 7-day run, as the plan has it), else at half the planned
duration. A daily checkpoint that falls on the mid-point is the mid-point.
After a pause (soakd down across several days) only the latest daily
checkpoint that has passed is written, not a backlog of stale ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

DAY_S = 86400.0


def midpoint_s(planned_s: float) -> float:
    """Seconds after the start at which the mid-point checkpoint is due."""
    days = planned_s / DAY_S
    if days >= 2.0:
        return math.floor(days / 2.0) * DAY_S
    return planned_s / 2.0


def schedule(planned_s: float) -> list[tuple[float, str]]:
    """Every checkpoint of a run planned to last ``planned_s``: (offset s, name), in order."""
    if planned_s <= 0:
        return []
    mid = midpoint_s(planned_s)
    out = [(mid, "midpoint")]
    day = 1
    while day * DAY_S < planned_s:
        if day * DAY_S != mid:
            out.append((day * DAY_S, f"day-{day}"))
        day += 1
    out.sort()
    return out


def checkpoint_due(
    started_at: float, planned_s: float, now: float, done: Sequence[str]
) -> str | None:
    """The checkpoint to write now, or None; never one in ``done``."""
    passed = [(t, name) for t, name in schedule(planned_s) if started_at + t <= now]
    latest_daily = max((t for t, name in passed if name.startswith("day-")), default=None)
    for t, name in passed:
        if name in done:
            continue
        if name.startswith("day-") and t != latest_daily:
            continue  # superseded by a later day that has also passed
        return name
    return None
