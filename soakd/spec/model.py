"""The typed, frozen form of a soak spec. Built once by ``soakd.spec.load``.

No ``dict`` travels past ``soakd.spec``: mappings here are tuples of pairs or
frozen dataclasses. Units are in the names (``*_s`` seconds, ``*_bytes``).

The model is where a spec key is declared: a section's keys are its fields'
names without their unit suffix (``timeout_s`` is read from ``timeout``), unless
a field says otherwise in its metadata (``yaml_key``; None: no key of its own).
``spec_keys`` derives them; the readers (soakd.spec.sections, .workload,
.loader) accept exactly those, and a test holds docs/spec.md and
config/example.yaml to them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any

#: Field metadata: the YAML key a field is read from (None: not a key of its own).
YAML_KEY = "yaml_key"
_UNIT_SUFFIXES = ("_per_s", "_bytes", "_s")


def yaml_key(name: str | None) -> dict[str, str | None]:
    """Metadata for a field whose key is not its name minus the unit suffix."""
    return {YAML_KEY: name}


def spec_keys(cls: Any) -> tuple[str, ...]:
    """The YAML keys of a spec dataclass, in field order."""
    keys: list[str] = []
    for f in fields(cls):
        if YAML_KEY in f.metadata:
            key = f.metadata[YAML_KEY]
        else:
            key = next(
                (f.name.removesuffix(u) for u in _UNIT_SUFFIXES if f.name.endswith(u)), f.name
            )
        if key is not None:
            keys.append(key)
    return tuple(keys)


@dataclass(frozen=True)
class RecallOptions:
    max_results: int = 10
    threshold: float = 0.5
    by: str = "embedding"  # "embedding" | "text"


@dataclass(frozen=True)
class SpreadOptions:
    max_hops: int = 3  # Engram's default; usable 1..6 (>= 7 is a 400)
    decay: float = 0.1
    threshold: float = 0.01


@dataclass(frozen=True)
class OperationSpec:
    """A fixed-rate operation: store, recall or spread."""

    operation: str  # "store" | "recall" | "spread"
    rate_per_s: float
    spaces: int  # how many spaces the load is spread over (space_01..space_NN)
    max_in_flight: int = 512  # arrivals beyond this are counted as dropped
    timeout_s: float = 30.0
    # Set for operation == "recall" / "spread", from keys of their own in the entry.
    recall: RecallOptions | None = field(default=None, metadata=yaml_key(None))
    spread: SpreadOptions | None = field(default=None, metadata=yaml_key(None))


@dataclass(frozen=True)
class ConsolidationSpec:
    """``operation: consolidation``: observed, never triggered (engram-api.md §4)."""

    interval_s: float = 60.0
    spaces: int = 10
    poll_interval_s: float = 2.0
    tolerance_s: float = 5.0


class AlertKind(enum.StrEnum):
    MEMORY_LEAK = "memory_leak"
    PERFORMANCE_DEGRADATION = "performance_degradation"
    CONSOLIDATION_FAILURE = "consolidation_failure"
    CRASH = "crash"
    ERROR_RATE = "error_rate"
    INTEGRITY = "integrity"
    SOAKD_SATURATED = "soakd_saturated"
    DISK_SPACE = "disk_space"
    THRESHOLD = "threshold"  # the structured form: metric, condition, threshold
    MEMORY_EXHAUSTION = "memory_exhaustion"  # available memory runs out within a horizon
    TARGET_OVERLOADED = "target_overloaded"  # arrivals dropped at the in-flight cap


class MemorySeries(enum.StrEnum):
    """Which memory a memory rule judges (docs/spec.md, "Which memory")."""

    ANON = "anon"  # RssAnon: heap and other anonymous pages, the memory that can leak
    RSS = "rss"  # total resident set, file-backed page cache included


@dataclass(frozen=True)
class AlertRuleSpec:
    """One alert rule, from a plan phrase or the structured form.

    ``threshold`` is in the unit its kind implies: memory_leak percent per day,
    performance_degradation percent over baseline, consolidation_failure
    seconds of drift, error_rate a fraction (0.01 = 1 %), memory_exhaustion
    the horizon in seconds, target_overloaded a fraction of arrivals dropped.
    """

    name: str
    kind: AlertKind
    threshold: float
    phrase: str | None = None  # the plan's words, when it came from one
    for_s: float = 0.0
    window_s: float | None = None  # None: scaled to the run's length
    severity: str = "page"
    metric: str | None = None  # THRESHOLD kind: a Sample field or "p99_ms:<op>"
    condition: str = ">"  # THRESHOLD kind: ">", ">=", "<", "<="
    operations: tuple[str, ...] = ()  # empty: every driven operation
    abs_mb_per_h: float | None = None  # memory_leak: the absolute form (Engram's 10 MB/h)
    memory: MemorySeries = MemorySeries.ANON  # memory_leak: which memory is judged
    memory_cost_bytes: float | None = None  # memory_leak: what one stored memory costs
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    # performance_degradation: P99 per operation from a file (a soakd baseline.json or
    # {"baseline_p99_ms": {...}}) instead of the run's own first stretch.
    baseline_file: str | None = None


class ReceiverType(enum.StrEnum):
    ALERTMANAGER = "alertmanager"
    WEBHOOK = "webhook"
    SLACK = "slack"
    PAGERDUTY = "pagerduty"


@dataclass(frozen=True)
class Secret:
    """Where a secret comes from; its value is read at use, never stored or logged."""

    env: str | None = None
    file: str | None = None

    def __repr__(self) -> str:  # never show what it resolves to
        return f"Secret(env={self.env!r}, file={self.file!r})"


@dataclass(frozen=True)
class ReceiverSpec:
    name: str
    type: ReceiverType
    url: str | None = None  # plain URL (alertmanager, webhook)
    # A tokenised URL (slack, webhook with token): ``url`` as a secret reference.
    url_secret: Secret | None = field(default=None, metadata=yaml_key(None))
    routing_key: Secret | None = None  # pagerduty
    timeout_s: float = 10.0
    resend_interval_s: float = 60.0


class RestartPolicy(enum.StrEnum):
    NEVER = "never"
    ON_FAILURE = "on-failure"


@dataclass(frozen=True)
class TargetSpec:
    """How the engram process is reached and found.

    At most one of ``command``, ``pid``, ``pid_file``, ``systemd_unit``; with
    none, soakd attaches to whatever listens on ``url``'s port (or Engram's
    PID file).
    """

    url: str = "http://127.0.0.1:7432"
    api_key: Secret | None = None
    command: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    pid: int | None = None
    pid_file: str | None = None
    systemd_unit: str | None = None
    data_dir: str | None = None
    restart: RestartPolicy = RestartPolicy.NEVER
    restart_max: int = 5
    restart_backoff_s: float = 1.0
    startup_timeout_s: float = 30.0
    # Each set-up call (listing, creating a space) may take this long: Engram
    # takes ~11 s per new space and serialises them (engram-api.md §7).
    setup_timeout_s: float = 120.0
    # Connections soakd keeps to the target. A stalled server holds at most
    # this many requests "sent"; the rest wait for a connection, which counts
    # as schedule lag, so service time stays what a closed-loop client sees.
    max_connections: int = 64


@dataclass(frozen=True)
class SamplingSpec:
    interval_s: float = 1.0
    uss_interval_s: float = 60.0
    stats_interval_s: float = 10.0  # width of one HDR interval record
    flush_interval_s: float = 5.0  # the most a crash of soakd may lose
    min_free_disk_bytes: int = 512 * 1024 * 1024


@dataclass(frozen=True)
class IntegritySpec:
    sample_fraction: float = 0.01  # share of stores read back
    delay_s: float = 3.0  # how long after the 201 the read-back happens
    max_pending: int = 10_000  # bound on remembered-but-unchecked writes
    # Engram keeps at most this many hot memories per space and then evicts the
    # least-activated one; a read-back 404 in a space that full is an eviction,
    # counted apart, not a lost write.
    space_capacity: int = 100_000


@dataclass(frozen=True)
class ExporterSpec:
    listen: str | None = "127.0.0.1:9464"  # None: no exporter


@dataclass(frozen=True)
class Spec:
    """A whole, validated soak spec."""

    duration_s: float
    operations: tuple[OperationSpec, ...] = field(metadata=yaml_key("workload"))
    # An entry of ``workload`` too (operation: consolidation).
    consolidation: ConsolidationSpec | None = field(default=None, metadata=yaml_key(None))
    monitoring: tuple[str, ...] = ()
    alerts: tuple[AlertRuleSpec, ...] = ()
    receivers: tuple[ReceiverSpec, ...] = ()
    target: TargetSpec = field(default_factory=TargetSpec)
    sampling: SamplingSpec = field(default_factory=SamplingSpec)
    integrity: IntegritySpec = field(default_factory=IntegritySpec)
    exporter: ExporterSpec = field(default_factory=ExporterSpec)
    seed: int = 0
    name: str = "soak"
    # sha256 of the canonical spec (minus overrides): resume guard.
    fingerprint: str = field(default="", metadata=yaml_key(None))

    def operation(self, name: str) -> OperationSpec | None:
        return next((o for o in self.operations if o.operation == name), None)

    @property
    def space_count(self) -> int:
        """Spaces the run uses: the most any operation (or consolidation) names."""
        counts = [o.spaces for o in self.operations]
        if self.consolidation is not None:
            counts.append(self.consolidation.spaces)
        return max(counts, default=1)
