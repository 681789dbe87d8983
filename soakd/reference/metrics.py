"""Engram-shaped metrics: JSON windows and a 5-minute-window Prometheus text.

Engram's /metrics JSON holds, per window (1 s, 10 s, 1 min, 5 min), each series'
``{count,sum,mean,min,max,p50,p90,p99}``; its /metrics/prometheus exposes the
5-minute window, so its "counters" are window sums that can go down. No
process_* metrics and no per-space labels, like the real thing.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

WINDOW_S = 300.0
WINDOWS = {"one_second": 1.0, "ten_seconds": 10.0, "one_minute": 60.0, "five_minutes": 300.0}
SCHEMA_VERSION = "1.0.0"
# Per series: enough for the 5-minute window up to ~218 observations/s; above that
# rate the windows hold the newest RING observations (memory stays bounded).
RING = 65_536
# Engram always exports these, even at zero.
ALWAYS = ("consolidation_runs_total", "consolidation_failures_total", "memories_created_total")


class _Ring:
    """The newest observations of one series, as two numpy ring buffers."""

    def __init__(self) -> None:
        # Both written in full now (np.zeros would map pages lazily): RSS must not creep up
        # as the ring fills, or a leak detector watching this server would see ~16 B/op.
        self.times = np.full(RING, -np.inf)
        self.values = np.full(RING, 0.0)
        self.next = 0

    def add(self, t: float, value: float) -> None:
        self.times[self.next] = t
        self.values[self.next] = value
        self.next = (self.next + 1) % RING

    def since(self, cutoff: float) -> np.ndarray:
        return self.values[self.times >= cutoff]


class MetricsWindow:
    """Recent observations per series; summaries computed (vectorised) when asked."""

    def __init__(self) -> None:
        self._series: dict[str, _Ring] = {}
        self.exported = 0

    def observe(self, name: str, value: float, now: float | None = None) -> None:
        """Record one observation of ``name``."""
        ring = self._series.get(name)
        if ring is None:
            ring = self._series[name] = _Ring()
        ring.add(time.monotonic() if now is None else now, value)

    def window(self, seconds: float, now: float | None = None) -> dict[str, dict[str, float]]:
        """Summaries of every series over the last ``seconds``."""
        t = time.monotonic() if now is None else now
        out: dict[str, dict[str, float]] = {}
        for name, ring in self._series.items():
            values = ring.since(t - seconds)
            if values.size:
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
        windowed = self.window(WINDOW_S, now)
        for name in ALWAYS:
            windowed.setdefault(name, _ZERO)
        for name, s in sorted(windowed.items()):
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


_ZERO = dict.fromkeys(("count", "sum", "mean", "min", "max", "p50", "p90", "p99"), 0.0)


def _summary(values: np.ndarray) -> dict[str, float]:
    n = int(values.size)
    total = float(values.sum())
    p50, p90, p99 = (float(x) for x in np.percentile(values, [50, 90, 99], method="higher"))
    return {
        "count": float(n),
        "sum": total,
        "mean": total / n,
        "min": float(values.min()),
        "max": float(values.max()),
        "p50": p50,
        "p90": p90,
        "p99": p99,
    }


def _num(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))
