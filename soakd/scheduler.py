"""Open-model, fixed-rate arrivals: one ``Sender`` per operation, one ``Pacer`` per run.

As vegeta splits its pacer (when) from its attacker (what is sent): the
``Pacer`` owns the clock and the schedule and tells each ``Sender`` which
arrival is due; a ``Sender`` starts that arrival's request, caps what is in
flight and counts drops and lateness. Each uses only the other's public methods.

Arrival ``k`` is due at ``start_ns + (k - first_k) / rate``, computed afresh for
every arrival in integer nanoseconds from a rational rate, so a 7-day run never
accumulates drift (a loop of ``sleep(1/rate)`` falls 1-8 % behind: see
shared/field-notes.md). The loop re-checks the clock after every wake-up, because
timers may fire early, and when it wakes late it issues every arrival that has
come due at once, each with its own intended time: the schedule is never skipped
or shifted.

Open model: a sender never waits for the target. Each arrival is its own
request in flight (a future, or a task for a coroutine fire); when
``max_in_flight`` requests are already outstanding, the arrival is
*dropped* (counted, reported through ``on_dropped``) rather than queued, so a
slow target cannot slow the offered load. Arrivals issued more than
``late_threshold_ns`` after their intended time are counted as *late* (the load
generator itself was behind, e.g. a busy event loop).

Timer precision: event-loop timers tick in milliseconds, so with the real clock
the loop sleeps whole milliseconds rounded up rather than spinning through the
last fraction (see ``SystemClock.call_at``); arrivals therefore leave up to ~1-2 ms
after their instant. That lag is measured (sent - intended), never hidden, and
it never shifts the schedule. See docs/perf-scheduler.md for measured figures.

The daemon runs every operation's sender on one ``Pacer``, so the arrivals of
all operations are issued from a single loop that wakes once per distinct
instant; ``Sender.run`` is a pacer of one.
"""

from __future__ import annotations

import asyncio
import heapq
import types
from collections.abc import Awaitable, Callable, Sequence
from fractions import Fraction

import structlog

from soakd.model import Cancellable, Clock

#: ``fire(k, intended_ns)`` starts one request and returns what completes with
#: it: a future (the daemon's callback path, no task needed), a coroutine (run
#: as a task), or ``None`` when it sent nothing and holds nothing in flight. It
#: should not raise; the sender guards against it anyway.
FireFn = Callable[[int, int], Awaitable[None] | None]

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


class Sender:
    """Sends one operation's arrivals as its ``Pacer`` says they are due (see module docstring)."""

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
        self._pacer: Pacer | None = None  # the loop issuing our arrivals, while it runs
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
        await Pacer(self._clock).run([(self, start_ns, first_k)], until_ns)

    def attach(self, pacer: Pacer) -> None:
        """``pacer`` issues our arrivals from now on (one pacer at a time)."""
        if self._pacer is not None:
            raise RuntimeError(f"sender {self.name!r} is already running")
        self._pacer = pacer

    def detach(self) -> None:
        """The pacer has ended."""
        self._pacer = None

    def issue(self, loop: asyncio.AbstractEventLoop, k: int, intended: int, now: int) -> None:
        """Send arrival ``k`` (due at ``intended``) now, or drop it at the in-flight cap."""
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
            if awaitable is None:  # nothing sent, nothing in flight
                self.issued += 1
                return
            # A future is held as it is; a coroutine becomes a task; anything
            # else awaitable goes through ensure_future.
            task: asyncio.Future[None]
            if isinstance(awaitable, asyncio.Future):
                task = awaitable
            elif type(awaitable) is types.CoroutineType:
                task = loop.create_task(awaitable)
            else:
                task = asyncio.ensure_future(awaitable)
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
        if self._pacer is not None:
            self._pacer.stopped_one()

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


