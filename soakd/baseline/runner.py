"""One fixed-rate window on soakd's open-model schedule, for one or several operations.

The search's steps and the latency runs are both this: each operation gets a
:class:`~soakd.scheduler.Sender` at its rate, all on one
:class:`~soakd.scheduler.Pacer`, for ``seconds``. Arrivals the in-flight cap
refuses are *dropped* (the target was behind), never queued; latency is timed
from the intended send instant, as in a soak. After the window, requests still
out get ``drain_s`` to finish; whatever is still out then is cancelled and
counts as not answered.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from soakd.engram import EngramClient
from soakd.hdr import Histogram
from soakd.model import Clock, OpResult, Outcome
from soakd.scheduler import NS_PER_S, FireFn, Pacer, Sender
from soakd.workload import Workload

#: Operations' request builders and senders, by name.
SendFn = Callable[[int, int, Callable[[OpResult], None]], asyncio.Future[None] | None]


@dataclass
class Tally:
    """What one operation's window produced."""

    op: str
    offered: int = 0
    ok: int = 0
    ok_in_window: int = 0  # answered OK by ``until_ns``: what it sustained
    until_ns: int = 0  # the window's close plus ``grace_s`` (see Driver.window)
    # Latency runs: one histogram per stretch of the window (by intended send time), so a
    # machine whose load changed during the run shows it (soakd.baseline.measure).
    start_ns: int = 0
    stretch_ns: int = 0
    stretches: list[Histogram] = field(default_factory=list)
    dropped: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    hist: Histogram = field(default_factory=Histogram)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def error_text(self) -> str:
        return ", ".join(f"{k} x{v}" for k, v in self.errors.most_common(3))

    def on_result(self, r: OpResult) -> None:
        if r.outcome is Outcome.OK:
            self.ok += 1
            if r.done_ns <= self.until_ns:
                self.ok_in_window += 1
            if self.stretches:
                i = (r.intended_ns - self.start_ns) // self.stretch_ns
                self.stretches[min(max(i, 0), len(self.stretches) - 1)].record_ns(r.response_ns)
            self.hist.record_ns(r.response_ns)
        else:
            self.errors[r.error_key] += 1


class Driver:
    """Sends one workload's operations through one client; ``k`` advances across windows."""

    def __init__(self, client: EngramClient, workload: Workload, store_k0: int) -> None:
        self.client = client
        self.workload = workload
        # Stores during measurement must not rewrite the loaded dataset's IDs.
        self._next = {"store": store_k0, "recall": 0, "spread": 0}

    def sender(self, op: str) -> SendFn:
        w, c = self.workload, self.client
        if op == "store":
            return lambda k, t, then: c.begin_store(w.store(k), t, then)
        if op == "recall":
            return lambda k, t, then: c.begin_recall(w.recall(k), t, then)
        if op == "spread":

            def spread(k: int, t: int, then: Callable[[OpResult], None]) -> asyncio.Future[None]:
                req = w.spread(k)
                if req is None:  # no known memory to start from: counted as not answered
                    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    fut.set_result(None)
                    return fut
                return c.begin_spread(req, t, then)

            return spread
        raise ValueError(f"unknown operation {op!r}")

    async def probe(self, op: str, timeout_s: float) -> float | None:
        """One lone request of ``op``: seconds to its answer (any HTTP status), or None when
        none came within ``timeout_s``. An operation with nothing to send yet answers 0."""
        results: list[OpResult] = []
        k = self._next[op]
        self._next[op] += 1
        t0 = time.monotonic()
        fut = self.sender(op)(k, time.monotonic_ns(), results.append)
        if fut is None:
            return 0.0
        try:
            async with asyncio.timeout(timeout_s):
                await fut
        except TimeoutError:
            return None
        if not results:  # nothing to send (a SPREAD with no memory to start from)
            return 0.0
        return time.monotonic() - t0 if results[0].status is not None else None

    async def window(
        self,
        rates: dict[str, float],
        seconds: float,
        *,
        clock: Clock,
        max_in_flight: int,
        drain_s: float,
        stretches: int = 0,
        grace_s: float = 0.0,
    ) -> dict[str, Tally]:
        """Run every ``op: rate`` together for ``seconds``; a tally per operation.

        An answer counts as sustained when it came by the close plus ``grace_s`` (the
        search passes its P99 ceiling): the last arrivals of a steady target are still
        in flight at the close, a falling-behind target's backlog takes longer to clear.
        """
        tallies = {op: Tally(op) for op in rates}
        entries: list[tuple[Sender, int, int]] = []
        start_ns = clock.monotonic_ns() + NS_PER_S // 50  # a moment to get the timeline going
        until_ns = start_ns + int(seconds * NS_PER_S)
        for op, rate in rates.items():
            tally, send = tallies[op], self.sender(op)
            tally.until_ns = until_ns + int(grace_s * NS_PER_S)
            if stretches > 0:
                tally.start_ns = start_ns
                tally.stretch_ns = max(1, (until_ns - start_ns) // stretches)
                tally.stretches = [Histogram() for _ in range(stretches)]

            def fire(k: int, intended: int, send: SendFn = send, tally: Tally = tally) -> object:
                return send(k, intended, tally.on_result)

            def dropped(_k: int, _t: int, tally: Tally = tally) -> None:
                tally.dropped += 1

            sched = Sender(
                op,
                Fraction(rate).limit_denominator(1000),
                clock=clock,
                fire=_as_fire(fire),
                max_in_flight=max_in_flight,
                on_dropped=dropped,
            )
            entries.append((sched, start_ns, self._next[op]))
        await Pacer(clock).run(entries, until_ns)
        for sched, _, _ in entries:
            self._next[sched.name] = sched.next_k
            await sched.drain(drain_s)
            t = tallies[sched.name]
            t.offered = sched.issued + sched.dropped
            # Fired but never answered (cancelled at the drain deadline): not OK, not an error code.
            unanswered = sched.issued - t.ok - t.error_count
            if unanswered > 0:
                t.errors["unanswered"] += unanswered
        return tallies


def _as_fire(fn: Callable[[int, int], object]) -> FireFn:
    return fn  # type: ignore[return-value]  # the senders return a future or None
