"""Driving the measured operations: one ``Sender`` per operation, their fire callbacks.

Each fire starts its request and returns at once; the result is recorded from
the connection's callback (soakd.http1: no task per request) and delivered to
the result sinks (stats, exporter). What is in flight is the senders' to count
and, at the end, to drain. ``Capacity`` keeps the per-space memory accounting
that tells an eviction (a space at Engram's capacity) from a lost write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from soakd.consolidation import ConsolidationWatcher
from soakd.engram import EngramClient
from soakd.exporter import Exporter
from soakd.integrity import IntegrityChecker
from soakd.model import Clock, Op, OpResult, ResultSink
from soakd.runstate import NEXT_K
from soakd.scheduler import FireFn, Pacer, Sender
from soakd.spec.model import OperationSpec, Spec
from soakd.stats import StatsHub
from soakd.workload import Workload

#: IDs of the unmeasured seed stores (one per space, so SPREAD has a start).
SEED_K_BASE = 10**15
#: How long a resumed schedule's k jumps ahead of the last flushed one, in
#: seconds of arrivals: IDs used after the last flush must never be reused.
K_MARGIN_S = 30.0


def seed_k(segment: int, index: int, spaces: int) -> int:
    """The k of the ``index``-th seed store of a run segment (0: the start, +1 per resume).

    A memory ID is never reused: each resume seeds with ``spaces`` fresh ks
    (consecutive, so one lands in every space), far above any measured k.
    """
    return SEED_K_BASE + segment * spaces + index


class Capacity:
    """Per-space memory counts as Engram last reported them, and our ok stores per space.

    Together they tell whether a space is at Engram's capacity, where a 404 on
    a read-back is an eviction, not a lost write.
    """

    def __init__(self, client: EngramClient, spaces: Sequence[str], space_capacity: int) -> None:
        self._client = client
        self._spaces = frozenset(spaces)
        self._capacity = space_capacity
        self._space_counts: dict[str, int] = {}
        self._stored: dict[str, int] = {}
        self._stored_at_count: dict[str, int] = {}

    def note_stored(self, space: str) -> None:
        self._stored[space] = self._stored.get(space, 0) + 1

    async def memories(self) -> int | None:
        """Ask Engram how many memories our spaces hold (the sampler's ``memories``)."""
        counts = await self._client.memory_counts()
        if counts is None:
            return None
        self._space_counts = {s: n for s, n in counts.items() if s in self._spaces}
        self._stored_at_count = dict(self._stored)
        return sum(self._space_counts.values())

    def at_capacity(self, space: str) -> bool:
        """Whether ``space`` holds Engram's maximum (last count plus our stores since)."""
        since = self._stored.get(space, 0) - self._stored_at_count.get(space, 0)
        count = self._space_counts.get(space, 0) + since
        return count >= self._capacity


class Driver:
    """Sends every operation at its rate; records each result; drains at the end."""

    def __init__(
        self,
        spec: Spec,
        *,
        client: EngramClient,
        workload: Workload,
        stats: StatsHub,
        exporter: Exporter,
        integrity: IntegrityChecker,
        watcher: ConsolidationWatcher | None,
        capacity: Capacity,
        clock: Clock,
    ) -> None:
        self._spec = spec
        self._client = client
        self._workload = workload
        self._stats = stats
        self._exporter = exporter
        self._integrity = integrity
        self._watcher = watcher
        self._capacity = capacity
        self._clock = clock
        sinks: tuple[ResultSink, ...] = (stats, exporter)
        self._sinks = tuple(s.on_result for s in sinks)
        self.senders = {Op(o.operation): self._sender(o) for o in spec.operations}

    def _sender(self, o: OperationSpec) -> Sender:
        op = Op(o.operation)
        fire: FireFn = {
            Op.STORE: self._fire_store,
            Op.RECALL: self._fire_recall,
            Op.SPREAD: self._fire_spread,
        }[op]

        def dropped(k: int, intended_ns: int) -> None:
            self._stats.on_dropped(op, intended_ns)
            self._exporter.on_dropped(op)

        def late(k: int, intended_ns: int) -> None:
            self._stats.on_late(op)
            self._exporter.on_late(op)

        return Sender(
            op.value,
            o.rate_per_s,
            clock=self._clock,
            fire=fire,
            max_in_flight=o.max_in_flight,
            on_dropped=dropped,
            on_late=late,
        )

    # -- the measured operations ---------------------------------------------------------

    def _record(self, r: OpResult) -> None:
        for sink in self._sinks:
            sink(r)

    def _fire_store(self, k: int, intended_ns: int) -> asyncio.Future[None]:
        return self._client.begin_store(self._workload.store(k), intended_ns, self._on_stored)

    def _on_stored(self, r: OpResult) -> None:
        self._record(r)
        if r.memory_id is not None:
            space = r.space
            self._capacity.note_stored(space)
            self._workload.confirm_stored(space, r.memory_id)
            self._integrity.on_result(r)
            if self._watcher is not None:
                self._watcher.note_store(space)

    def _fire_recall(self, k: int, intended_ns: int) -> asyncio.Future[None]:
        return self._client.begin_recall(self._workload.recall(k), intended_ns, self._record)

    def _fire_spread(self, k: int, intended_ns: int) -> asyncio.Future[None] | None:
        req = self._workload.spread(k)
        if req is None:  # no stored ID anywhere yet: an arrival that could not be sent
            self._stats.on_dropped(Op.SPREAD, intended_ns)
            self._exporter.on_dropped(Op.SPREAD)
            return None
        return self._client.begin_spread(req, intended_ns, self._record)

    # -- the run ---------------------------------------------------------------------------

    async def seed_spaces(self, segment: int) -> None:
        """One unmeasured store per space, so every space has a SPREAD start point."""
        if self._spec.operation("spread") is None:
            return
        # All at once: one by one, a slow target would hold the start for a
        # store's time per space.
        n = len(self._workload.spaces)
        reqs = [self._workload.store(seed_k(segment, i, n)) for i in range(n)]
        now_ns = self._clock.monotonic_ns()
        results = await asyncio.gather(*(self._client.store(req, now_ns) for req in reqs))
        for req, r in zip(reqs, results, strict=True):
            if r.memory_id is not None:
                self._workload.confirm_stored(req.space, r.memory_id)
                if self._watcher is not None:
                    self._watcher.note_store(req.space)

    async def run(
        self, start_ns: int, end_ns: int, counters: dict[str, int], resumed: bool
    ) -> None:
        """Every sender on one pacer until ``end_ns`` or stop().

        One pacer for every operation: arrivals due at the same instant share a
        wake-up (docs/perf-compare.md, item 5).
        """
        entries = [
            (sender, start_ns, self._first_k(op, counters, resumed))
            for op, sender in self.senders.items()
        ]
        await Pacer(self._clock).run(entries, end_ns)

    def _first_k(self, op: Op, counters: dict[str, int], resumed: bool) -> int:
        if not resumed:
            return 0
        o = self._spec.operation(op.value)
        margin = int((o.rate_per_s if o else 0) * K_MARGIN_S) + 1
        return counters.get(NEXT_K.format(op=op.value), 0) + margin

    def stop(self) -> None:
        """No further arrivals (what is in flight goes on until drained)."""
        for sender in self.senders.values():
            sender.stop()

    async def drain(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for what is in flight; cancel the rest; how many."""
        counts = await asyncio.gather(*(s.drain(timeout_s) for s in self.senders.values()))
        return sum(counts)

    def next_ks(self) -> dict[str, int]:
        """The counters a resumed run continues its schedules from."""
        return {NEXT_K.format(op=op.value): s.next_k for op, s in self.senders.items()}

    def progress_ns(self) -> int:
        """When the slowest sender last advanced (the watchdog's evidence)."""
        return min((s.last_advance_ns for s in self.senders.values()), default=0)
