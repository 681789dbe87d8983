"""Open-model, fixed-rate arrivals: one ``Scheduler`` per operation, one ``Timeline`` per run.

Arrival ``k`` is due at ``start_ns + (k - first_k) / rate``, computed afresh for
every arrival in integer nanoseconds from a rational rate, so a 7-day run never
accumulates drift (a loop of ``sleep(1/rate)`` falls 1-8 % behind: see
shared/field-notes.md). The loop re-checks the clock after every wake-up, because
timers may fire early, and when it wakes late it issues every arrival that has
come due at once, each with its own intended time: the schedule is never skipped
or shifted.

Open model: the scheduler never waits for the target. Each arrival becomes its
own task; when ``max_in_flight`` requests are already outstanding, the arrival is
*dropped* (counted, reported through ``on_dropped``) rather than queued, so a
slow target cannot slow the offered load. Arrivals issued more than
``late_threshold_ns`` after their intended time are counted as *late* (the load
generator itself was behind, e.g. a busy event loop).

Timer precision: event-loop timers tick in milliseconds, so with the real clock
the loop sleeps whole milliseconds rounded up rather than spinning through the
last fraction (see ``_sleep_until``); arrivals therefore leave up to ~1-2 ms
after their instant. That lag is measured (sent - intended), never hidden, and
it never shifts the schedule. See docs/perf-scheduler.md for measured figures.

The daemon runs every operation's scheduler on one ``Timeline``, so the
arrivals of all operations are issued from a single loop that wakes once per
distinct instant; ``Scheduler.run`` is a timeline of one.
"""

from __future__ import annotations

import asyncio
import heapq
import types
from collections.abc import Awaitable, Callable, Sequence
from fractions import Fraction

import structlog

from soakd.model import Clock

#: ``fire(k, intended_ns)`` performs one request. It should not raise; the
#: scheduler guards against it anyway.
FireFn = Callable[[int, int], Awaitable[None]]

NS_PER_S = 1_000_000_000
#: Arrivals issued back to back (after a late wake-up) before the loop lets other
#: tasks run, so a large backlog cannot starve the requests it just started.
_BURST = 512
#: Longest single sleep: bounds how stale last_advance_ns gets between arrivals.
_HEARTBEAT_NS = NS_PER_S
#: Floats become exact fractions with a denominator up to this (3/7 stays 3/7).
_MAX_DENOMINATOR = 1_000_000

_log = structlog.get_logger()


def exact_rate(rate_per_s: float | Fraction) -> Fraction:
    """The rate as an exact fraction (floats are read as the nearest simple fraction)."""
    rate = (
        rate_per_s
        if isinstance(rate_per_s, Fraction)
        else Fraction(rate_per_s).limit_denominator(_MAX_DENOMINATOR)
    )
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate_per_s!r}")
    return rate


def arrival_offset_ns(index: int, rate: Fraction) -> int:
    """Nanoseconds from the schedule's origin to arrival number ``index`` (floor, exact)."""
    return index * NS_PER_S * rate.denominator // rate.numerator


