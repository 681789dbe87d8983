"""The execution plan's own forms, filled in from a run.

* The Go/No-Go checklist section "Production Soak Testing" (Task 6.1), whose four
  lines map onto acceptance criteria;
* the weekly progress template's line "Soak test: C/168 hours complete".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from soakd.report.criteria import PLAN_DURATION_S
from soakd.report.model import Criterion, ReportModel

#: The checklist's lines, in the plan's words, and the criterion each one is.
GO_NO_GO_ITEMS: tuple[tuple[str, str], ...] = (
    ("168+ hours operation", "duration"),
    ("Zero memory leaks", "memory_leak"),
    ("Performance stable", "p99_drift"),
    ("Zero crashes", "crashes"),
)
GO_NO_GO_SECTION = "Production Soak Testing"


@dataclass(frozen=True)
class ChecklistItem:
    text: str
    checked: bool
    criterion: str


def go_no_go(criteria: Sequence[Criterion]) -> tuple[ChecklistItem, ...]:
    by_key = {c.key: c for c in criteria}
    return tuple(
        ChecklistItem(text, key in by_key and by_key[key].passed, key)
        for text, key in GO_NO_GO_ITEMS
    )


def progress_hours(m: ReportModel) -> tuple[float, float]:
    """(hours complete, hours required): the template's C and 168."""
    return m.duration_s / 3600.0, max(PLAN_DURATION_S, m.planned_s) / 3600.0


def progress_line(m: ReportModel) -> str:
    """The weekly template's line, e.g. ``Soak test: 36.5/168 hours complete``."""
    done, total = progress_hours(m)
    return f"Soak test: {_num(done)}/{_num(total)} hours complete"


def _num(h: float) -> str:
    # floored, never rounded up: 167.96 h must not read as "168/168 hours complete"
    step = 10.0 if h >= 1.0 else 100.0
    return f"{math.floor(h * step) / step:g}"
