"""The periodic chores of a run: roll the statistics, keep the store small, watch the
disk, write checkpoint reports, show progress. Each runs on its own absolute
schedule (``every``); a failing step is logged and the next one comes anyway.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Collection, Coroutine, Mapping
from pathlib import Path
from typing import Any

import structlog

from soakd.alerting import Dispatcher
from soakd.diskwatch import DiskWatch
from soakd.exporter import Exporter
from soakd.flusher import Flusher
from soakd.logs import terminal
from soakd.model import Clock, Event, EventKind, Op, RunInfo
from soakd.progress import progress_line
from soakd.report import ReportExtras, ReportProcessError, checkpoint_due, write_reports_subprocess
from soakd.spec.model import Spec
from soakd.stats import OpSummary, StatsHub
from soakd.statusview import status_line
from soakd.store import RunStore
from soakd.systemd import Notifier

log = structlog.get_logger(__name__)

#: Retention: what is older than this is kept at coarser resolution.
RETAIN_FULL_S = 24 * 3600.0
#: ... as 5-minute interval records (a 7-day store stays ~150 MB: docs/performance.md).
COMPACT_WIDTH_S = 300.0


async def every(
    clock: Clock, period_s: float, step: Callable[[], Coroutine[Any, Any, object]]
) -> None:
    """Run ``step`` on an absolute schedule; a failing step is logged, never fatal."""
    period_ns = max(1, int(period_s * 1e9))
    next_ns = clock.monotonic_ns() + period_ns
    while True:
        await clock.sleep_until(next_ns)
        next_ns += period_ns
        now = clock.monotonic_ns()
        if next_ns <= now:  # fell behind (suspend, slow disk): skip, do not burst
            next_ns = now + period_ns
        try:
            await step()
        except Exception:
            log.exception("loop_step_failed", step=getattr(step, "__name__", "?"))


class Housekeeping:
    """Rolls, retention, disk checks, checkpoints and progress for one run."""

    def __init__(
        self,
        spec: Spec,
        info: RunInfo,
        *,
        store: RunStore,
        state_dir: Path,
        clock: Clock,
        stats: StatsHub,
        ops: Collection[Op],
        flusher: Flusher,
        dispatcher: Dispatcher,
        disk: DiskWatch,
        exporter: Exporter,
        notifier: Notifier,
        show_progress: bool,
        status: Callable[[], Mapping[str, object]],
        extras: Callable[[], ReportExtras],
        emit: Callable[[Event], None],
    ) -> None:
        self._spec = spec
        self._info = info
        self._store = store
        self._state_dir = state_dir
        self._clock = clock
        self._stats = stats
        self._ops = ops
        self._flusher = flusher
        self._dispatcher = dispatcher
        self._disk = disk
        self._exporter = exporter
        self._notifier = notifier
        self._show_progress = show_progress
        self._status = status
        self._extras = extras
        self._emit = emit
        self.summaries: dict[Op, OpSummary] = {}  # whole-run figures as of the last roll

    async def roll(self) -> None:
        # The swap of the live histograms happens on the loop (~10 us); encoding,
        # merging and the whole-run percentiles run in a worker thread, once per
        # stats interval, not on every status read. A roll whose caller is
        # cancelled at shutdown still closes: the final roll waits for it and
        # returns its records too, oldest first.
        records = await self._stats.roll_async()
        self._flusher.add_intervals(records)
        summaries = self._stats.summaries
        self.summaries = {op: summaries[op] for op in self._ops if op in summaries}

    async def progress(self) -> None:
        elapsed = self._clock.wall() - self._info.started_at
        self._exporter.set_progress(elapsed, self._spec.duration_s, "running")
        if not (self._notifier.enabled or self._show_progress):
            return
        status = self._status()
        if self._notifier.enabled:
            self._notifier.status(status_line(status))
        if self._show_progress:
            terminal.show(progress_line(status))  # log lines print above it (soakd.logs)

    async def checkpoint(self) -> None:
        done = [
            e.detail.get("name")
            for e in await asyncio.to_thread(self._store.events, (EventKind.CHECKPOINT,))
        ]
        name = checkpoint_due(
            self._info.started_at,
            self._spec.duration_s,
            self._clock.wall(),
            [str(d) for d in done],
        )
        if name is None:
            return
        await self._flusher.flush()
        out = self._state_dir / "checkpoints"
        # A long report in a thread would hold the GIL against the event loop
        # that paces the load; a niced child process leaves the loop alone
        # (figures: docs/perf-report.md, "A checkpoint during a live run").
        try:
            await write_reports_subprocess(
                self._state_dir,
                out,
                now=self._clock.wall(),
                extra=self._extras(),
                basename=f"checkpoint-{name}",
            )
        except ReportProcessError as exc:
            log.warning("checkpoint_report_failed", name=name, error=str(exc)[:500])
            return
        self._emit(
            Event(
                self._clock.wall(),
                EventKind.CHECKPOINT,
                f"checkpoint report {name} written",
                {"name": name},
            )
        )

    async def retain(self) -> None:
        """Keep a week-long run's store small: full resolution for the last day only.

        Older interval records are merged into 5-minute records and older
        samples thinned to one per 10 s; the rules and the report read both
        resolutions alike (docs/performance.md has the sizes).
        """
        cutoff = self._clock.wall() - RETAIN_FULL_S
        merged = await asyncio.to_thread(self._store.compact_intervals, cutoff, COMPACT_WIDTH_S)
        thinned = await asyncio.to_thread(self._store.thin_samples, cutoff, 10)
        # Delivered notifications are history (the report reads alert_history,
        # not the outbox); only undelivered ones must survive a restart.
        pruned = await asyncio.to_thread(self._dispatcher.prune, cutoff)
        if merged or thinned or pruned:
            log.info(
                "retention", intervals_merged=merged, samples_thinned=thinned, outbox_pruned=pruned
            )

    async def check_disk(self) -> None:
        was_low = self._disk.low
        low = await asyncio.to_thread(self._disk.check)
        if low and not was_low:
            await self._thin()

    async def make_room(self) -> None:
        """The store cannot be written: measure the disk and thin old samples."""
        await asyncio.to_thread(self._disk.check)
        await self._thin()

    async def _thin(self) -> None:
        # Keep one sample a minute for everything older than ten minutes:
        # the trends survive, the disk gets room.
        try:
            removed = await asyncio.to_thread(
                self._store.thin_samples, self._clock.wall() - 600.0, 60
            )
        except sqlite3.Error as exc:
            log.warning("thinning_failed", error=str(exc))
            return
        log.warning("disk_low_thinned_samples", removed=removed)
