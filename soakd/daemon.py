"""The composition root: builds every piece of a run, owns its lifecycle.

Lifecycle (shared/design.md): open or resume the state dir; bind the
exporter; find or launch the target and wait for it to be alive (start-up
failures are exit 3); READY=1; one ``asyncio.TaskGroup`` runs every loop;
signal handlers only record intent (the second signal means "stop now, but
still write the report"); at the end: STOPPING=1, stop arrivals, drain under a
timeout, final sample and evaluation, flush the outbox (bounded), write the
report atomically, close the store.

Nothing here measures or decides: the pieces do; this module wires them and
moves records from the pieces into the run store in batches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools
import json
import signal
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
import structlog

from soakd.alerting import Dispatcher
from soakd.alerting.receivers import SecretError, resolve_secret
from soakd.baseline.soakfile import read_p99_file
from soakd.clock import SystemClock
from soakd.consolidation import ConsolidationWatcher
from soakd.diskwatch import DiskWatch
from soakd.engram import EngramClient
from soakd.errors import ExitCode, StartupError
from soakd.exporter import Exporter
from soakd.integrity import IntegrityChecker
from soakd.logs import terminal
from soakd.model import Alert, AlertState, AlertTransition, Clock, Event, Op, OpResult, Sample
from soakd.progress import build_status, progress_line
from soakd.report import (
    ReportExtras,
    ReportProcessError,
    atomic_write,
    checkpoint_due,
    write_reports,
    write_reports_subprocess,
)
from soakd.rules import AlertEngine, RuleInputs, gather_inputs
from soakd.runstate import NEXT_K, OpenedRun, open_run
from soakd.sampler import Sampler
from soakd.scheduler import FireFn, Scheduler, Timeline
from soakd.spaces import ensure_spaces
from soakd.spec.model import OperationSpec, RecallOptions, Spec, SpreadOptions
from soakd.stats import OpSummary, StatsHub
from soakd.statusview import status_line
from soakd.store import Batch, write_alerts
from soakd.systemd import Notifier
from soakd.target import ProcessId, PsutilTable, Target
from soakd.workload import Workload, space_names

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: IDs of the unmeasured seed stores (one per space, so SPREAD has a start).
SEED_K_BASE = 10**15
#: How long a resumed schedule's k jumps ahead of the last flushed one, in
#: seconds of arrivals: IDs used after the last flush must never be reused.
K_MARGIN_S = 30.0
RULES_INTERVAL_S = 10.0
CHECKPOINT_INTERVAL_S = 30.0
CHECKPOINT_MIN_RUN_S = 3600.0  # shorter runs get only the final report
DISK_INTERVAL_S = 10.0
FINAL_FLUSH_S = 10.0
#: While the store cannot be written (disk full), what is kept in memory.
MAX_UNWRITTEN_SAMPLES = 3600
MAX_UNWRITTEN_INTERVALS = 1000
MAX_UNWRITTEN_EVENTS = 1000
#: Alert transitions kept while their commit keeps failing (a few per state change).
MAX_UNCOMMITTED_ALERTS = 10_000
#: A 7-day report takes ~10-20 s; this only guards against a hang.
REPORT_TIMEOUT_S = 600.0
DISK_LOG_EVERY_NS = 60 * 10**9
#: Retention: what is older than this is kept at coarser resolution.
RETAIN_FULL_S = 24 * 3600.0
RETENTION_INTERVAL_S = 600.0
#: ... as 5-minute interval records (a 7-day store stays ~150 MB: docs/performance.md).
COMPACT_WIDTH_S = 300.0
#: Counters naming the target process soakd launched (for adoption on resume).
OWNED_PID = "owned_target_pid"
OWNED_CTIME_MS = "owned_target_create_time_ms"


@dataclass(frozen=True)
class RunOptions:
    spec: Spec
    spec_text: str
    state_dir: Path
    new_run: bool = False
    handle_signals: bool = True  # off in tests that drive stop() themselves
    progress: bool = False  # live progress line on stderr (a terminal)
    report_dir: Path | None = None  # default: the state dir


@dataclass(frozen=True)
class RunOutcome:
    exit_code: ExitCode
    status: str  # "completed" | "stopped"
    verdict: str | None
    run_id: str
    report_paths: tuple[Path, ...]
    failed_criteria: tuple[str, ...] = ()


class Daemon:
    """One soak run, from the state dir to the report."""

    def __init__(self, options: RunOptions, clock: Clock | None = None) -> None:
        self.options = options
        self.spec = options.spec
        self.clock: Clock = clock or SystemClock()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._batch = Batch()
        self._alerts: list[Alert] = []
        self.metrics_address: tuple[str, int] | None = None
        self.ready = asyncio.Event()  # set after READY=1 (tests wait on it)
        self._exporter: Exporter  # built once the run id is known (_serve)
        self._watcher: ConsolidationWatcher | None = None
        self._last_sample: Sample | None = None
        self._adopted: ProcessId | None = None  # a launched target kept across a resume
        self._store_failing = False  # the last write failed (disk full): retrying
        # One writer: flushes run one at a time, each taking its batch and its
        # absolute counters inside the lock, so a later flush never lands first.
        self._flush_lock = asyncio.Lock()
        # Alert transitions whose commit (states + history + outbox rows, one
        # transaction) failed: kept, in order, and committed before any newer one.
        self._uncommitted: list[AlertTransition] = []
        self._alert_lock = asyncio.Lock()
        self._alerts_failing = False  # the last alert commit failed: retrying
        self._judging: asyncio.Future[None] | None = None  # the last evaluation's step + commit
        self._disk_logged_ns = 0
        self._summaries: dict[Op, OpSummary] = {}  # whole-run figures as of the last roll
        # Per-space memory counts as Engram last reported them, and our ok
        # stores per space (total, and at that report): together they tell
        # whether a space is at Engram's capacity, where a 404 is an eviction.
        self._space_counts: dict[str, int] = {}
        self._stored: dict[str, int] = {}
        self._stored_at_count: dict[str, int] = {}

    # -- intent ------------------------------------------------------------------------

    def request_stop(self) -> None:
        """First call: stop gracefully. Second: stop now (still write the report)."""
        if self._stop.is_set():
            self._force.set()
        self._stop.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("signal_received", signal=sig.name, forced=self._stop.is_set())
        self.request_stop()

    # -- records into the batch -----------------------------------------------------------

    def _emit(self, event: Event) -> None:
        self._batch.events.append(event)
        log.info("event", kind=event.kind, message=event.message)
        if event.kind == "target_crash":
            self._exporter.on_target_crash()
        elif event.kind == "target_restart":
            self._exporter.on_target_restart()
            if self._watcher is not None:
                self._watcher.note_target_restart()
        elif event.kind == "consolidation_stalled":
            self._exporter.on_consolidation_stall(str(event.detail.get("space", "")))

    def _on_sample(self, sample: Sample) -> None:
        self._batch.samples.append(sample)
        self._exporter.on_sample(sample)
        self._last_sample = sample

    # -- the run --------------------------------------------------------------------------

    async def serve(self) -> RunOutcome:
        """Run to the end (duration or signal) and return the outcome."""
        now = self.clock.wall()
        opened = await asyncio.to_thread(
            open_run,
            self.spec,
            self.options.spec_text,
            self.options.state_dir,
            now=now,
            new_run=self.options.new_run,
        )
        try:
            return await self._serve(opened)
        finally:
            await asyncio.to_thread(opened.store.close)

    async def _serve(self, opened: OpenedRun) -> RunOutcome:
        spec, info = self.spec, opened.info
        self.opened = opened
        self.store = opened.store
        log.info("run_opened", run_id=info.run_id, resumed=opened.resumed, gap_s=opened.gap_s)
        self._exporter = Exporter(run_id=info.run_id, target=spec.target.url, status=self.status)
        self.notifier = Notifier()
        if self.options.handle_signals:
            self._install_signals()
        if spec.exporter.listen:
            try:
                self.metrics_address = await self._exporter.start(spec.exporter.listen)
            except OSError as exc:
                raise StartupError(
                    f"cannot listen for metrics on {spec.exporter.listen}: {exc.strerror}"
                ) from exc
            log.info(
                "metrics_listening", address=f"{self.metrics_address[0]}:{self.metrics_address[1]}"
            )
        try:
            return await self._with_exporter(opened)
        finally:
            await self._exporter.stop()

    async def _with_exporter(self, opened: OpenedRun) -> RunOutcome:
        spec = self.spec
        target_spec = spec.target
        self._adopted = adoptable_target(opened) if opened.resumed else None
        if self._adopted is not None:
            # soakd was restarted, the Engram it launched was not: keep watching
            # the same process, so Engram's continuous operation is not broken
            # by a restart of the tool that measures it.
            log.info("target_adopted", pid=self._adopted.pid)
            target_spec = dataclasses.replace(target_spec, command=None, pid=self._adopted.pid)
        self.target = Target(
            target_spec,
            state_dir=self.options.state_dir,
            clock=self.clock,
            on_event=self._emit,
            poll_interval_s=min(1.0, spec.sampling.interval_s),
        )
        api_key = None
        if spec.target.api_key is not None:
            try:
                api_key = resolve_secret(spec.target.api_key)
            except SecretError as exc:
                raise StartupError(f"target.api_key: {exc}") from exc
        timeout_s = max((o.timeout_s for o in spec.operations), default=30.0)
        self.client = EngramClient(
            spec.target.url,
            clock=self.clock,
            api_key=api_key,
            timeout_s=timeout_s,
            op_timeouts={Op(o.operation): o.timeout_s for o in spec.operations},
            max_connections=spec.target.max_connections,
        )
        try:
            await self._start_target()
            return await self._run(opened)
        finally:
            await self.client.close()
            if self.target.owned:
                await self.target.stop()
            elif self._adopted is not None:
                await asyncio.to_thread(stop_process, self._adopted)

    async def _start_target(self) -> None:
        spec = self.spec
        pid = await self.target.start()
        if pid is None:
            log.warning(
                "target_process_not_found",
                url=spec.target.url,
                hint="soakd drives the target but cannot sample it; "
                "set target.pid, target.pid_file or target.systemd_unit",
            )
        await self.target.wait_healthy(
            self.client.alive,
            spec.target.startup_timeout_s,
            why_not=lambda: self.client.last_alive_problem,
        )
        await ensure_spaces(
            self.client,
            space_names(spec.space_count),
            timeout_s=spec.target.setup_timeout_s,
            url=spec.target.url,
        )

    def _build(self, opened: OpenedRun) -> None:
        spec, info = self.spec, opened.info
        spaces = space_names(spec.space_count)
        recall_op, spread_op = spec.operation("recall"), spec.operation("spread")
        self.workload = Workload(
            seed=spec.seed,
            run_tag=info.run_id.replace("-", "")[-12:],
            spaces=spaces,
            recall=(recall_op.recall if recall_op and recall_op.recall else RecallOptions()),
            spread=(spread_op.spread if spread_op and spread_op.spread else SpreadOptions()),
        )
        driven = [Op(o.operation) for o in spec.operations]
        self.stats = StatsHub(driven, self.clock)
        self.integrity = IntegrityChecker(
            self.client,
            self.workload,
            self.clock,
            sample_fraction=spec.integrity.sample_fraction,
            delay_s=spec.integrity.delay_s,
            max_pending=spec.integrity.max_pending,
            sink=self._exporter.on_result,
            seed=spec.seed,
            on_event=self._emit,
            at_capacity=self._at_capacity,
        )
        if spec.consolidation is not None:
            c = spec.consolidation
            self._watcher = ConsolidationWatcher(
                self.client,
                space_names(c.spaces),
                interval_s=c.interval_s,
                poll_interval_s=c.poll_interval_s,
                tolerance_s=c.tolerance_s,
                clock=self.clock,
                on_run=self._on_consolidation_run,
                on_event=self._emit,
            )
        self.sampler = Sampler(
            lambda: self.target.current,
            clock=self.clock,
            interval_s=spec.sampling.interval_s,
            uss_interval_s=spec.sampling.uss_interval_s,
            data_dir=Path(spec.target.data_dir) if spec.target.data_dir else None,
            on_event=self._emit,
            memories=self._memories,
            # Often enough that a space reaching Engram's capacity is known
            # before its evictions are read back (see _at_capacity).
            memories_interval_s=2.0,
        )
        self.disk = DiskWatch(
            self.options.state_dir,
            spec.sampling.min_free_disk_bytes,
            on_event=self._emit,
            clock=self.clock,
        )
        base_labels = {"run_id": info.run_id, "target": spec.target.url, "job": "soakd"}
        self.engine = AlertEngine(
            spec.alerts, base_labels=base_labels, restored=opened.store.alert_states()
        )
        self._alerts = self.engine.current()
        self.dispatcher = Dispatcher(
            spec.receivers,
            db_path=opened.store.db_path,
            base_labels=base_labels,
            generator_url=self._generator_url(),
            clock=self.clock,
        )
        self.schedulers = {Op(o.operation): self._scheduler(o) for o in spec.operations}

    def _generator_url(self) -> str:
        if self.metrics_address is None:
            return ""
        host, port = self.metrics_address
        return f"http://{host}:{port}/status"

    def _scheduler(self, o: OperationSpec) -> Scheduler:
        op = Op(o.operation)
        fire: FireFn = {
            Op.STORE: self._fire_store,
            Op.RECALL: self._fire_recall,
            Op.SPREAD: self._fire_spread,
        }[op]

        def dropped(k: int, intended_ns: int) -> None:
            self.stats.on_dropped(op, intended_ns)
            self._exporter.on_dropped(op)

        def late(k: int, intended_ns: int) -> None:
            self.stats.on_late(op)
            self._exporter.on_late(op)

        return Scheduler(
            op.value,
            o.rate_per_s,
            clock=self.clock,
            fire=fire,
            max_in_flight=o.max_in_flight,
            on_dropped=dropped,
            on_late=late,
        )

    # -- the measured operations ---------------------------------------------------------

    def _record(self, r: OpResult) -> None:
        self.stats.on_result(r)
        self._exporter.on_result(r)

    # Each fire starts its request and returns at once; the result is recorded
    # from the connection's callback (soakd.http1: no task per request).

    def _fire_store(self, k: int, intended_ns: int) -> asyncio.Future[None]:
        return self.client.begin_store(self.workload.store(k), intended_ns, self._on_stored)

    def _on_stored(self, r: OpResult) -> None:
        self._record(r)
        if r.memory_id is not None:
            space = r.space
            self._stored[space] = self._stored.get(space, 0) + 1
            self.workload.confirm_stored(space, r.memory_id)
            self.integrity.on_result(r)
            if self._watcher is not None:
                self._watcher.note_store(space)

    def _fire_recall(self, k: int, intended_ns: int) -> asyncio.Future[None]:
        return self.client.begin_recall(self.workload.recall(k), intended_ns, self._record)

    def _fire_spread(self, k: int, intended_ns: int) -> asyncio.Future[None] | None:
        req = self.workload.spread(k)
        if req is None:  # no stored ID anywhere yet: an arrival that could not be sent
            self.stats.on_dropped(Op.SPREAD, intended_ns)
            self._exporter.on_dropped(Op.SPREAD)
            return None
        return self.client.begin_spread(req, intended_ns, self._record)

    async def _seed_spaces(self) -> None:
        """One unmeasured store per space, so every space has a SPREAD start point."""
        if self.spec.operation("spread") is None:
            return
        # All at once: one by one, a slow target would hold the start for a
        # store's time per space.
        n = len(self.workload.spaces)
        reqs = [self.workload.store(seed_k(self.opened.segment, i, n)) for i in range(n)]
        now_ns = self.clock.monotonic_ns()
        results = await asyncio.gather(*(self.client.store(req, now_ns) for req in reqs))
        for req, r in zip(reqs, results, strict=True):
            if r.memory_id is not None:
                self.workload.confirm_stored(req.space, r.memory_id)
                if self._watcher is not None:
                    self._watcher.note_store(req.space)

    def _on_consolidation_run(self, run: Any) -> None:
        self._batch.consolidation_runs.append(run)
        if self.spec.consolidation is not None:
            c = self.spec.consolidation
            self._exporter.on_consolidation_run(run, c.interval_s, c.tolerance_s)

    async def _memories(self) -> int | None:
        counts = await self.client.memory_counts()
        if counts is None:
            return None
        ours = set(self.workload.spaces)
        self._space_counts = {s: n for s, n in counts.items() if s in ours}
        self._stored_at_count = dict(self._stored)
        return sum(self._space_counts.values())

    def _at_capacity(self, space: str) -> bool:
        """Whether ``space`` holds Engram's maximum (last count plus our stores since)."""
        since = self._stored.get(space, 0) - self._stored_at_count.get(space, 0)
        count = self._space_counts.get(space, 0) + since
        return count >= self.spec.integrity.space_capacity

    # -- lifecycle -------------------------------------------------------------------------

    async def _run(self, opened: OpenedRun) -> RunOutcome:
        spec, info = self.spec, opened.info
        self._build(opened)
        counters = opened.store.counters()
        if opened.resumed:
            await asyncio.to_thread(self._restore, opened, counters)
        await self._seed_spaces()
        now_wall, now_ns = self.clock.wall(), self.clock.monotonic_ns()
        end_wall = info.started_at + spec.duration_s
        self.end_ns = now_ns + max(0, int((end_wall - now_wall) * 1e9))
        self.start_ns = now_ns
        self.notifier.ready()
        self.ready.set()
        log.info("run_started", run_id=info.run_id, ends_in_s=round(end_wall - now_wall, 1))
        loops: list[asyncio.Task[None]] = []
        status = "completed"
        internal_error = False
        try:
            async with asyncio.TaskGroup() as tg:
                # One timeline for every operation: arrivals due at the same
                # instant share a wake-up (docs/perf-compare.md, item 5).
                entries = [
                    (sched, now_ns, self._first_k(op, counters, opened.resumed))
                    for op, sched in self.schedulers.items()
                ]
                tg.create_task(Timeline(self.clock).run(entries, self.end_ns), name="schedule")
                loops = [tg.create_task(c, name=n) for n, c in self._loops()]
                ended_by_time = await self._wait_end()
                status = "completed" if ended_by_time else "stopped"
                self.notifier.stopping()
                log.info("run_ending", status=status, forced=self._force.is_set())
                for sched in self.schedulers.values():
                    sched.stop()
                drain_s = min(10.0, max((o.timeout_s for o in spec.operations), default=10.0))
                cancelled = await self._drain(drain_s)
                if cancelled:
                    log.info("drain_cancelled_requests", count=cancelled)
                for task in loops:
                    task.cancel()
        except* Exception:
            internal_error = True
            status = "stopped"
            log.exception("internal_error")
        return await self._finish(status, internal_error)

    async def _drain(self, timeout_s: float) -> int:
        """Let in-flight requests finish (bounded); a second signal cuts it short."""
        if self._force.is_set():
            timeout_s = 0.0
        drain = asyncio.ensure_future(self._drain_all(timeout_s))
        force = asyncio.ensure_future(self._force.wait())
        racers: list[asyncio.Future[Any]] = [drain, force]
        try:
            await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            force.cancel()
        if drain.done():
            return drain.result()
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
        log.info("drain_cut_short_by_second_signal")
        return await self._drain_all(0.0)

    async def _drain_all(self, timeout_s: float) -> int:
        counts = await asyncio.gather(*(s.drain(timeout_s) for s in self.schedulers.values()))
        return sum(counts)

    def _first_k(self, op: Op, counters: dict[str, int], resumed: bool) -> int:
        if not resumed:
            return 0
        o = self.spec.operation(op.value)
        margin = int((o.rate_per_s if o else 0) * K_MARGIN_S) + 1
        return counters.get(NEXT_K.format(op=op.value), 0) + margin

    def _restore(self, opened: OpenedRun, counters: dict[str, int]) -> None:
        info = opened.info
        self.stats.restore(opened.store.intervals(), info.started_at)
        self.integrity.restore(
            counters.get("integrity_checked", 0),
            counters.get("integrity_lost", 0),
            counters.get("integrity_corrupted", 0),
            skipped=counters.get("integrity_skipped", 0),
            evicted=counters.get("integrity_evicted", 0),
        )
        self.integrity.restored = counters.get("integrity_restored", 0)
        self.integrity.restore_pending(
            opened.store.integrity_pending(), self.clock.monotonic_ns(), self.clock.wall()
        )
        if self._watcher is not None and self.spec.consolidation is not None:
            window = 3 * (self.spec.consolidation.interval_s + self.spec.consolidation.tolerance_s)
            self._watcher.restore(opened.store.consolidation_runs(since=self.clock.wall() - window))

    async def _wait_end(self) -> bool:
        """True when the duration was reached, False when asked to stop."""
        stop = asyncio.create_task(self._stop.wait())
        deadline = asyncio.create_task(self.clock.sleep_until(self.end_ns))
        try:
            done, _ = await asyncio.wait({stop, deadline}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            deadline.cancel()
        return deadline in done and not self._stop.is_set()

    def _loops(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        loops: list[tuple[str, Coroutine[Any, Any, None]]] = [
            ("sampler", self.sampler.run(self._on_sample)),
            ("target-watch", self.target.watch()),
            ("integrity", self.integrity.run()),
            ("roll", self._every(self.spec.sampling.stats_interval_s, self._roll)),
            ("flush", self._every(self.spec.sampling.flush_interval_s, self._flush)),
            ("rules", self._every(self._rules_interval(), self._evaluate)),
            ("progress", self._every(1.0, self._progress)),
            ("disk", self._every(DISK_INTERVAL_S, self._check_disk)),
            ("retention", self._every(RETENTION_INTERVAL_S, self._retain)),
            ("dispatcher", self.dispatcher.run()),
            ("watchdog", self.notifier.watchdog_loop(self._progress_ns, self.clock)),
        ]
        if self._watcher is not None:
            loops.append(("consolidation", self._watcher.run()))
        if self.spec.duration_s >= CHECKPOINT_MIN_RUN_S:
            # A checkpoint of a minutes-long run says nothing the final report will
            # not, and its child process competes with the load for the CPU.
            loops.append(("checkpoints", self._every(CHECKPOINT_INTERVAL_S, self._checkpoint)))
        return loops

    def _rules_interval(self) -> float:
        # Short runs are judged more often, so a 10-minute run still has ~60 evaluations.
        return max(1.0, min(RULES_INTERVAL_S, self.spec.duration_s / 60))

    def _progress_ns(self) -> int:
        return min((s.last_advance_ns for s in self.schedulers.values()), default=0)

    async def _every(
        self, period_s: float, step: Callable[[], Coroutine[Any, Any, object]]
    ) -> None:
        """Run ``step`` on an absolute schedule; a failing step is logged, never fatal."""
        period_ns = max(1, int(period_s * 1e9))
        next_ns = self.clock.monotonic_ns() + period_ns
        while True:
            await self.clock.sleep_until(next_ns)
            next_ns += period_ns
            now = self.clock.monotonic_ns()
            if next_ns <= now:  # fell behind (suspend, slow disk): skip, do not burst
                next_ns = now + period_ns
            try:
                await step()
            except Exception:
                log.exception("loop_step_failed", step=getattr(step, "__name__", "?"))

    # -- periodic steps -------------------------------------------------------------------

    async def _roll(self) -> None:
        # The swap of the live histograms happens on the loop (~10 us); encoding,
        # merging and the whole-run percentiles run in a worker thread, once per
        # stats interval, not on every status read. A roll whose caller is
        # cancelled at shutdown still closes: the final roll waits for it and
        # returns its records too, oldest first.
        records = await self.stats.roll_async()
        # Only after the await: a flush during it swaps the batch's lists, and
        # `self._batch.intervals.extend(await ...)` would bind the old list first
        # and append to one already written (the records would be lost).
        self._batch.intervals.extend(records)
        summaries = self.stats.summaries
        self._summaries = {op: summaries[op] for op in self.schedulers if op in summaries}

    def _counters(self) -> dict[str, int]:
        counters = {NEXT_K.format(op=op.value): s.next_k for op, s in self.schedulers.items()}
        counters.update(
            integrity_checked=self.integrity.checked,
            integrity_lost=self.integrity.lost,
            integrity_corrupted=self.integrity.corrupted,
            integrity_skipped=self.integrity.skipped,
            integrity_evicted=self.integrity.evicted,
            integrity_restored=self.integrity.restored,
            target_restarts=self.target.restarts,
            target_crashes=self.target.crashes,
        )
        current = self.target.current
        if current is not None and (self.target.owned or self._adopted is not None):
            counters[OWNED_PID] = current.pid
            counters[OWNED_CTIME_MS] = round(current.create_time * 1000)
        return counters

    async def _flush(self) -> bool:
        """Write what accumulated; on a store failure keep it (bounded) for the next try."""
        async with self._flush_lock:
            return await self._flush_locked()

    async def _flush_locked(self) -> bool:
        self._batch.counters.update(self._counters())
        # The read-backs not yet judged, with the counters they match: a resumed
        # run checks them instead of forgetting the last writes before a restart.
        self._batch.integrity_pending = self.integrity.snapshot(
            self.clock.monotonic_ns(), self.clock.wall()
        )
        batch = self._batch.take()
        if len(batch):
            try:
                await asyncio.to_thread(self.store.write, batch)
            except sqlite3.Error as exc:
                self._keep_unwritten(batch)
                if not self._store_failing:
                    self._store_failing = True
                    if self._disk_trouble("store_write_failed", exc, kept=len(self._batch)):
                        self._emit(
                            Event(self.clock.wall(), "store_write_failed", f"run store: {exc}", {})
                        )
                    await self._check_disk(force_thin=True)
                return False
            if self._store_failing:
                self._store_failing = False
                log.info("store_write_recovered")
        # What `soakd status STATE_DIR` shows, also after soakd is gone.
        text = json.dumps(self.status(), indent=1, default=str)
        try:
            await asyncio.to_thread(atomic_write, self.options.state_dir / "status.json", text)
        except OSError as exc:
            log.warning("status_file_not_written", error=str(exc))
        return True

    def _disk_trouble(self, what: str, exc: BaseException, **kw: object) -> bool:
        """Log a storage failure at most once a minute (a full disk fails every flush).

        Returns whether it was logged this time.
        """
        now = self.clock.monotonic_ns()
        if now - self._disk_logged_ns < DISK_LOG_EVERY_NS and self._disk_logged_ns:
            return False
        self._disk_logged_ns = now
        log.error(what, error=str(exc), hint=storage_hint(exc), **kw)
        return True

    def _keep_unwritten(self, batch: Batch) -> None:
        """Put a batch that could not be written back in front, keeping memory bounded.

        While the disk is full soakd keeps at most an hour of samples and
        interval records (the oldest go first) and every event: what it must
        not lose it holds until the disk has room again.
        """
        newer = self._batch
        newer.samples = (batch.samples + newer.samples)[-MAX_UNWRITTEN_SAMPLES:]
        newer.intervals = (batch.intervals + newer.intervals)[-MAX_UNWRITTEN_INTERVALS:]
        newer.consolidation_runs = (batch.consolidation_runs + newer.consolidation_runs)[
            -MAX_UNWRITTEN_INTERVALS:
        ]
        newer.events = (batch.events + newer.events)[-MAX_UNWRITTEN_EVENTS:]
        newer.alert_transitions = batch.alert_transitions + newer.alert_transitions
        if newer.alert_states is None:
            newer.alert_states = batch.alert_states
        if newer.integrity_pending is None:
            newer.integrity_pending = batch.integrity_pending
        newer.counters = {**batch.counters, **newer.counters}

    def _file_baseline_p99(self) -> dict[Op, float]:
        """P99 per operation from the first performance_degradation rule's baseline_file."""
        cached: dict[Op, float] | None = getattr(self, "_baseline_p99_cache", None)
        if cached is None:
            cached = {}
            path = next((r.baseline_file for r in self.spec.alerts if r.baseline_file), None)
            if path is not None:
                # Read when the spec was validated; a file gone since is a start-up failure.
                try:
                    figures = read_p99_file(path)
                except ValueError as exc:
                    raise StartupError(f"alerts: baseline_file: {exc}") from None
                cached = {Op(op): ms for op, ms in figures.items()}
            self._baseline_p99_cache = cached
        return cached

    async def _evaluate(self) -> None:
        await self._flush()  # rules read the store: give them the newest data
        c = self.spec.consolidation
        inputs = await asyncio.to_thread(
            gather_inputs,
            self.store,
            self.clock.wall(),
            expected_interval_s=c.interval_s if c else None,
            tolerance_s=c.tolerance_s if c else 5.0,
            integrity_lost=self.integrity.lost,
            integrity_corrupted=self.integrity.corrupted,
            baseline_p99_ms=self._file_baseline_p99(),
            rules=self.spec.alerts,
        )
        # Judging and committing run as a task of their own, shielded: the rules
        # loop is cancelled at shutdown, and a cancel between the engine's step
        # (in a thread, it completes anyway) and the commit would drop the
        # transitions it made, or leave a commit done but not known. The next
        # evaluation (the final one) waits for it first.
        async with self._alert_lock:
            if self._judging is not None and not self._judging.done():
                await asyncio.wait((self._judging,))
            self._judging = asyncio.ensure_future(self._judge(inputs))
            await asyncio.shield(self._judging)

    async def _judge(self, inputs: RuleInputs) -> None:
        # ~70 ms of histogram decoding on a 7-day window: off the loop.
        transitions = await asyncio.to_thread(self.engine.evaluate, inputs)
        self._alerts = self.engine.current()
        self._exporter.set_alerts(self._alerts)
        for t in transitions:
            log.warning("alert", rule=t.rule, state=t.new.value, summary=t.summary)
        self._uncommitted = bounded_uncommitted([*self._uncommitted, *transitions])
        if self._uncommitted:
            await self._commit_alerts()

    async def _commit_alerts(self) -> None:
        """Commit the alert states, their history and their outbox rows in one transaction.

        Only a committed transition is ever notified (the dispatcher sends from
        the outbox) and a resumed soakd restores exactly the committed states.
        A failed commit (disk full) keeps the transitions for the next
        evaluation: the outbox ignores a row it already holds, so a retry
        never queues a page twice, and a page is never dropped.
        """
        pending, states = list(self._uncommitted), list(self._alerts)
        try:
            await asyncio.to_thread(
                self.dispatcher.submit,
                pending,
                states,
                record=functools.partial(write_alerts, transitions=pending, states=states),
            )
        except (sqlite3.Error, OSError) as exc:
            # Said once per failing streak, whatever else the full disk logged:
            # these are pages on hold, on-call must be able to see it.
            if not self._alerts_failing:
                self._alerts_failing = True
                log.error("alert_commit_failed", error=str(exc), kept=len(pending))
            return
        del self._uncommitted[: len(pending)]
        if self._alerts_failing:
            self._alerts_failing = False
            log.info("alert_commit_recovered", committed=len(pending))

    async def _progress(self) -> None:
        elapsed = self.clock.wall() - self.opened.info.started_at
        self._exporter.set_progress(elapsed, self.spec.duration_s, "running")
        if not (self.notifier.enabled or self.options.progress):
            return
        status = self.status()
        if self.notifier.enabled:
            self.notifier.status(status_line(status))
        if self.options.progress:
            terminal.show(progress_line(status))  # log lines print above it (soakd.logs)

    async def _checkpoint(self) -> None:
        info = self.opened.info
        done = [
            e.detail.get("name")
            for e in await asyncio.to_thread(self.store.events, ("checkpoint",))
        ]
        name = checkpoint_due(
            info.started_at, self.spec.duration_s, self.clock.wall(), [str(d) for d in done]
        )
        if name is None:
            return
        await self._flush()
        out = self.options.state_dir / "checkpoints"
        # A 7-day report costs ~9 s of CPU: in a thread it would hold the GIL
        # against the event loop that paces the load (lateness p99 2-7 ms ->
        # 19-40 ms measured); a niced child process leaves the loop alone.
        try:
            await write_reports_subprocess(
                self.options.state_dir,
                out,
                now=self.clock.wall(),
                extra=self._extras(),
                basename=f"checkpoint-{name}",
            )
        except ReportProcessError as exc:
            log.warning("checkpoint_report_failed", name=name, error=str(exc)[:500])
            return
        self._emit(
            Event(
                self.clock.wall(), "checkpoint", f"checkpoint report {name} written", {"name": name}
            )
        )

    async def _retain(self) -> None:
        """Keep a week-long run's store small: full resolution for the last day only.

        Older interval records are merged into 5-minute records and older
        samples thinned to one per 10 s; the rules and the report read both
        resolutions alike (docs/performance.md has the sizes).
        """
        cutoff = self.clock.wall() - RETAIN_FULL_S
        merged = await asyncio.to_thread(self.store.compact_intervals, cutoff, COMPACT_WIDTH_S)
        thinned = await asyncio.to_thread(self.store.thin_samples, cutoff, 10)
        # Delivered notifications are history (the report reads alert_history,
        # not the outbox); only undelivered ones must survive a restart.
        pruned = await asyncio.to_thread(self.dispatcher.prune, cutoff)
        if merged or thinned or pruned:
            log.info(
                "retention", intervals_merged=merged, samples_thinned=thinned, outbox_pruned=pruned
            )

    async def _check_disk(self, force_thin: bool = False) -> None:
        was_low = self.disk.low
        low = await asyncio.to_thread(self.disk.check)
        if (low and not was_low) or force_thin:
            # Keep one sample a minute for everything older than ten minutes:
            # the trends survive, the disk gets room.
            try:
                removed = await asyncio.to_thread(
                    self.store.thin_samples, self.clock.wall() - 600.0, 60
                )
            except sqlite3.Error as exc:
                log.warning("thinning_failed", error=str(exc))
                return
            log.warning("disk_low_thinned_samples", removed=removed)

    # -- the end --------------------------------------------------------------------------

    def _extras(self) -> ReportExtras:
        return ReportExtras(
            integrity_checked=self.integrity.checked,
            integrity_lost=self.integrity.lost,
            integrity_corrupted=self.integrity.corrupted,
        )

    async def _finish(self, status: str, internal_error: bool) -> RunOutcome:
        """Final sample, evaluation, flush, outbox and report: each step bounded.

        A step that fails or hangs is logged and skipped; the report is still
        attempted, because it is what the run was for.
        """
        await self._bounded("final_sample", 10.0, self._final_sample())
        await self._bounded("final_roll", 10.0, self._roll())
        await self._bounded("final_evaluation", 60.0, self._evaluate())
        ended = self.clock.wall()
        self._emit(Event(ended, "run_ended", f"run {status}", {"status": status}))
        await self._bounded("final_flush", 60.0, self._flush())
        await self._bounded(
            "set_status", 30.0, asyncio.to_thread(self.store.set_status, status, ended)
        )
        if not self._force.is_set():
            await self._bounded("alert_flush", FINAL_FLUSH_S + 5.0, self._flush_alerts())
        self.dispatcher.close()
        report_dir = self.options.report_dir or self.options.state_dir
        result = await self._bounded(
            "final_report",
            REPORT_TIMEOUT_S,
            asyncio.to_thread(
                write_reports, self.store, self.spec, report_dir, now=ended, extra=self._extras()
            ),
        )
        if result is None:
            log.error("final_report_not_written", dir=str(report_dir))
            code = ExitCode.INTERNAL if internal_error else ExitCode.FAILED
            if status == "stopped" and not internal_error:
                code = ExitCode.STOPPED
            return RunOutcome(code, status, None, self.opened.info.run_id, (), ("report",))
        failed = tuple(c.key for c in result.criteria if not c.passed)
        if internal_error:
            code = ExitCode.INTERNAL
        elif status == "stopped":
            code = ExitCode.STOPPED
        else:
            code = ExitCode.PASSED if result.verdict == "pass" else ExitCode.FAILED
        log.info("run_finished", status=status, verdict=result.verdict, exit_code=int(code))
        return RunOutcome(
            code, status, result.verdict, self.opened.info.run_id, result.paths, failed
        )

    async def _final_sample(self) -> None:
        sample = await asyncio.to_thread(self.sampler.sample_once, self.clock.wall())
        self._on_sample(sample)

    async def _flush_alerts(self) -> None:
        """Deliver what is pending (bounded); a second signal cuts it short."""
        flush = asyncio.ensure_future(self.dispatcher.flush(FINAL_FLUSH_S))
        force = asyncio.ensure_future(self._force.wait())
        racers: list[asyncio.Future[Any]] = [flush, force]
        try:
            await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            force.cancel()
        if not flush.done():
            flush.cancel()
            await asyncio.gather(flush, return_exceptions=True)
            return
        left = flush.result()
        if left:
            log.warning("alerts_undelivered_at_exit", pending=left)

    async def _bounded(self, step: str, timeout_s: float, aw: Awaitable[T]) -> T | None:
        """``aw`` under a timeout; a failure or time-out is logged, never raised."""
        try:
            async with asyncio.timeout(timeout_s):
                return await aw
        except TimeoutError:
            log.error("shutdown_step_timed_out", step=step, timeout_s=timeout_s)
        except (sqlite3.Error, OSError) as exc:  # storage: no traceback, it says it all
            self._disk_trouble("shutdown_step_failed", exc, step=step)
        except Exception:
            log.exception("shutdown_step_failed", step=step)
        return None

    # -- views ----------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """The /status JSON (and what ``soakd status --url`` renders)."""
        if not hasattr(self, "stats"):
            return {"status": "starting"}
        return build_status(
            info=self.opened.info,
            spec=self.spec,
            now=self.clock.wall(),
            totals=self._summaries,
            alerts=self._alerts,
            sample=self._last_sample,
            restarts=self.target.restarts,
            crashes=self.target.crashes,
            watcher=self._watcher,
            integrity=(self.integrity.checked, self.integrity.lost, self.integrity.corrupted),
            running=not self._stop.is_set(),
        )


def storage_hint(exc: BaseException) -> str:
    """What to check for a failed store write: the disk only when the error says so.

    A schema mismatch blamed on the disk (issue 18) sends on-call to the wrong place.
    """
    text = str(exc).lower()
    if "full" in text or "no space" in text or getattr(exc, "errno", None) == errno.ENOSPC:
        return "is the state dir's disk full?"
    if "disk i/o" in text or isinstance(exc, OSError):
        return "the state dir's disk failed an I/O: check the device and kernel log"
    return "the run store refused the write: this is a soakd bug, please report it"


def seed_k(segment: int, index: int, spaces: int) -> int:
    """The k of the ``index``-th seed store of a run segment (0: the start, +1 per resume).

    A memory ID is never reused: each resume seeds with ``spaces`` fresh ks
    (consecutive, so one lands in every space), far above any measured k.
    """
    return SEED_K_BASE + segment * spaces + index


def bounded_uncommitted(transitions: list[AlertTransition]) -> list[AlertTransition]:
    """At most MAX_UNCOMMITTED_ALERTS transitions; the ones that notify are kept first.

    Only a disk full for a long time with flapping rules gets here: the
    pending/inactive steps (never notified) go first, oldest first, and a
    firing or resolved one only when nothing else is left to drop.
    """
    excess = len(transitions) - MAX_UNCOMMITTED_ALERTS
    if excess <= 0:
        return transitions
    notifying = [t.new is AlertState.FIRING or t.old is AlertState.FIRING for t in transitions]
    drop: set[int] = set()
    for i, notifies in enumerate(notifying):
        if len(drop) >= excess:
            break
        if not notifies:
            drop.add(i)
    kept = [t for i, t in enumerate(transitions) if i not in drop]
    return kept[len(kept) - MAX_UNCOMMITTED_ALERTS :]


def adoptable_target(opened: OpenedRun) -> ProcessId | None:
    """The target a previous soakd of this run launched, if that very process still runs."""
    counters = opened.store.counters()
    pid, ctime_ms = counters.get(OWNED_PID), counters.get(OWNED_CTIME_MS)
    if pid is None or ctime_ms is None:
        return None
    wanted = ProcessId(pid, ctime_ms / 1000)
    return wanted if wanted.same_process(PsutilTable().lookup(pid)) else None


def stop_process(proc: ProcessId, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, an adopted target (blocking), if it is still that process."""
    try:
        p = psutil.Process(proc.pid)
        if not proc.same_process(ProcessId(proc.pid, p.create_time())):
            return
        p.terminate()
        try:
            p.wait(timeout_s)
        except psutil.TimeoutExpired:
            p.kill()
            p.wait(timeout_s)
    except psutil.Error:
        pass
