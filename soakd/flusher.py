"""The durable batch of a run and its flushes into the run store: one writer.

Every record a run must keep (samples, interval records, consolidation runs,
events, counters, the read-backs not yet judged) accumulates here and reaches
SQLite in one transaction per flush. Flushes run one at a time (issue 18): each
takes its batch and its absolute counters inside the lock, so a later flush
never lands first and a counter never moves backwards. A failed write (disk
full) keeps what it could not write, bounded, in front of what came since.
"""

from __future__ import annotations

import asyncio
import errno
import json
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import structlog

from soakd.model import Clock, ConsolidationRun, Event, EventKind, IntervalRecord, Sample
from soakd.report import atomic_write
from soakd.store import Batch, PendingRow, RunStore

log = structlog.get_logger(__name__)

#: While the store cannot be written (disk full), what is kept in memory.
MAX_UNWRITTEN_SAMPLES = 3600
MAX_UNWRITTEN_INTERVALS = 1000
MAX_UNWRITTEN_EVENTS = 1000
DISK_LOG_EVERY_NS = 60 * 10**9


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


class StorageLog:
    """Logs a storage failure at most once a minute (a full disk fails every flush)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._logged_ns = 0

    def error(self, what: str, exc: BaseException, **kw: object) -> bool:
        """Log ``exc`` unless one was logged less than a minute ago; whether it was."""
        now = self._clock.monotonic_ns()
        if now - self._logged_ns < DISK_LOG_EVERY_NS and self._logged_ns:
            return False
        self._logged_ns = now
        log.error(what, error=str(exc), hint=storage_hint(exc), **kw)
        return True


class Flusher:
    """Owns the batch; the only code that writes it to the run store.

    ``counters`` and ``pending`` are read inside the flush lock, so what is
    written is as of the flush; ``status`` is what status.json gets after a
    successful write; ``on_failing`` runs once at the start of a failing streak
    (the run thins old samples to make room).
    """

    def __init__(
        self,
        store: RunStore,
        *,
        clock: Clock,
        state_dir: Path,
        counters: Callable[[], dict[str, int]],
        pending: Callable[[int, float], list[PendingRow] | None],
        status: Callable[[], Mapping[str, object]],
        emit: Callable[[Event], None],
        on_failing: Callable[[], Awaitable[None]],
    ) -> None:
        self._store = store
        self._clock = clock
        self._status_path = state_dir / "status.json"
        self._counters = counters
        self._pending = pending
        self._status = status
        self._emit = emit
        self._on_failing = on_failing
        self.batch = Batch()
        self.storage_log = StorageLog(clock)
        self._lock = asyncio.Lock()
        self._failing = False  # the last write failed (disk full): retrying

    # -- what accumulates (EventSink and friends) -------------------------------------------

    def on_event(self, event: Event) -> None:
        self.batch.events.append(event)

    def on_sample(self, sample: Sample) -> None:
        self.batch.samples.append(sample)

    def on_consolidation_run(self, run: ConsolidationRun) -> None:
        self.batch.consolidation_runs.append(run)

    def add_intervals(self, records: list[IntervalRecord]) -> None:
        # Called after the roll's await: a flush during it swaps the batch's lists,
        # and extending a list bound before the await would append to one already
        # written (the records would be lost).
        self.batch.intervals.extend(records)

    # -- the write --------------------------------------------------------------------------

    async def flush(self) -> bool:
        """Write what accumulated; on a store failure keep it (bounded) for the next try."""
        async with self._lock:
            return await self._write()

    async def _write(self) -> bool:
        self.batch.counters.update(self._counters())
        # The read-backs not yet judged, with the counters they match: a resumed
        # run checks them instead of forgetting the last writes before a restart.
        self.batch.integrity_pending = self._pending(self._clock.monotonic_ns(), self._clock.wall())
        batch = self.batch.take()
        if len(batch):
            try:
                await asyncio.to_thread(self._store.write, batch)
            except sqlite3.Error as exc:
                self._keep_unwritten(batch)
                if not self._failing:
                    self._failing = True
                    if self.storage_log.error("store_write_failed", exc, kept=len(self.batch)):
                        self._emit(
                            Event(
                                self._clock.wall(),
                                EventKind.STORE_WRITE_FAILED,
                                f"run store: {exc}",
                                {},
                            )
                        )
                    await self._on_failing()
                return False
            if self._failing:
                self._failing = False
                log.info("store_write_recovered")
        # What `soakd status STATE_DIR` shows, also after soakd is gone.
        text = json.dumps(self._status(), indent=1, default=str)
        try:
            await asyncio.to_thread(atomic_write, self._status_path, text)
        except OSError as exc:
            log.warning("status_file_not_written", error=str(exc))
        return True

    def _keep_unwritten(self, batch: Batch) -> None:
        """Put a batch that could not be written back in front, keeping memory bounded.

        While the disk is full soakd keeps at most an hour of samples and
        interval records (the oldest go first) and every event: what it must
        not lose it holds until the disk has room again.
        """
        newer = self.batch
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
