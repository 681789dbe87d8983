"""When does the target run out of memory? A short robust fit of anonymous memory.

The leak rule waits out a warm-up and judges hours of trend; a target that
will be OOM-killed in two hours cannot wait for that. This forecast fits
anonymous memory (RssAnon: what the kernel cannot reclaim) over a trailing
window of minutes with Theil–Sen, and divides the memory still available (the
host's MemAvailable, or the target's cgroup room when smaller) by the slope.

A forecast is made only from a trend worth extrapolating: enough points over
enough time, a linear fit (R² gate), growth that is not levelling off (the
window's second half still grows at half the whole rate) and that moved
memory by a few MiB. Only the current process counts (a restarted target
starts afresh), and its first seconds are left out (start-up allocation).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from soakd.model import Sample
from soakd.rules.fit import fit_line

#: Trailing window of the fit (a rule's ``window`` overrides it).
EXHAUSTION_WINDOW_S = 600.0
#: The fit needs this many points over at least this span.
EXHAUSTION_MIN_POINTS = 10
EXHAUSTION_MIN_SPAN_S = 60.0
#: A process's first seconds are start-up allocation, not a trend.
EXHAUSTION_SETTLE_S = 30.0
#: The fit must explain the points this well (the leak rule's gate too).
EXHAUSTION_MIN_R2 = 0.8
#: ...grow by at least this much over the window...
EXHAUSTION_MIN_GROWTH_BYTES = 8 * 1024 * 1024
#: ...and still grow over the window's second half at this share of the whole rate.
EXHAUSTION_SUSTAINED_SHARE = 0.5


@dataclass(frozen=True)
class Forecast:
    """The anonymous-memory trend and what it leaves of available memory."""

    points: int
    span_s: float
    slope_bytes_per_s: float | None  # None: too few points to fit
    r2: float | None
    recent_slope_bytes_per_s: float | None
    growth_bytes: float | None  # slope times span
    anon_bytes: float | None  # the latest reading
    available_bytes: float | None  # the latest reading (median of the last few)
    seconds_left: float | None  # None: not growing, or not judged
    why_not: str | None  # why no forecast was made (None: there is one)

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _anon(s: Sample) -> int | None:
    # heap_bytes is RssAnon too (or smaps' Anonymous): state dirs from before the split
    return s.rss_anon_bytes if s.rss_anon_bytes is not None else s.heap_bytes


def _process_start(samples: Sequence[Sample]) -> float | None:
    """Time of the first sample of the last PID seen."""
    start: float | None = None
    last: int | None = None
    for s in samples:
        if s.pid is None:
            continue
        if s.pid != last:
            start, last = s.t, s.pid
    return start


def forecast(samples: Sequence[Sample], now: float, window_s: float) -> Forecast:
    """The forecast at ``now`` from the samples of the trailing ``window_s`` (sorted by time)."""
    start = _process_start(samples)
    lo = now - window_s
    if start is not None:
        lo = max(lo, start + EXHAUSTION_SETTLE_S)
    pid = samples[-1].pid if samples else None
    pts = [
        (s.t, float(v))
        for s in samples
        if lo <= s.t <= now and s.pid == pid and (v := _anon(s)) is not None
    ]
    avail = [float(v) for s in samples[-5:] if (v := s.mem_available_bytes) is not None]
    available = statistics.median(avail) if avail else None
    span = pts[-1][0] - pts[0][0] if len(pts) >= 2 else 0.0
    anon = pts[-1][1] if pts else None

    def empty(why: str, **kw: float | None) -> Forecast:
        fields: dict[str, float | None] = {
            "slope_bytes_per_s": None,
            "r2": None,
            "recent_slope_bytes_per_s": None,
            "growth_bytes": None,
        }
        fields.update(kw)
        return Forecast(
            len(pts), span, anon_bytes=anon, available_bytes=available, seconds_left=None,
            why_not=why, **fields,
        )  # fmt: skip

    if len(pts) < EXHAUSTION_MIN_POINTS or span < EXHAUSTION_MIN_SPAN_S:
        return empty(
            f"anonymous memory not judged yet ({len(pts)} samples over {span:.0f} s; "
            f"needs {EXHAUSTION_MIN_POINTS} over {EXHAUSTION_MIN_SPAN_S:g} s)"
        )
    line = fit_line(pts)
    half = [p for p in pts if p[0] >= pts[0][0] + span / 2.0]
    recent = fit_line(half).slope if len(half) >= 2 else None
    growth = line.slope * span
    figures: dict[str, float | None] = {
        "slope_bytes_per_s": line.slope,
        "r2": line.r2,
        "recent_slope_bytes_per_s": recent,
        "growth_bytes": growth,
    }
    rate = f"{line.slope * 3600 / 1e6:+.1f} MB/h"
    if line.slope <= 0:
        return empty(f"anonymous memory not growing ({rate})", **figures)
    if available is None:
        return empty(f"anonymous memory grows {rate}; available memory unknown", **figures)
    if growth < EXHAUSTION_MIN_GROWTH_BYTES:
        return empty(
            f"anonymous memory grows {rate}, only {growth / 1e6:.1f} MB in {span:.0f} s: "
            "too little to extrapolate",
            **figures,
        )
    if line.r2 < EXHAUSTION_MIN_R2:
        return empty(
            f"anonymous memory grows {rate} but not steadily (R² {line.r2:.2f} < "
            f"{EXHAUSTION_MIN_R2:g})",
            **figures,
        )
    if recent is None or recent < EXHAUSTION_SUSTAINED_SHARE * line.slope:
        return empty(
            f"anonymous memory grows {rate} but is levelling off (second half "
            f"{(recent or 0.0) * 3600 / 1e6:+.1f} MB/h)",
            **figures,
        )
    return Forecast(
        len(pts), span, anon_bytes=anon, available_bytes=available,
        seconds_left=available / line.slope, why_not=None, **figures,
    )  # fmt: skip