class Scheduler:
    """Issues one operation's arrivals on an absolute schedule (see module docstring)."""

    def __init__(
        self,
        name: str,
        rate_per_s: float | Fraction,
        *,
        clock: Clock,
        fire: FireFn,
        max_in_flight: int,
        on_dropped: Callable[[int, int], None],
        late_threshold_ns: int = 10_000_000,
        on_late: Callable[[int, int], None] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.name = name
        self.rate = exact_rate(rate_per_s)
        self._clock = clock
        self._fire = fire
        self._max_in_flight = max_in_flight
        self._on_dropped = on_dropped
        self._on_late = on_late
        self._late_threshold_ns = late_threshold_ns
        self._tasks: set[asyncio.Future[None]] = set()
        self._stopped = False
        self._timeline: Timeline | None = None  # the loop issuing our arrivals, while it runs
        self._logged_types: set[type[BaseException]] = set()
        self.issued = 0
        self.dropped = 0
        self.late = 0
        self.errors = 0  # fire() calls that raised (or callbacks that did)
        self.next_k = 0
        # Monotonic ns when the loop last issued an arrival or woke on schedule
        # (at least once a second while running); it stops when run() returns.
        self.last_advance_ns = clock.monotonic_ns()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def intended_ns(self, start_ns: int, first_k: int, k: int) -> int:
        """When arrival ``k`` is due on the schedule that ``run(start_ns, first_k)`` follows."""
        return start_ns + arrival_offset_ns(k - first_k, self.rate)

    async def run(self, start_ns: int, first_k: int = 0, until_ns: int | None = None) -> None:
        """Issue arrivals ``first_k, first_k + 1, ...`` until ``until_ns`` (exclusive) or stop()."""
        await Timeline(self._clock).run([(self, start_ns, first_k)], until_ns)

    def _issue(self, loop: asyncio.AbstractEventLoop, k: int, intended: int, now: int) -> None:
        if len(self._tasks) >= self._max_in_flight:
            self.dropped += 1
            try:
                self._on_dropped(k, intended)
            except Exception as exc:
                self._note_error(exc)
            return
        if now - intended > self._late_threshold_ns:
            self.late += 1
            if self._on_late is not None:
                try:
                    self._on_late(k, intended)
                except Exception as exc:
                    self._note_error(exc)
        try:
            awaitable = self._fire(k, intended)
            # create_task is the cheap path for the usual coroutine; anything else
            # awaitable goes through ensure_future.
            task: asyncio.Future[None] = (
                loop.create_task(awaitable)
                if type(awaitable) is types.CoroutineType
                else asyncio.ensure_future(awaitable)
            )
        except Exception as exc:
            self.issued += 1
            self._note_error(exc)
            return
        self.issued += 1
        self._tasks.add(task)
        task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # also marks it retrieved: no "never retrieved" noise
        if exc is not None:
            self._note_error(exc)

    def _note_error(self, exc: BaseException) -> None:
        """Count a failure; log only the first of each exception type (no log floods at 10k/s)."""
        self.errors += 1
        kind = type(exc)
        if kind not in self._logged_types:
            self._logged_types.add(kind)
            _log.error(
                "scheduler.fire_failed",
                scheduler=self.name,
                error=repr(exc),
                exc_info=exc,
                note="further errors of this type are counted, not logged",
            )

    def stop(self) -> None:
        """No further arrivals; ``run()`` returns at once (even mid-sleep)."""
        self._stopped = True
        if self._timeline is not None:
            self._timeline.stopped_one()

    async def drain(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for in-flight requests; cancel the rest; return how many."""
        pending = set(self._tasks)
        if not pending:
            return 0
        if timeout_s > 0:
            _, pending = await asyncio.wait(pending, timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            # Bounded: a task that swallows its cancellation must not hang shutdown.
            await asyncio.wait(pending, timeout=1.0)
        return len(pending)


class Timeline:
    """One wake-up loop for the arrivals of several schedulers.

    Each scheduler keeps its own exact schedule; the timeline merges them and
    sleeps once until the earliest arrival due, then issues every arrival of
    every scheduler that has come due. Arrivals of different operations that
    fall on the same instant (at the plan's 100/50/20 per second every recall
    and spread instant is also a store instant) therefore always share one
    wake-up. Three separate loops shared most of them by accident (their
    millisecond timers often fired together) and woke 106-132 times a second
    for the plan's 100 instants; the timeline wakes 101 times. The CPU saved
    was within the noise: a second wake-up a millisecond after the first is
    cheap (bench/wakeup_floor.py, docs/perf-compare.md).
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._schedulers: list[Scheduler] = []
        self._task: asyncio.Task[None] | None = None
        self._sleeping = False
        self._woken_by_stop = False

    async def run(
        self, entries: Sequence[tuple[Scheduler, int, int]], until_ns: int | None = None
    ) -> None:
        """Run ``(scheduler, start_ns, first_k)`` schedules until ``until_ns`` or all stop."""
        if self._task is not None:
            raise RuntimeError("the timeline is already running")
        for sched, _, _ in entries:
            if sched._timeline is not None:
                raise RuntimeError(f"scheduler {sched.name!r} is already running")
        self._task = asyncio.current_task()
        self._schedulers = [sched for sched, _, _ in entries]
        loop = asyncio.get_running_loop()
        clock = self._clock
        # (intended_ns, position, k): position breaks ties in the order given.
        heap: list[tuple[int, int, int]] = []
        origins: list[tuple[int, int, int, int]] = []  # start_ns, first_k, step, num
        now = clock.monotonic_ns()
        for pos, (sched, start_ns, first_k) in enumerate(entries):
            sched._timeline = self
            sched.next_k = first_k
            sched.last_advance_ns = now
            step, num = NS_PER_S * sched.rate.denominator, sched.rate.numerator
            origins.append((start_ns, first_k, step, num))
            heapq.heappush(heap, (start_ns, pos, first_k))
        scheds = self._schedulers
        burst = 0
        try:
            while heap:
                intended, pos, k = heap[0]
                sched = scheds[pos]
                if sched._stopped or (until_ns is not None and intended >= until_ns):
                    heapq.heappop(heap)  # this schedule is over
                    continue
                now = clock.monotonic_ns()
                if intended > now:
                    burst = 0
                    # Wake at least once a second even at very low rates, so
                    # last_advance_ns (the watchdog's evidence) keeps moving.
                    await self._sleep_until(min(intended, now + _HEARTBEAT_NS))
                    woke = clock.monotonic_ns()
                    for s in scheds:
                        s.last_advance_ns = woke
                    continue  # re-check: timers may fire early, stop() may have woken us
                sched._issue(loop, k, intended, now)
                k += 1
                sched.next_k = k
                sched.last_advance_ns = now
                start_ns, first_k, step, num = origins[pos]
                heapq.heapreplace(heap, (start_ns + (k - first_k) * step // num, pos, k))
                burst += 1
                if burst >= _BURST:
                    burst = 0
                    await asyncio.sleep(0)
        finally:
            self._task = None
            for s in scheds:
                s._timeline = None

    def stopped_one(self) -> None:
        """A scheduler stopped: once all have, end ``run()`` at once (even mid-sleep)."""
        if not all(s._stopped for s in self._schedulers):
            return
        task = self._task
        if self._sleeping and task is not None and not self._woken_by_stop:
            # Cancelling the sleep (not racing it against an Event) keeps the
            # per-arrival path free of extra futures.
            self._woken_by_stop = True
            task.cancel()

    async def _sleep_until(self, deadline_ns: int) -> None:
        self._sleeping = True
        try:
            # SystemClock sleeps whole milliseconds, rounded up (a sub-ms sleep on
            # the loop's 1 ms timers would busy-spin: 100 % CPU at 5000/s,
            # measured), so arrivals leave 0-2 ms late, counted as lag.
            await self._clock.sleep_until(deadline_ns)
        except asyncio.CancelledError:
            if not self._woken_by_stop:
                raise
            self._woken_by_stop = False
            task = asyncio.current_task()
            # Swallow only our own cancel; one from outside (TaskGroup) still propagates.
            if task is not None and task.uncancel() > 0:
                raise
        finally:
            self._sleeping = False
