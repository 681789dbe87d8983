"""Default warm-up and window lengths, scaled to the run's planned length.

A 7-day soak and a 10-minute smoke run must both be judged: fixed windows
(an hour of warm-up, a day of leak fit) would leave a short run with nothing to
judge, and windows proportional to the run alone would make a long run's rules
sluggish. Each default is therefore a share of the planned duration, clamped
between a floor (enough samples to judge) and a ceiling (recent enough to act on).
An :class:`~soakd.spec.model.AlertRuleSpec` with ``window_s`` overrides the
trailing window of that rule.
"""

from __future__ import annotations

from dataclasses import dataclass


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


@dataclass(frozen=True)
class Windows:
    """Every length (seconds) the rules use when a rule does not set its own."""

    warmup_s: float  # excluded from every baseline and fit
    leak_warmup_s: float  # excluded from the memory fit (longer: see default_windows)
    leak_window_s: float  # trailing window of the memory fit
    leak_min_span_s: float  # the fit judges nothing before it covers this much
    baseline_s: float  # the latency baseline: this long, right after warm-up
    perf_window_s: float  # trailing window of the latency comparison
    rate_window_s: float  # error rate, saturation, crash hold, threshold rules


def default_windows(planned_duration_s: float) -> Windows:
    """The default windows of a run planned to last ``planned_duration_s``.

    =================  =====================  ========  ========
    length             share of the run        floor     ceiling
    =================  =====================  ========  ========
    warm-up            10 %                    10 s      1 h
    leak warm-up (a)   10 %                    6 min     1 h     (floor at most half the run)
    leak window        25 %                    10 min    24 h
    leak min span      5 %                     60 s      1 h
    latency baseline   10 %                    60 s      1 h
    latency window     10 %                    60 s      1 h
    rate window        5 %                     60 s      15 min
    =================  =====================  ========  ========

    (a) Engram keeps its metrics in a 5-minute window (``/metrics``,
    ``/metrics/prometheus``), and so does the reference target: its RSS grows
    for the first five minutes at any steady request rate and then levels off,
    which a fit over that stretch reads as a leak. The floor is that window
    plus a minute, or half the run if that is shorter: a short run is judged
    on its second half, where the rule's minimum growth (4 MiB) keeps such a
    metrics window quiet at test rates and still catches a gross leak.
    """
    d = max(0.0, planned_duration_s)
    return Windows(
        warmup_s=_clamp(0.10 * d, 10.0, 3600.0),
        leak_warmup_s=_clamp(0.10 * d, min(360.0, 0.5 * d), 3600.0),
        leak_window_s=_clamp(0.25 * d, 600.0, 86400.0),
        leak_min_span_s=_clamp(0.05 * d, 60.0, 3600.0),
        baseline_s=_clamp(0.10 * d, 60.0, 3600.0),
        perf_window_s=_clamp(0.10 * d, 60.0, 3600.0),
        rate_window_s=_clamp(0.05 * d, 60.0, 900.0),
    )


def cadence_window_s(expected_interval_s: float, tolerance_s: float) -> float:
    """How far back a drifted consolidation interval keeps the drift alert active."""
    return max(3.0 * expected_interval_s + tolerance_s, 60.0)
