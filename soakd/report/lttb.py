"""Largest-Triangle-Three-Buckets downsampling for report charts.

A week of 1 s samples is 604,800 points; a chart needs ~1,000. LTTB (Steinarsson,
2013) keeps the visual shape by picking, per bucket, the point that makes the
largest triangle with its neighbours, which favours peaks and troughs. It still
may drop a lone extreme that shares a bucket with a bigger swing, so
:func:`downsample` also puts back the series' global maximum and minimum: a
report must never hide the highest RSS or the worst latency it saw.

NaN values (a sample that could not be read) are skipped, not plotted as zero;
x values must be finite and ascending.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence

Point = tuple[float, float]


def lttb(xs: Sequence[float], ys: Sequence[float], threshold: int) -> list[int]:
    """Indices (ascending) of at most ``threshold`` points chosen by LTTB.

    ``xs`` must be ascending and hold no NaN; ``ys`` holds no NaN.
    """
    n = len(xs)
    if threshold >= n or n <= 2:
        return list(range(n))
    if threshold < 3:
        return [0, n - 1]
    out = [0]
    every = (n - 2) / (threshold - 2)
    a = 0
    for i in range(threshold - 2):
        # the average of the NEXT bucket is the third corner of the triangle
        nxt_lo = int((i + 1) * every) + 1
        nxt_hi = min(int((i + 2) * every) + 1, n)
        span = nxt_hi - nxt_lo
        if span > 0:
            avg_x = math.fsum(xs[nxt_lo:nxt_hi]) / span
            avg_y = math.fsum(ys[nxt_lo:nxt_hi]) / span
        else:
            avg_x, avg_y = xs[n - 1], ys[n - 1]
        lo = int(i * every) + 1
        hi = int((i + 1) * every) + 1
        ax, ay = xs[a], ys[a]
        best, best_area = lo, -1.0
        dx, dy = ax - avg_x, avg_y - ay
        for j in range(lo, hi):
            # twice the triangle's area; the constant factor does not change the argmax
            area = abs(dx * (ys[j] - ay) + (xs[j] - ax) * dy)
            if area > best_area:
                best_area, best = area, j
        out.append(best)
        a = best
    out.append(n - 1)
    return out


def downsample(xs: Sequence[float], ys: Sequence[float], max_points: int) -> list[Point]:
    """At most ``max_points`` (+2 for the extremes) points of the series, peaks kept."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    px: Sequence[float] = xs
    py: Sequence[float] = ys
    # times are never NaN here (they are the store's keys); only values are checked
    if any(map(math.isnan, ys)):
        # copy only when needed: a week of samples is 600k points
        keep_idx = [i for i in range(len(xs)) if not math.isnan(ys[i])]
        px = array("d", (xs[i] for i in keep_idx))
        py = array("d", (ys[i] for i in keep_idx))
    if not px:
        return []
    if len(px) <= max_points:
        return list(zip(px, py, strict=True))
    keep = set(lttb(px, py, max_points))
    keep.add(max(range(len(py)), key=py.__getitem__))
    keep.add(min(range(len(py)), key=py.__getitem__))
    return [(px[i], py[i]) for i in sorted(keep)]
