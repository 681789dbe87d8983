"""Engram-shaped metrics: JSON windows and a 5-minute-window Prometheus text.

Engram's /metrics JSON holds, per window (1 s, 10 s, 1 min, 5 min), each series'
``{count,sum,mean,min,max,p50,p90,p99}``; its /metrics/prometheus exposes the
5-minute window, so its "counters" are window sums that can go down. No
process_* metrics and no per-space labels, like the real thing.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

WINDOW_S = 300.0
WINDOWS = {"one_second": 1.0, "ten_seconds": 10.0, "one_minute": 60.0, "five_minutes": 300.0}
SCHEMA_VERSION = "1.0.0"
_MAX_POINTS = 400_000  # bounds memory even at ~1300 ops/s over the 5-minute window


class MetricsWindow:
    """Recent observations per series, pruned to the last five minutes."""

    def __init__(self) -> None:
        self._series: dict[str, deque[tuple[float, float]]] = {}
        self.exported = 0

    def observe(self, name: str, value: float, now: float | None = None) -> None:
        """Record one observation of ``name``."""
        t = time.monotonic() if now is None else now
        points = self._series.get(name)
        if points is None:
            points = self._series[name] = deque(maxlen=_MAX_POINTS)
        points.append((t, value))
        cutoff = t - WINDOW_S
        while points and points[0][0] < cutoff:
            points.popleft()

    def window(self, seconds: float, now: float | None = None) -> dict[str, dict[str, float]]:
        """Summaries of every series over the last ``seconds``."""
        t = time.monotonic() if now is None else now
        out: dict[str, dict[str, float]] = {}
        for name, points in self._series.items():
            values = sorted(v for ts, v in points if ts >= t - seconds)
            if values:
                out[name] = _summary(values)
        return out

    def snapshot_json(self, gauges: dict[str, float]) -> dict[str, Any]:
        """The /metrics JSON document."""
        now = time.monotonic()
        self.exported += 1
        snap: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for key, seconds in WINDOWS.items():
            snap[key] = self.window(seconds, now)
        snap["gauges"] = gauges
        return {
            "snapshot": snap,
            "export": {"exported": self.exported, "dropped": 0, "queue_depth": 0},
        }

    def prometheus_text(self, gauges: dict[str, float], now: float | None = None) -> str:
        """The /metrics/prometheus exposition of the 5-minute window."""
        lines: list[str] = []
        for name, s in sorted(self.window(WINDOW_S, now).items()):
            metric = f"engram_{name}"
            if name.endswith("_total"):
                lines += [
                    f"# HELP {metric} Sum over the last 5 minutes (not monotonic).",
                    f"# TYPE {metric} counter",
                    f"{metric} {_num(s['sum'])}",
                ]
            else:
                lines += [
                    f"# HELP {metric} Distribution over the last 5 minutes.",
                    f"# TYPE {metric} summary",
                ]
                for q in ("0.5", "0.9", "0.99"):
                    key = "p" + q[2:].ljust(2, "0")
                    lines.append(f'{metric}{{quantile="{q}"}} {_num(s[key])}')
                lines += [f"{metric}_sum {_num(s['sum'])}", f"{metric}_count {int(s['count'])}"]
        for name, value in sorted(gauges.items()):
            metric = f"engram_{name}"
            lines += [f"# HELP {metric} Current value.", f"# TYPE {metric} gauge"]
            lines.append(f"{metric} {_num(value)}")
        return "\n".join(lines) + "\n"


def _summary(values: list[float]) -> dict[str, float]:
    n = len(values)
    total = math.fsum(values)
    return {
        "count": float(n),
        "sum": total,
        "mean": total / n,
        "min": values[0],
        "max": values[-1],
        "p50": _rank(values, 0.50),
        "p90": _rank(values, 0.90),
        "p99": _rank(values, 0.99),
    }


def _rank(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def _num(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))
