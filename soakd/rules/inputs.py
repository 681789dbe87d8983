"""What the rules read: :class:`RuleInputs`, gathered from the run store.

:func:`gather_inputs` is the only blocking piece of soakd.rules (SQLite): the
daemon calls it through ``asyncio.to_thread``. It reads only what the windows
need: the latency and memory baselines right after warm-up, the trailing
windows, recent consolidation runs and the (few) events. Long sample windows are
reduced to bucket medians so that a 24-hour window costs the fit the same as a
10-minute one.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from soakd.model import ConsolidationRun, Event, EventKind, IntervalRecord, Op, RunReader, Sample
from soakd.rules.windows import cadence_window_s, default_windows
from soakd.spec.model import AlertKind, AlertRuleSpec

#: Event kinds the rules read.
EVENT_KINDS: tuple[EventKind, ...] = (
    EventKind.TARGET_CRASH,
    EventKind.TARGET_RESTART,
    EventKind.TARGET_DOWN,
    EventKind.CONSOLIDATION_STALLED,
    EventKind.CONSOLIDATION_RECOVERED,
    EventKind.DISK_LOW,
    EventKind.DISK_OK,
    EventKind.PERMISSION,
    EventKind.INTEGRITY_LOST_WRITE,
    EventKind.INTEGRITY_CORRUPTED_READ,
)
#: Most samples handed to the rules per window (bucket medians beyond that).
MAX_WINDOW_SAMPLES = 1500


@dataclass(frozen=True)
class RuleInputs:
    """Everything a rule needs for one evaluation at wall time ``now``."""

    now: float
    run_started: float
    planned_duration_s: float
    samples: Sequence[Sample]  # baseline stretch + trailing window, sorted (maybe downsampled)
    intervals: Mapping[Op, Sequence[IntervalRecord]]  # per op, sorted by start
    consolidation_runs: Sequence[ConsolidationRun]
    expected_interval_s: float | None
    consolidation_tolerance_s: float
    events: Sequence[Event]
    integrity_lost: int
    integrity_corrupted: int
    baseline_p99_ms: Mapping[Op, float] = field(default_factory=dict)


def downsample(samples: Sequence[Sample], max_samples: int = MAX_WINDOW_SAMPLES) -> list[Sample]:
    """At most ``max_samples`` samples: each bucket's middle sample with the bucket's median RSS.

    The median keeps the memory fit robust to single spikes; the other fields
    come from the middle sample (the count fields only grow or stay flat).
    """
    n = len(samples)
    if n <= max_samples:
        return list(samples)
    out: list[Sample] = []
    for i in range(max_samples):
        chunk = samples[i * n // max_samples : (i + 1) * n // max_samples]
        if not chunk:
            continue
        mid = chunk[len(chunk) // 2]
        rss = [s.rss_bytes for s in chunk if s.rss_bytes is not None]
        out.append(dataclasses.replace(mid, rss_bytes=int(statistics.median(rss)) if rss else None))
    return out


def _horizons(
    planned_duration_s: float, rules: Sequence[AlertRuleSpec], expected: float | None, tol: float
) -> tuple[float, float, float]:
    """(sample window, interval window, consolidation window) to read, in seconds."""
    w = default_windows(planned_duration_s)
    sample_w = max(w.leak_window_s, w.rate_window_s)
    interval_w = max(w.perf_window_s, w.rate_window_s)
    cons_w = cadence_window_s(expected, tol) if expected else 0.0
    for r in rules:
        if r.window_s is None:
            continue
        if r.kind in (
            AlertKind.MEMORY_LEAK,
            AlertKind.MEMORY_EXHAUSTION,
            AlertKind.THRESHOLD,
            AlertKind.SOAKD_SATURATED,
        ):
            sample_w = max(sample_w, r.window_s)
        if r.kind is AlertKind.CONSOLIDATION_FAILURE:
            cons_w = max(cons_w, r.window_s)
        interval_w = max(interval_w, r.window_s)
    if expected:
        cons_w = max(cons_w, 10.0 * expected)  # far enough back to find each space's last run
    return sample_w, interval_w, cons_w


def _merge_unique(a: Sequence[Sample], b: Sequence[Sample]) -> list[Sample]:
    seen = {s.t for s in a}
    return sorted([*a, *(s for s in b if s.t not in seen)], key=lambda s: s.t)


def gather_inputs(
    reader: RunReader,
    now: float,
    *,
    expected_interval_s: float | None,
    tolerance_s: float,
    integrity_lost: int,
    integrity_corrupted: int,
    baseline_p99_ms: Mapping[Op, float] | None = None,
    rules: Sequence[AlertRuleSpec] = (),
) -> RuleInputs:
    """Read the windows the rules need from ``reader`` (BLOCKING: call it in a thread).

    ``rules`` (optional) widens the windows read to any rule's own ``window_s``.
    """
    info = reader.run_info()
    w = default_windows(info.planned_duration_s)
    sample_w, interval_w, cons_w = _horizons(
        info.planned_duration_s, rules, expected_interval_s, tolerance_s
    )
    # samples: the memory baseline right after the leak warm-up, then the trailing window
    mem_lo = info.started_at + w.leak_warmup_s
    mem_hi = mem_lo + 300.0
    recent = downsample(reader.samples(since=max(mem_hi, now - sample_w), until=now))
    head = reader.samples(since=info.started_at, until=min(mem_hi, now))
    samples = _merge_unique(downsample(head, 600), recent)
    base_lo = info.started_at + w.warmup_s
    records = _merge_records(
        reader.intervals(since=base_lo, until=base_lo + w.baseline_s),
        reader.intervals(since=now - interval_w, until=now),
    )
    per_op: dict[Op, list[IntervalRecord]] = {}
    for r in records:
        per_op.setdefault(r.op, []).append(r)
    runs = reader.consolidation_runs(since=now - cons_w) if expected_interval_s else []
    return RuleInputs(
        now=now,
        run_started=info.started_at,
        planned_duration_s=info.planned_duration_s,
        samples=samples,
        intervals=per_op,
        consolidation_runs=runs,
        expected_interval_s=expected_interval_s,
        consolidation_tolerance_s=tolerance_s,
        events=reader.events(kinds=EVENT_KINDS),
        integrity_lost=integrity_lost,
        integrity_corrupted=integrity_corrupted,
        baseline_p99_ms=dict(baseline_p99_ms or {}),
    )


def _merge_records(
    a: Sequence[IntervalRecord], b: Sequence[IntervalRecord]
) -> list[IntervalRecord]:
    keyed = {(r.op, r.start, r.end): r for r in (*a, *b)}
    return sorted(keyed.values(), key=lambda r: (r.start, r.op.value))
