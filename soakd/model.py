"""Shared frozen records and Protocols that travel between soakd's pieces.

Imports nothing else of soakd, so every leaf module can depend on it without
import cycles (the structlog habit). Times come in two kinds and the names say
which: ``*_ns`` are monotonic nanoseconds (for durations and schedules),
``*_s`` / ``t`` are wall-clock UNIX seconds (for storage and reports).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol


class Op(enum.StrEnum):
    """The measured operations. READBACK is the integrity check's GET."""

    STORE = "store"
    RECALL = "recall"
    SPREAD = "spread"
    READBACK = "readback"


#: Operations driven at a fixed rate by the scheduler.
DRIVEN_OPS: tuple[Op, ...] = (Op.STORE, Op.RECALL, Op.SPREAD)


class Outcome(enum.StrEnum):
    """How one request ended. HTTP failures carry the status in OpResult.status."""

    OK = "ok"
    HTTP_ERROR = "http_error"  # any non-2xx answer; key in reports is "http_<status>"
    TIMEOUT = "timeout"
    CONNECTION = "connection_error"  # refused, reset, DNS, closed mid-answer
    INVALID = "invalid_response"  # 2xx but the body is not what Engram sends


@dataclass(frozen=True, slots=True)
class OpResult:
    """One finished request, timed from when it *should* have been sent."""

    op: Op
    space: str
    intended_ns: int  # the schedule's instant (coordinated-omission-free origin)
    sent_ns: int
    done_ns: int
    outcome: Outcome
    status: int | None = None  # HTTP status when one was received
    error_code: str | None = None  # Engram's error.code, when it sent one
    memory_id: str | None = None  # the ID a store wrote (for read-back)

    @property
    def error_key(self) -> str:
        """The key this result is counted under in ``errors{}`` (``ok`` for success)."""
        if self.outcome is Outcome.HTTP_ERROR:
            return f"http_{self.status}"
        return self.outcome.value

    @property
    def response_ns(self) -> int:
        return self.done_ns - self.intended_ns

    @property
    def service_ns(self) -> int:
        return self.done_ns - self.sent_ns

    @property
    def lag_ns(self) -> int:
        return self.sent_ns - self.intended_ns


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of the target process (and of soakd itself) at wall time ``t``.

    ``None`` means "could not be read" (process gone, AccessDenied, not Linux),
    never zero.
    """

    t: float
    pid: int | None
    rss_bytes: int | None = None
    heap_bytes: int | None = None  # Anonymous from /proc/PID/smaps_rollup
    uss_bytes: int | None = None  # sampled rarely: it costs ~20 ms on a 2 GiB process
    cpu_user_s: float | None = None
    cpu_system_s: float | None = None
    read_bytes: int | None = None
    write_bytes: int | None = None
    num_fds: int | None = None
    num_threads: int | None = None
    data_dir_bytes: int | None = None
    memories: int | None = None  # data size: stored memories across the run's spaces
    self_rss_bytes: int | None = None
    self_cpu_s: float | None = None
    loop_lag_s: float | None = None
    # The kernel's split of rss_bytes (/proc/PID/status RssAnon, RssFile, RssShmem): only
    # anonymous memory can leak; file-backed pages of mapped data files are reclaimable cache.
    rss_anon_bytes: int | None = None
    rss_file_bytes: int | None = None
    rss_shmem_bytes: int | None = None
    # Memory the target could still get: MemAvailable of the host, or of its cgroup v2 when the
    # cgroup has a limit (memory.max - memory.current), whichever is smaller.
    mem_available_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class IntervalRecord:
    """Per-operation counts and HDR histograms for one stats interval.

    The histograms are ``hdrh`` encodings (compressed, base64) of microsecond
    values; decode and merge them with :mod:`soakd.stats`.
    """

    op: Op
    start: float  # wall seconds
    end: float
    count: int
    ok: int
    errors: Mapping[str, int]
    dropped: int
    late: int
    response_hist: bytes
    service_hist: bytes
    lag_hist: bytes


@dataclass(frozen=True, slots=True)
class ConsolidationRun:
    """A new ``generated_at`` seen for one space."""

    space: str
    t: float  # wall seconds when soakd saw it
    generated_at: str  # as Engram sent it (RFC 3339)
    generated_s: float  # the same, parsed
    interval_s: float | None  # since the previous run of this space, if any


class EventKind(enum.StrEnum):
    """Every kind of event soakd records: the one list (values are what the run store keeps)."""

    RUN_STARTED = "run_started"
    RUN_ENDED = "run_ended"
    GAP = "gap"  # soakd was away (a resumed run)
    CHECKPOINT = "checkpoint"
    STORE_WRITE_FAILED = "store_write_failed"
    TARGET_CRASH = "target_crash"
    TARGET_DOWN = "target_down"
    TARGET_RESTART = "target_restart"
    TARGET_RESTART_FAILED = "target_restart_failed"
    #: Only in the report's timeline: a PID change seen in the samples, no event explains it.
    TARGET_PID_CHANGED = "target_pid_changed"
    INTEGRITY_LOST_WRITE = "integrity_lost_write"
    INTEGRITY_CORRUPTED_READ = "integrity_corrupted_read"
    CONSOLIDATION_DRIFT = "consolidation_drift"
    CONSOLIDATION_STALLED = "consolidation_stalled"
    CONSOLIDATION_RECOVERED = "consolidation_recovered"
    PERMISSION = "permission"
    DISK_LOW = "disk_low"
    DISK_OK = "disk_ok"


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened once: crash, restart, gap, stall, permission problem..."""

    t: float
    kind: EventKind
    message: str
    detail: Mapping[str, object] = field(default_factory=dict)