class Pacer:
    """One wake-up loop for the arrivals of several senders.

    Each sender keeps its own exact schedule; the pacer merges them and
    wakes once at the earliest arrival due, then issues every arrival of every
    sender that has come due. Arrivals of different operations that fall on
    the same instant (at the plan's 100/50/20 per second every recall and
    spread instant is also a store instant) therefore always share one
    wake-up: 101 a second for the plan's 100 instants, where three separate
    loops woke 106-132 times.

    It wakes on a plain loop timer (``Clock.call_at``), not as a sleeping
    coroutine: at the plan's rates soakd is idle between instants and each
    wake-up runs with cold caches, and resuming a task through
    ``asyncio.sleep`` cost a future, a timer and a task step on top of the
    timer itself (bench/wakeup_floor.py, docs/perf-compare.md). ``run`` awaits
    one future that the last wake-up, ``stop()`` or a failure settles.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._senders: list[Sender] = []
        self._done: asyncio.Future[None] | None = None
        self._timer: Cancellable | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._until_ns: int | None = None
        # (intended_ns, position, k): position breaks ties in the order given.
        self._heap: list[tuple[int, int, int]] = []
        self._origins: list[tuple[int, int, int, int]] = []  # start_ns, first_k, step, num

    async def run(
        self, entries: Sequence[tuple[Sender, int, int]], until_ns: int | None = None
    ) -> None:
        """Run ``(sender, start_ns, first_k)`` schedules until ``until_ns`` or all stop."""
        if self._done is not None:
            raise RuntimeError("the pacer is already running")
        for pos, (sched, _, _) in enumerate(entries):
            try:
                sched.attach(self)
            except RuntimeError:
                for earlier, _, _ in entries[:pos]:
                    earlier.detach()
                raise
        loop = self._loop = asyncio.get_running_loop()
        done = self._done = loop.create_future()
        self._senders = [sched for sched, _, _ in entries]
        self._until_ns = until_ns
        self._heap, self._origins = [], []
        now = self._clock.monotonic_ns()
        for pos, (sched, start_ns, first_k) in enumerate(entries):
            sched.next_k = first_k
            sched.last_advance_ns = now
            step, num = NS_PER_S * sched.rate.denominator, sched.rate.numerator
            self._origins.append((start_ns, first_k, step, num))
            heapq.heappush(self._heap, (start_ns, pos, first_k))
        self._timer = loop.call_soon(self._tick)
        try:
            await done  # cancelled from outside (a TaskGroup ending) propagates
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._done = None
            for s in self._senders:
                s.detach()

    def stopped_one(self) -> None:
        """A sender stopped: once all have, end ``run()`` at once (even between wake-ups)."""
        if not all(s.stopped for s in self._senders):
            return
        done = self._done
        if done is not None and not done.done():
            done.set_result(None)

    def _tick(self) -> None:
        """A wake-up: issue what is due, then arm the next one (or end the run)."""
        done = self._done
        if done is None or done.done():
            return
        try:
            self._timer = self._issue_due()
        except Exception as exc:  # a bug here must end run() loudly, not hang it
            self._timer = None
            if not done.done():
                done.set_exception(exc)
            return
        # A fire may have stopped every sender (stop() settles ``done``) meanwhile.
        if self._timer is None and not done.done():
            done.set_result(None)

    def _issue_due(self) -> Cancellable | None:
        """Issue every arrival that has come due; the timer for the next, or None at the end."""
        clock, heap, scheds, origins = self._clock, self._heap, self._senders, self._origins
        loop, until_ns = self._loop, self._until_ns
        assert loop is not None
        now = clock.monotonic_ns()
        for s in scheds:
            s.last_advance_ns = now
        burst = 0
        while heap:
            intended, pos, k = heap[0]
            sched = scheds[pos]
            if sched.stopped or (until_ns is not None and intended >= until_ns):
                heapq.heappop(heap)  # this schedule is over
                continue
            now = clock.monotonic_ns()
            if intended > now:
                # Timers may fire early: the next wake-up re-checks. Wake at least
                # once a second even at very low rates, so last_advance_ns (the
                # watchdog's evidence) keeps moving.
                return clock.call_at(min(intended, now + _HEARTBEAT_NS), self._tick)
            sched.issue(loop, k, intended, now)
            k += 1
            sched.next_k = k
            sched.last_advance_ns = now
            start_ns, first_k, step, num = origins[pos]
            heapq.heapreplace(heap, (start_ns + (k - first_k) * step // num, pos, k))
            burst += 1
            if burst >= _BURST:  # let the requests just started run, then go on
                return loop.call_soon(self._tick)
        return None
