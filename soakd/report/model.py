"""The report's own frozen records: what one read of the run store yields.

:func:`soakd.report.data.build_model` fills a :class:`ReportModel` once; the
criteria, the JSON, the Markdown and the HTML writers only read it. Times are
wall seconds, sizes bytes, latencies milliseconds, unless a name says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from soakd.rules.leak import LeakFit
from soakd.stats import LatencySummary

#: Version of report.json's layout. Bump the major part on any incompatible change.
SCHEMA_VERSION = "1.0"

Point = tuple[float, float]


@dataclass(frozen=True)
class Criterion:
    """One acceptance criterion and its verdict."""

    key: str  # stable id: "duration", "memory_leak", "p99_drift", ...
    name: str  # the plan's words
    passed: bool
    measured: float | None
    threshold: float | None
    unit: str
    comparison: str  # how measured must relate to threshold to pass: ">=", "<=", "<", "=="
    detail: str
    source: str  # "plan" or "spec alert rule <name>"
    applicable: bool = True  # False: not part of this spec (counts as passed, says so)
    # Why a criterion passed although its measured figure is beyond its threshold
    # ("trend not significant (R² 0.74 < 0.8)"): shown first beside the PASS, so the
    # figure never reads as a contradiction. Empty otherwise.
    note: str = ""

    @property
    def beyond_threshold(self) -> bool:
        """The measured figure fails the comparison with the threshold on its own."""
        if self.measured is None or self.threshold is None:
            return False
        m, t = self.measured, self.threshold
        holds = {">=": m >= t, "<=": m <= t, "<": m < t, ">": m > t, "==": m == t}
        return not holds.get(self.comparison, True)

    @property
    def verdict_text(self) -> str:
        """PASS / FAIL / n/a, with the reason first when a PASS stands beside a figure
        beyond its threshold."""
        if not self.applicable:
            return "n/a"
        if not self.passed:
            return "FAIL"
        return f"PASS — {self.note}" if self.note else "PASS"


@dataclass(frozen=True)
class WorkloadLine:
    """One ``workload:`` entry of the spec, for the summary."""

    operation: str
    rate_per_s: float | None
    spaces: int
    note: str = ""


@dataclass(frozen=True)
class Stretch:
    start: float
    end: float


@dataclass(frozen=True)
class LatencyPoint:
    """Percentiles of one chart window (response time, ms)."""

    t: float
    p50: float
    p99: float
    p999: float
    count: int


@dataclass(frozen=True)
class OpReport:
    """Whole-run figures and chart series of one driven operation."""

    op: str
    target_rate: float | None
    achieved_rate: float
    count: int
    ok: int
    errors: Mapping[str, int]
    dropped: int
    late: int
    covered_s: float  # sum of interval widths
    latency: LatencySummary  # response time (from the intended send)
    service: LatencySummary  # from the actual send
    baseline: Stretch | None
    baseline_p99_ms: float | None
    baseline_count: int
    last: Stretch | None
    last_p99_ms: float | None
    last_count: int
    # 95 % bounds of the two P99s: drift is judged on them, so that sampling
    # noise of a short stretch is not called drift (a 7-day run's bounds are tight).
    baseline_p99_hi_ms: float | None = None
    last_p99_lo_ms: float | None = None
    # False when the baseline has too few requests to bound its P99 from above
    # (P99 needs ~380): a rise then cannot be told from noise at 95 %.
    baseline_p99_bounded: bool = True
    # P99 of each third of the last stretch, oldest first; empty when a third holds
    # too few requests for a P99. Drift must show in every third (as the alert rule
    # requires): a burst of load on a shared machine lifts one third's tail, and
    # the bounds above assume independent requests, which a burst's are not.
    last_thirds_p99_ms: tuple[float, ...] = ()
    latency_series: tuple[LatencyPoint, ...] = ()
    ok_rate_series: tuple[Point, ...] = ()
    error_rate_series: tuple[Point, ...] = ()
    drop_rate_series: tuple[Point, ...] = ()

    @property
    def significant_drift_pct(self) -> float | None:
        """How far the last P99's lower bound is above the baseline P99's upper bound, %.

        ``None`` when the baseline cannot bound its P99 from above.
        """
        if not self.baseline_p99_bounded:
            return None
        if (
            self.baseline_p99_ms is None
            or self.baseline_p99_ms <= 0.0
            or self.baseline_p99_hi_ms is None
            or self.last_p99_lo_ms is None
        ):
            return self.drift_pct
        return (self.last_p99_lo_ms - self.baseline_p99_hi_ms) / self.baseline_p99_ms * 100.0

    @property
    def drift_pct(self) -> float | None:
        """Increase of the last stretch's P99 over the baseline's, percent."""
        if self.baseline_p99_ms is None or self.last_p99_ms is None:
            return None
        if self.baseline_p99_ms <= 0.0:
            return None
        return (self.last_p99_ms - self.baseline_p99_ms) / self.baseline_p99_ms * 100.0

    @property
    def no_response_share(self) -> float:
        """Share of arrivals that got no response: dropped because ``max_in_flight``
        requests were outstanding at the target (failures of class ``dropped``)."""
        arrivals = self.count + self.dropped
        return self.dropped / arrivals if arrivals else 0.0

    @property
    def failures(self) -> dict[str, int]:
        """Failures by class, dropped arrivals included (class ``dropped``)."""
        out = dict(self.errors)
        if self.dropped:
            out["dropped"] = self.dropped
        return out

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True)
class MemoryReport:
    """The target's memory over the run, with the leak fit."""

    samples: int
    readable: int  # samples with an RSS reading
    warmup_s: float
    rss_mean: float | None  # after warm-up
    rss_min: float | None
    rss_max: float | None
    rss_first: float | None
    rss_last: float | None
    rss_peak: float | None  # over the whole run, warm-up included
    heap_first: float | None
    heap_last: float | None
    heap_peak: float | None
    cpu_mean_pct: float | None
    memories_last: int | None
    fit: LeakFit | None  # the judged memory's (anonymous by default: fit.series says)
    heap_fit: LeakFit | None
    rss_series: tuple[Point, ...] = ()
    heap_series: tuple[Point, ...] = ()
    rss_fit: LeakFit | None = None  # total RSS, shown even when anonymous memory is judged
    parts_first: MemoryParts | None = None  # the kernel's split right after warm-up
    parts_last: MemoryParts | None = None  # ... and at the end


