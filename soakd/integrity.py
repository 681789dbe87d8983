"""Read-back of a sample of writes: lost writes and corrupted reads (issue 2, part 7).

A store that Engram answered 201 is selected by a hash of its ID (so the
sample is deterministic and needs no RNG state), queued, and read back with
``GET /api/v1/memories/{id}`` ``delay_s`` later. The expected content is
recomputed from the ID (:meth:`soakd.workload.Workload.verify`), so nothing
of what was written is kept. Verdicts:

- 200 with the exact content: checked;
- 404 after the 201: a **lost** write (Engram's silent de-duplication does
  this: engram-api.md §4), unless the space is at Engram's capacity, where a
  404 is an **eviction** of the least-activated memory, counted apart;
- 200 with different content, or a 200 that is not a memory: a **corrupted**
  read;
- anything else (timeout, refused, 5xx): an **error**, neither lost nor
  corrupted: the read-back says nothing about the data.

The queue is bounded by ``max_pending``: when it is full a selected write is
counted as ``skipped`` rather than remembered.

The read-backs not yet judged (queued or on the wire) are written to the run
store with every flush, together with the counters they match, and queued
again when a run resumes (:meth:`IntegrityChecker.snapshot`,
:meth:`IntegrityChecker.restore_pending`): the writes acknowledged just before
soakd (or the whole box) went down are the ones a restart must not forget.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from soakd.engram import EngramClient
from soakd.model import Clock, Event, EventKind, Op, OpResult, Outcome
from soakd.workload import Workload

log = structlog.get_logger(__name__)

#: How many lost / corrupted IDs the report gets to name.
DEFAULT_IDS_KEPT = 100
#: Events per kind: a de-duplicating server can lose thousands of writes a day.
_EVENTS_PER_KIND = 10
#: Idle wake-up when nothing is queued (every wait is bounded).
_IDLE_WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class PendingCheck:
    """A write waiting to be read back at ``due_ns`` (monotonic)."""

    due_ns: int
    space: str
    memory_id: str


class IntegrityChecker:
    """A ResultSink for store results that reads a sample of them back."""

    def __init__(
        self,
        client: EngramClient,
        workload: Workload,
        clock: Clock,
        *,
        sample_fraction: float,
        delay_s: float,
        max_pending: int,
        sink: Callable[[OpResult], None],
        seed: int = 0,
        max_in_flight: int = 32,
        ids_kept: int = DEFAULT_IDS_KEPT,
        on_event: Callable[[Event], None] | None = None,
        at_capacity: Callable[[str], bool] | None = None,
    ) -> None:
        self._client = client
        self._workload = workload
        self._clock = clock
        self._fraction = min(1.0, max(0.0, sample_fraction))
        # crc32 is uniform enough over our IDs and costs well under a microsecond.
        self._cutoff = int(self._fraction * 2**32)
        self._delay_ns = int(delay_s * 1e9)
        self._max_pending = max(0, max_pending)
        self._sink = sink
        self._salt = f"{seed}:".encode()
        self._max_in_flight = max(1, max_in_flight)
        self._on_event = on_event
        self._at_capacity = at_capacity
        self._queue: deque[PendingCheck] = deque()
        self._wake = asyncio.Event()
        self._in_flight = 0
        self._on_wire: set[PendingCheck] = set()  # popped, not yet judged
        self.restored = 0  # read-backs carried over from before a restart
        self.checked = 0
        self.lost = 0
        self.corrupted = 0
        self.skipped = 0
        self.errors = 0
        self.evicted = 0  # 404s in a space at Engram's capacity: evictions, not losses
        self._lost_ids: deque[str] = deque(maxlen=max(1, ids_kept))
        self._corrupted_ids: deque[str] = deque(maxlen=max(1, ids_kept))
        self._events_sent = {
            EventKind.INTEGRITY_LOST_WRITE: 0,
            EventKind.INTEGRITY_CORRUPTED_READ: 0,
        }

    # -- what the report and the exporter read ------------------------------------

    @property
    def lost_ids(self) -> list[str]:
        """The most recent lost IDs (bounded)."""
        return list(self._lost_ids)

    @property
    def corrupted_ids(self) -> list[str]:
        """The most recent corrupted IDs (bounded)."""
        return list(self._corrupted_ids)

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def restore(
        self,
        checked: int,
        lost: int,
        corrupted: int,
        *,
        skipped: int = 0,
        errors: int = 0,
        evicted: int = 0,
    ) -> None:
        """Carry the counts of a resumed run (its pending read-backs: ``restore_pending``)."""
        self.checked, self.lost, self.corrupted = checked, lost, corrupted
        self.skipped, self.errors, self.evicted = skipped, errors, evicted

    def snapshot(self, now_ns: int, now_wall: float) -> list[tuple[str, str, float]]:
        """Every read-back not yet judged as ``(space, memory_id, due wall time)``, by due."""
        items = sorted(self._on_wire, key=lambda i: i.due_ns) + list(self._queue)
        return [(i.space, i.memory_id, now_wall + (i.due_ns - now_ns) / 1e9) for i in items]

    def restore_pending(
        self, rows: list[tuple[str, str, float]], now_ns: int, now_wall: float
    ) -> None:
        """Queue again the read-backs a previous soakd of this run had not judged.

        Those already due are due now; at most ``max_pending`` are kept (the
        oldest first), the rest counted as skipped.
        """
        items = [
            PendingCheck(now_ns + max(0, int((due - now_wall) * 1e9)), space, memory_id)
            for space, memory_id, due in sorted(rows, key=lambda r: r[2])
        ]
        room = max(0, self._max_pending - len(self._queue))
        kept, over = items[:room], items[room:]
        self.skipped += len(over)
        self.restored += len(kept)
        self._queue = deque(sorted([*kept, *self._queue], key=lambda i: i.due_ns))
        if kept:
            log.info("integrity_pending_restored", count=len(kept), skipped=len(over))
            self._wake.set()

    # -- intake ----------------------------------------------------------------

    def selected(self, memory_id: str) -> bool:
        """Whether ``memory_id`` is in the read-back sample (deterministic)."""
        if self._cutoff >= 2**32:
            return True
        return zlib.crc32(self._salt + memory_id.encode()) < self._cutoff

    def on_result(self, r: OpResult) -> None:
        if r.op is not Op.STORE or r.outcome is not Outcome.OK or r.memory_id is None:
            return
        if not self.selected(r.memory_id):
            return
        if len(self._queue) >= self._max_pending:
            self.skipped += 1
            return
        self._queue.append(PendingCheck(r.done_ns + self._delay_ns, r.space, r.memory_id))
        self._wake.set()

    # -- the loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Read back due entries until cancelled; at most ``max_in_flight`` at once."""
        slots = asyncio.Semaphore(self._max_in_flight)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                item = await self._next_due()
                if item is None:
                    continue
                self._on_wire.add(item)  # from here until judged: in every snapshot
                await slots.acquire()  # bounded: each read-back ends within the client timeout
                task = asyncio.create_task(self._check(item, slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _next_due(self) -> PendingCheck | None:
        """The head of the queue once it is due; ``None`` after an idle wait."""
        if not self._queue:
            self._wake.clear()
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns normally when a
            # cancellation lands as the event is set, and this loop would run on.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_IDLE_WAIT_S):
                    await self._wake.wait()
            return None
        head = self._queue[0]
        if head.due_ns > self._clock.monotonic_ns():
            await self._clock.sleep_until(head.due_ns)
            return None
        return self._queue.popleft()

    async def _check(self, item: PendingCheck, slots: asyncio.Semaphore) -> None:
        self._in_flight += 1
        try:
            result, content = await self._client.read_back(item.space, item.memory_id, item.due_ns)
            self._judge(item, result, content)
            try:
                self._sink(result)
            except Exception:  # a sink's bug must not end the checker
                log.exception("integrity_sink_failed")
        finally:
            self._on_wire.discard(item)
            self._in_flight -= 1
            slots.release()

    def _judge(self, item: PendingCheck, result: OpResult, content: str | None) -> None:
        if result.outcome is Outcome.OK and content is not None:
            self.checked += 1
            if not self._workload.verify(item.memory_id, content):
                self._corrupt(item, f"content differs from what was written: {content[:120]!r}")
        elif result.outcome is Outcome.INVALID:
            # A 2xx that is not a memory: the server claims to have it but cannot show it.
            self.checked += 1
            self._corrupt(item, "a 2xx answer that is not a memory")
        elif result.outcome is Outcome.HTTP_ERROR and result.status == 404:
            self.checked += 1
            if self._at_capacity is not None and self._at_capacity(item.space):
                # The space is full: Engram evicts its least-activated memory on
                # every store, and a fresh one may be it. Not a lost write.
                self.evicted += 1
                return
            self.lost += 1
            self._lost_ids.append(item.memory_id)
            self._emit(
                EventKind.INTEGRITY_LOST_WRITE,
                f"memory {item.memory_id} in {item.space} was acknowledged (201) but reads 404",
                item,
            )
        else:
            self.errors += 1

    def _corrupt(self, item: PendingCheck, why: str) -> None:
        self.corrupted += 1
        self._corrupted_ids.append(item.memory_id)
        self._emit(
            EventKind.INTEGRITY_CORRUPTED_READ,
            f"memory {item.memory_id} in {item.space}: {why}",
            item,
        )

    def _emit(self, kind: EventKind, message: str, item: PendingCheck) -> None:
        if self._events_sent[kind] >= _EVENTS_PER_KIND:
            log.debug(kind, memory_id=item.memory_id, space=item.space)
            return
        self._events_sent[kind] += 1
        log.warning(kind, memory_id=item.memory_id, space=item.space)
        if self._on_event is None:
            return
        detail = {"space": item.space, "memory_id": item.memory_id}
        self._on_event(Event(self._clock.wall(), kind, message, detail))