class AlertState(enum.StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Alert:
    """The current state of one alert instance (a rule plus its labels)."""

    rule: str
    labels: Mapping[str, str]
    state: AlertState
    since: float  # wall seconds the current state began
    value: float | None
    summary: str
    severity: str = "page"
    annotations: Mapping[str, str] = field(default_factory=dict)


class Cancellable(Protocol):
    """A timer that can be called off (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The only source of time (see soakd.clock)."""

    def monotonic_ns(self) -> int: ...

    def wall(self) -> float: ...

    async def sleep_until(self, deadline_ns: int) -> None: ...

    def call_at(self, deadline_ns: int, callback: Callable[[], object]) -> Cancellable: ...


class ResultSink(Protocol):
    """Anything that wants every finished request (stats, exporter)."""

    def on_result(self, result: OpResult) -> None: ...


class EventSink(Protocol):
    """Anything that wants every event (the run store's batch, the exporter, the log...)."""

    def on_event(self, event: Event) -> None: ...


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """One change of an alert's state, as kept in the run store's history."""

    t: float
    rule: str
    labels: Mapping[str, str]
    old: AlertState
    new: AlertState
    value: float | None
    summary: str


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What identifies a run and its plan; the first row of the run store."""

    run_id: str
    spec_fingerprint: str
    spec_text: str  # the spec YAML as it was loaded, for the report
    started_at: float  # wall seconds; a resumed run keeps the original
    planned_duration_s: float
    ended_at: float | None = None
    status: str = "running"  # "running" | "completed" | "stopped"
    target_url: str = ""


class RunReader(Protocol):
    """Read access to a run store (soakd.store.RunStore implements it).

    ``since``/``until`` are wall seconds, inclusive; results are ordered by time.
    Everything older than what soakd keeps in memory is read back from here.
    """

    def run_info(self) -> RunInfo: ...

    def samples(self, since: float | None = None, until: float | None = None) -> list[Sample]: ...

    def intervals(
        self, op: Op | None = None, since: float | None = None, until: float | None = None
    ) -> list[IntervalRecord]: ...

    def consolidation_runs(self, since: float | None = None) -> list[ConsolidationRun]: ...

    def events(self, kinds: tuple[EventKind, ...] | None = None) -> list[Event]: ...

    def alert_states(self) -> list[Alert]: ...

    def alert_history(self) -> list[AlertTransition]: ...
