"""Small robust line fits for the memory and latency trends (pure, no numpy).

Theil–Sen (the median of pairwise slopes) ignores up to ~29 % of outliers, so
an allocator's step or a GC sawtooth does not tilt the line; ordinary least
squares supplies R², the goodness-of-fit gate that tells a trend from noise.
Long series are reduced to bucket medians first, which keeps Theil–Sen's
O(n²) pairs bounded (200 points: 19,900 pairs, a few milliseconds).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MAX_FIT_POINTS = 200


@dataclass(frozen=True)
class Line:
    """A fitted line ``y = intercept + slope * (t - t0)``."""

    slope: float  # Theil–Sen slope, y units per second
    intercept: float  # at t0
    t0: float
    r2: float  # least-squares coefficient of determination (0 for a flat series)
    ols_slope: float
    points: int


def bucket_medians(
    points: Sequence[tuple[float, float]], max_points: int = MAX_FIT_POINTS
) -> list[tuple[float, float]]:
    """Reduce ``points`` (sorted by t) to at most ``max_points`` (median t, median y) pairs."""
    n = len(points)
    if n <= max_points:
        return list(points)
    out: list[tuple[float, float]] = []
    for i in range(max_points):
        chunk = points[i * n // max_points : (i + 1) * n // max_points]
        if chunk:
            out.append(
                (statistics.median(p[0] for p in chunk), statistics.median(p[1] for p in chunk))
            )
    return out


def theil_sen_slope(points: Sequence[tuple[float, float]]) -> float:
    """Median of the pairwise slopes (0.0 with fewer than two distinct times)."""
    slopes: list[float] = []
    for i, (ti, yi) in enumerate(points):
        for tj, yj in points[i + 1 :]:
            if tj != ti:
                slopes.append((yj - yi) / (tj - ti))
    return statistics.median(slopes) if slopes else 0.0


def ols(points: Sequence[tuple[float, float]]) -> tuple[float, float, float]:
    """Least squares ``(slope, intercept at t=0, R²)``; R² is 0 when y does not vary."""
    n = len(points)
    if n < 2:
        return 0.0, (points[0][1] if points else 0.0), 0.0
    mt = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    stt = sum((p[0] - mt) ** 2 for p in points)
    sty = sum((p[0] - mt) * (p[1] - my) for p in points)
    syy = sum((p[1] - my) ** 2 for p in points)
    if stt == 0.0:
        return 0.0, my, 0.0
    slope = sty / stt
    r2 = (sty * sty) / (stt * syy) if syy > 0.0 else 0.0
    return slope, my - slope * mt, r2


def fit_line(points: Sequence[tuple[float, float]]) -> Line:
    """Theil–Sen slope with an OLS R², over ``points`` sorted by time."""
    reduced = bucket_medians(points)
    t0 = reduced[0][0] if reduced else 0.0
    shifted = [(t - t0, y) for t, y in reduced]  # small t keeps the sums exact
    slope = theil_sen_slope(shifted)
    ols_slope, _, r2 = ols(shifted)
    intercept = statistics.median(y - slope * t for t, y in shifted) if shifted else 0.0
    return Line(slope, intercept, t0, r2, ols_slope, len(points))
