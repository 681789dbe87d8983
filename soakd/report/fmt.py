"""Small number and time formatters shared by the Markdown and HTML reports."""

from __future__ import annotations

import math
from datetime import UTC, datetime


def bytes_h(v: float | None) -> str:
    """Decimal units, as the plan writes them ("1.2GB", "50MB")."""
    if v is None or not math.isfinite(v):
        return "n/a"
    a = abs(v)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if a >= size:
            return f"{v / size:.{1 if a >= 10 * size else 2}f} {unit}"
    return f"{v:.0f} B"


def ms(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.3f} ms" if v < 10 else f"{v:.1f} ms"


def num(v: float | None, digits: int = 2) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:,.{digits}f}"


def when(t: float | None) -> str:
    if t is None or not math.isfinite(t):
        return "n/a"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def span(seconds: float) -> str:
    """``168 hours (7 days)``, ``12.5 hours``, ``10 minutes``, ``42 seconds``."""
    s = max(0.0, seconds)
    if s >= 86400:
        days = s / 86400
        return f"{s / 3600:.1f} hours ({days:.1f} days)".replace(".0 ", " ").replace(".0)", ")")
    if s >= 3600:
        return f"{s / 3600:.2f} hours"
    if s >= 60:
        return f"{s / 60:.1f} minutes"
    return f"{s:.0f} seconds"


def title_span(seconds: float) -> str:
    """The plan's title form: ``7-Day``, ``12-Hour``, ``10-Minute``."""
    s = max(0.0, seconds)
    if s >= 86400 and s % 86400 == 0:
        return f"{s / 86400:.0f}-Day"
    if s >= 3600:
        return f"{s / 3600:g}-Hour"
    return f"{s / 60:g}-Minute"
