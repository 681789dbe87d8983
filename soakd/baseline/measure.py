"""Latency at a fixed share of the throughput found, long enough to bound its P99.

Order statistics bound a percentile without a latency model
(:func:`soakd.stats.quantile_bounds`): with n answers, the true P99 lies
between the sample's percentiles at ``99 -+ 1.96 * sqrt(0.99 * 0.01 / n)`` with
~95 % confidence. Above the largest sample there is nothing to read, so n must
be at least ~380 before the P99 has an upper bound at all; the run lasts until
every operation has at least ``min_requests`` (and ``min_seconds`` have passed).

Those bounds hold for one steady process. A shared machine is not one: its load
comes and goes, and two runs minutes apart see different machines. So the run
is also cut into ``STRETCHES`` consecutive stretches (by intended send time),
and the bounds are widened to take in each stretch's own P99: a run during
which the machine's load changed says so with wider bounds, and the gate will
not call that noise a regression.
"""

from __future__ import annotations

from soakd.baseline.model import Latency
from soakd.baseline.runner import Tally
from soakd.stats import quantile_bounded_above, quantile_bounds


def requests_to_bound_p99() -> int:
    """The fewest answers whose P99 has a 95 % upper bound."""
    n = 1
    while not quantile_bounded_above(99.0, n):
        n += 1
    return n


def window_seconds(rate_per_s: float, min_seconds: float, min_requests: int) -> float:
    """How long a window at ``rate_per_s`` must last for the requests its P99 needs."""
    need = max(min_requests, requests_to_bound_p99())
    return max(min_seconds, need / rate_per_s)


#: Consecutive stretches of a latency run whose P99s widen its bounds.
STRETCHES = 4
#: A stretch with fewer answers than this has no P99 worth the name (see the 381 above).
_MIN_STRETCH = 100


def latency_of(tally: Tally, rate_per_s: float, seconds: float) -> Latency:
    h = tally.hist
    n = h.count
    lo_q, hi_q = quantile_bounds(99.0, n)
    qs = h.percentiles_ms((50.0, 95.0, 99.0, 99.9, lo_q, hi_q))
    parts = tuple(s.percentile_ms(99.0) for s in tally.stretches if s.count >= _MIN_STRETCH)
    return Latency(
        rate_per_s=rate_per_s,
        seconds=seconds,
        requests=n,
        errors=tally.error_count,
        dropped=tally.dropped,
        p50_ms=qs[50.0],
        p95_ms=qs[95.0],
        p99_ms=qs[99.0],
        p999_ms=qs[99.9],
        p99_lo_ms=min(qs[lo_q], qs[99.0], *parts),
        p99_hi_ms=max(qs[hi_q], qs[99.0], *parts),
        p99_bounded=quantile_bounded_above(99.0, n),
        p99_stretches_ms=parts,
    )