@dataclass(frozen=True)
class MemoryParts:
    """One reading of RSS and its parts (/proc/PID/status), and available memory."""

    t: float
    rss: int | None
    anon: int | None
    file: int | None
    shmem: int | None
    available: int | None


@dataclass(frozen=True)
class ConsolidationReport:
    configured: bool
    expected_interval_s: float
    tolerance_s: float
    spaces_expected: int
    spaces_seen: int  # spaces with at least one new generated_at
    spaces_with_interval: int  # spaces with at least two (an interval)
    runs_observed: int
    intervals: int
    interval_min_s: float | None
    interval_p50_s: float | None
    interval_max_s: float | None
    interval_mean_s: float | None
    interval_stdev_s: float | None
    max_drift_s: float | None
    within_tolerance: int
    stalls: int  # stall events and the store's counter, whichever is larger
    overdue_spaces: tuple[str, ...]  # no new run for > expected + tolerance at the end
    series: tuple[Point, ...] = ()  # (t, interval_s), downsampled


@dataclass(frozen=True)
class Integrity:
    checked: int
    lost: int
    corrupted: int


@dataclass(frozen=True)
class TimelineEvent:
    """An event of the run, sorted into a category for the timeline."""

    t: float
    kind: str
    category: str  # "crash" | "restart" | "gap" | "other"
    message: str
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Gap:
    """A stretch without samples (soakd away, or the sampler stalled)."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class AlertSegment:
    """One alert instance in one state (pending or firing) from start to end."""

    rule: str
    labels: Mapping[str, str]
    state: str
    start: float
    end: float | None  # None: still in that state at the report's end
    value: float | None
    summary: str


@dataclass(frozen=True)
class ReportModel:
    """Everything the report says, read once from the run store."""

    run_id: str
    name: str
    target_url: str
    spec_fingerprint: str
    status: str  # "completed" | "stopped" | "running"
    started_at: float
    ended_at: float | None
    end: float  # the report's end: ended_at, or the last data for a live/killed run
    generated_at: float
    last_data_at: float | None
    planned_s: float
    workload: tuple[WorkloadLine, ...]
    spaces: int
    ops: tuple[OpReport, ...]
    memory: MemoryReport
    consolidation: ConsolidationReport
    integrity: Integrity
    events: tuple[TimelineEvent, ...]
    gaps: tuple[Gap, ...]  # the longest MAX_GAPS, in time order
    alerts: tuple[AlertSegment, ...]
    alerts_fired: Mapping[str, int]  # rule -> times it went to firing
    stats_interval_s: float
    warmup_s: float
    gaps_total: int = 0  # every sample gap, also those not kept in ``gaps``
    gaps_total_s: float = 0.0

    @property
    def duration_s(self) -> float:
        return max(0.0, self.end - self.started_at)

    def op(self, name: str) -> OpReport | None:
        return next((o for o in self.ops if o.op == name), None)

    def count(self, category: str) -> int:
        return sum(1 for e in self.events if e.category == category)
