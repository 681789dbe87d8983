"""Tests for soakd.scheduler: exact open-model arrivals under a fake clock, and one real run."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from fractions import Fraction

import aiohttp
import pytest
import structlog
from aiohttp import web

from soakd.clock import FakeClock, SystemClock
from soakd.model import Cancellable
from soakd.scheduler import NS_PER_S, Pacer, Sender, arrival_offset_ns, exact_rate
from soakd.testing import async_wait_for

SEC = NS_PER_S
DAY = 86_400 * SEC


class Recorder:
    """A fire function that records (k, intended_ns) and completes at once."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.fired: list[tuple[int, int]] = []
        self.count = 0

    async def __call__(self, k: int, intended_ns: int) -> None:
        self.count += 1
        if self.keep:
            self.fired.append((k, intended_ns))


def make(
    rate: float | Fraction,
    *,
    clock: FakeClock,
    fire: Callable[[int, int], Awaitable[None]],
    max_in_flight: int = 10_000,
    dropped: list[tuple[int, int]] | None = None,
    late: list[tuple[int, int]] | None = None,
) -> Sender:
    drops = dropped if dropped is not None else []
    return Sender(
        "test",
        rate,
        clock=clock,
        fire=fire,
        max_in_flight=max_in_flight,
        on_dropped=lambda k, t: drops.append((k, t)),
        on_late=(lambda k, t: late.append((k, t))) if late is not None else None,
    )


def due_by(now_ns: int, rate: Fraction, start_ns: int = 0) -> int:
    """How many arrivals of a schedule starting at start_ns are due at now_ns."""
    return (now_ns - start_ns) * rate.numerator // (SEC * rate.denominator) + 1


async def advance_to(clock: FakeClock, sched: Sender, now_ns: int, expected_next_k: int) -> None:
    """Move the fake clock and wait until the scheduler has issued what is due."""
    clock.set(now_ns)
    await asyncio.sleep(0)  # the loop runs at least once: wake-ups are loop callbacks
    await async_wait_for(
        lambda: sched.next_k >= expected_next_k,
        timeout_s=10,
        interval_s=0,
        what=f"next_k to reach {expected_next_k}",
    )


async def settle(sched: Sender) -> None:
    """Wait until every issued request has finished."""
    await async_wait_for(lambda: sched.in_flight == 0, timeout_s=10, interval_s=0, what="idle")


def test_arrival_arithmetic_is_exact_after_seven_days() -> None:
    """Arrival k = 7 days x rate lands exactly on 7 days for integer, float and rational rates."""
    week_s = 7 * 86_400
    assert arrival_offset_ns(60_480_000, exact_rate(100)) == 7 * DAY
    assert arrival_offset_ns(170 * week_s, exact_rate(170.0)) == 7 * DAY
    assert arrival_offset_ns(259_200, exact_rate(Fraction(3, 7))) == 7 * DAY
    assert arrival_offset_ns(259_200, exact_rate(3 / 7)) == 7 * DAY
    assert arrival_offset_ns(week_s * 1000, exact_rate(1000.0)) == 7 * DAY
    # The naive float accumulation drifts; the exact form does not.
    assert exact_rate(0.1) == Fraction(1, 10)


def test_rate_must_be_positive() -> None:
    """A zero or negative rate is refused."""
    with pytest.raises(ValueError):
        exact_rate(0)
    with pytest.raises(ValueError):
        exact_rate(-5.0)


@pytest.mark.parametrize(
    ("rate", "span_s", "step_ns", "expected"),
    [
        (100, 10, 7_000_000, 1000),
        (1000, 5, 13_000_000, 5000),
        (Fraction(3, 7), 70, 900_000_000, 30),
        (3 / 7, 70, 2_300_000_000, 30),
        (170, 10, 50_000_000, 1700),
    ],
)
async def test_exact_arrival_counts(
    rate: float | Fraction, span_s: int, step_ns: int, expected: int
) -> None:
    """Arrivals in [0, span) are issued exactly once each, with their own exact intended time."""
    clock = FakeClock()
    rec = Recorder()
    sched = make(rate, clock=clock, fire=rec)
    until = span_s * SEC
    run = asyncio.create_task(sched.run(0, until_ns=until))
    exact = exact_rate(rate)
    now = 0
    await advance_to(clock, sched, 0, 1)
    while not run.done():
        now += step_ns
        await advance_to(clock, sched, now, min(expected, due_by(now, exact)))
    await run
    await settle(sched)
    assert sched.issued == expected
    assert sched.next_k == expected
    assert [k for k, _ in rec.fired] == list(range(expected))
    assert [t for _, t in rec.fired] == [arrival_offset_ns(k, exact) for k in range(expected)]
    assert sched.dropped == 0


async def test_first_k_and_start_offset_resume_the_schedule() -> None:
    """run(start_ns, first_k) continues numbering from first_k with arrival first_k at start_ns."""
    clock = FakeClock(start_ns=5 * SEC)
    rec = Recorder()
    sched = make(100, clock=clock, fire=rec)
    run = asyncio.create_task(sched.run(5 * SEC, first_k=1000, until_ns=6 * SEC))
    await advance_to(clock, sched, 6 * SEC, 1100)
    await run
    await settle(sched)
    assert rec.fired[0] == (1000, 5 * SEC)
    assert rec.fired[-1] == (1099, 5 * SEC + 990_000_000)
    assert sched.issued == 100


async def test_no_drift_over_seven_simulated_days() -> None:
    """1 per minute through 7 simulated days in 1-hour jumps issues exactly 10,080 arrivals."""
    clock = FakeClock()
    rec = Recorder(keep=False)
    rate = Fraction(1, 60)
    sched = make(rate, clock=clock, fire=rec)
    run = asyncio.create_task(sched.run(0, until_ns=7 * DAY))
    await advance_to(clock, sched, 0, 1)
    hour = 3600 * SEC
    for h in range(1, 7 * 24 + 1):
        await advance_to(clock, sched, h * hour, min(10_080, due_by(h * hour, rate)))
    await asyncio.wait_for(run, timeout=10)
    await settle(sched)
    assert sched.issued == rec.count == 10_080
    assert sched.late == 10_080 - 7 * 24  # all but the one due on each hour boundary were late


async def test_100_per_second_for_a_simulated_hour_is_exact() -> None:
    """At 100/s one simulated hour in uneven steps issues exactly 360,000 arrivals, none dropped."""
    clock = FakeClock()
    rec = Recorder(keep=False)
    sched = make(100, clock=clock, fire=rec)
    until = 3600 * SEC
    run = asyncio.create_task(sched.run(0, until_ns=until))
    now = 0
    while not run.done():
        now += 333_333_333
        await advance_to(clock, sched, now, min(360_000, due_by(now, Fraction(100))))
    await run
    await settle(sched)
    assert sched.issued == rec.count == 360_000
    assert sched.dropped == 0


async def test_in_flight_cap_drops_and_never_queues() -> None:
    """Beyond max_in_flight arrivals are dropped (counted, reported) and never fired later."""
    clock = FakeClock()
    gate = asyncio.Event()
    fired: list[int] = []

    async def fire(k: int, intended_ns: int) -> None:
        fired.append(k)
        await gate.wait()

    dropped: list[tuple[int, int]] = []
    sched = make(100, clock=clock, fire=fire, max_in_flight=5, dropped=dropped)
    run = asyncio.create_task(sched.run(0, until_ns=2 * SEC))
    await advance_to(clock, sched, SEC, 101)
    assert sched.issued == 5
    assert sched.in_flight == 5
    assert sched.dropped == 96
    assert dropped == [(k, k * 10_000_000) for k in range(5, 101)]
    gate.set()
    await settle(sched)
    for now in range(SEC + 10_000_000, 2 * SEC, 10_000_000):
        await advance_to(clock, sched, now, due_by(now, Fraction(100)))
        await settle(sched)
    await advance_to(clock, sched, 2 * SEC, 200)
    await run
    await settle(sched)
    assert fired == [0, 1, 2, 3, 4, *range(101, 200)]
    assert sched.issued + sched.dropped == 200


async def test_late_arrivals_are_counted_when_the_clock_jumps() -> None:
    """After a 1 s jump, arrivals issued more than 10 ms after their intended time count as late."""
    clock = FakeClock()
    rec = Recorder()
    late: list[tuple[int, int]] = []
    sched = make(100, clock=clock, fire=rec, late=late)
    run = asyncio.create_task(sched.run(0, until_ns=5 * SEC))
    await advance_to(clock, sched, 0, 1)
    before = sched.last_advance_ns
    await advance_to(clock, sched, SEC, 101)
    # Due at 10 ms .. 1000 ms, issued at 1000 ms: lateness > 10 ms for k = 1..98.
    assert sched.late == 98
    assert [k for k, _ in late] == list(range(1, 99))
    assert sched.last_advance_ns == SEC > before
    assert sched.issued == 101  # late arrivals are still all issued, none skipped
    sched.stop()
    await asyncio.wait_for(run, timeout=5)


async def test_raising_fire_does_not_stop_the_schedule() -> None:
    """A raising fire (async or sync) is counted and logged once per type; arrivals go on."""
    clock = FakeClock()
    calls: list[int] = []

    async def bad_async(k: int) -> None:
        if k % 2:
            raise RuntimeError(f"boom {k}")
        raise KeyError(k)

    def fire(k: int, intended_ns: int) -> Awaitable[None]:
        calls.append(k)
        if k % 3 == 0:
            raise ValueError("sync boom")
        return bad_async(k)

    sched = make(100, clock=clock, fire=fire)
    with structlog.testing.capture_logs() as logs:
        run = asyncio.create_task(sched.run(0, until_ns=SEC))
        await advance_to(clock, sched, SEC, 100)
        await run
        await settle(sched)
    assert calls == list(range(100))
    assert sched.issued == 100
    assert sched.errors == 100
    kinds = sorted(entry["error"].split("(")[0] for entry in logs)
    assert kinds == ["KeyError", "RuntimeError", "ValueError"]


async def test_stop_wakes_a_sleeping_run_at_once() -> None:
    """stop() makes run() return while it sleeps until a far-away arrival."""
    clock = FakeClock()
    rec = Recorder()
    sched = make(Fraction(1, 100), clock=clock, fire=rec)  # next arrival 100 s away
    run = asyncio.create_task(sched.run(0))
    await advance_to(clock, sched, 0, 1)
    await async_wait_for(lambda: clock.sleepers == 1, timeout_s=5, interval_s=0)
    sched.stop()
    await asyncio.wait_for(run, timeout=5)
    assert sched.issued == 1
    assert not run.cancelled()


async def test_last_advance_moves_between_rare_arrivals() -> None:
    """At 1 arrival per 100 s, last_advance_ns still moves every second (watchdog evidence)."""
    clock = FakeClock()
    sched = make(Fraction(1, 100), clock=clock, fire=Recorder())
    run = asyncio.create_task(sched.run(0))
    await advance_to(clock, sched, 0, 1)
    for second in range(1, 6):
        clock.set(second * SEC)
        await async_wait_for(
            functools.partial(lambda t: sched.last_advance_ns == t, second * SEC),
            timeout_s=5,
            interval_s=0,
        )
    assert sched.issued == 1
    sched.stop()
    await asyncio.wait_for(run, timeout=5)


async def test_outside_cancel_still_cancels_run() -> None:
    """Cancelling run() from outside (a TaskGroup shutting down) propagates CancelledError."""
    clock = FakeClock()
    sched = make(1, clock=clock, fire=Recorder())
    run = asyncio.create_task(sched.run(0))
    await async_wait_for(lambda: clock.sleepers == 1, timeout_s=5, interval_s=0)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, timeout=5)


async def test_drain_cancels_hanging_requests_and_reports_them() -> None:
    """drain() lets finishing requests end, cancels hanging ones and returns how many."""
    clock = FakeClock()
    finish = asyncio.Event()

    async def fire(k: int, intended_ns: int) -> None:
        if k < 2:
            await finish.wait()
        else:
            await asyncio.Event().wait()  # hangs forever

    sched = make(100, clock=clock, fire=fire)
    run = asyncio.create_task(sched.run(0))
    await advance_to(clock, sched, 40_000_000, 5)
    sched.stop()
    await asyncio.wait_for(run, timeout=5)
    assert sched.in_flight == 5
    finish.set()
    cancelled = await sched.drain(timeout_s=0.2)
    assert cancelled == 3
    assert sched.in_flight == 0
    assert sched.errors == 0
    assert await sched.drain(timeout_s=0.2) == 0


async def test_slow_target_does_not_slow_arrivals() -> None:
    """Requests taking 2 s each do not delay the 100/s schedule (open model)."""
    clock = FakeClock()
    started: list[int] = []

    async def slow(k: int, intended_ns: int) -> None:
        started.append(k)
        await clock.sleep_until(intended_ns + 2 * SEC)

    sched = make(100, clock=clock, fire=slow)
    run = asyncio.create_task(sched.run(0, until_ns=10 * SEC))
    now = 0
    while not run.done():
        now += 10_000_000
        await advance_to(clock, sched, now, min(1000, due_by(now, Fraction(100))))
    await run
    assert sched.issued == 1000
    assert sched.dropped == 0
    assert sched.late == 0
    assert sched.in_flight > 150  # two seconds' worth still outstanding
    await advance_to(clock, sched, 20 * SEC, 1000)
    await settle(sched)
    assert started == list(range(1000))


async def test_real_clock_and_server_issue_exact_count() -> None:
    """With the system clock against a local aiohttp server, 200/s for 1 s sends exactly 200."""
    hits = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    statuses: list[int] = []
    clock = SystemClock()
    try:
        async with aiohttp.ClientSession() as session:

            async def fire(k: int, intended_ns: int) -> None:
                async with session.get(f"http://127.0.0.1:{port}/") as resp:
                    await resp.read()
                    statuses.append(resp.status)

            sched = Sender(
                "real",
                200,
                clock=clock,
                fire=fire,
                max_in_flight=1000,
                on_dropped=lambda k, t: None,
            )
            start = clock.monotonic_ns()
            await asyncio.wait_for(sched.run(start, until_ns=start + SEC), timeout=30)
            assert await sched.drain(timeout_s=10) == 0
    finally:
        await runner.cleanup()
    assert sched.issued == 200
    assert sched.dropped == 0
    assert statuses == [200] * 200
    assert hits == 200


class CountingClock(FakeClock):
    """A fake clock that records every wake-up deadline asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.deadlines: list[int] = []

    async def sleep_until(self, deadline_ns: int) -> None:
        self.deadlines.append(deadline_ns)
        await super().sleep_until(deadline_ns)

    def call_at(self, deadline_ns: int, callback: Callable[[], object]) -> Cancellable:
        self.deadlines.append(deadline_ns)
        return super().call_at(deadline_ns, callback)


async def test_timeline_shares_wake_ups_and_keeps_each_schedule() -> None:
    """The plan's 100/50/20 per second on one timeline: 100 wake-ups a second, not 170.

    Every operation still gets exactly its own arrivals at its own instants.
    """
    clock = CountingClock()
    recs = {rate: Recorder() for rate in (100, 50, 20)}
    scheds = [make(rate, clock=clock, fire=rec) for rate, rec in recs.items()]
    run = asyncio.create_task(Pacer(clock).run([(s, 0, 0) for s in scheds], until_ns=SEC))
    await async_wait_for(lambda: bool(clock.deadlines), timeout_s=5, interval_s=0)
    now = 0
    while not run.done():
        now += 10_000_000
        clock.set(now)
        await async_wait_for(
            functools.partial(
                lambda t: run.done() or (bool(clock.deadlines) and clock.deadlines[-1] > t), now
            ),
            timeout_s=5,
            interval_s=0,
            what=f"the timeline to sleep past {now}",
        )
    await run
    for s in scheds:
        await settle(s)
    for rate, rec in recs.items():
        period = SEC // rate
        assert rec.fired == [(k, k * period) for k in range(rate)]
    # One wake-up per 10 ms instant in (0, 1 s), the union of the three grids
    # (three separate loops would sleep 99 + 49 + 19 times).
    assert clock.deadlines == [i * 10_000_000 for i in range(1, 100)]


async def test_timeline_stop_one_keeps_the_others_then_stop_all_wakes_it() -> None:
    """A stopped scheduler issues nothing more; when all are stopped, run() returns at once."""
    clock = FakeClock()
    fast, slow = Recorder(), Recorder()
    a, b = make(10, clock=clock, fire=fast), make(Fraction(1, 100), clock=clock, fire=slow)
    run = asyncio.create_task(Pacer(clock).run([(a, 0, 0), (b, 0, 0)]))
    await advance_to(clock, a, 0, 1)
    a.stop()
    clock.set(SEC)
    await async_wait_for(lambda: clock.sleepers == 1, timeout_s=5, interval_s=0)
    assert a.issued == 1 and b.issued == 1
    assert not run.done()
    b.stop()
    await asyncio.wait_for(run, timeout=5)
    assert not run.cancelled()


async def test_a_scheduler_runs_on_one_timeline_at_a_time() -> None:
    """Starting a scheduler that already runs is refused."""
    clock = FakeClock()
    sched = make(1, clock=clock, fire=Recorder())
    run = asyncio.create_task(sched.run(0))
    await async_wait_for(lambda: clock.sleepers == 1, timeout_s=5, interval_s=0)
    with pytest.raises(RuntimeError, match="already running"):
        await Pacer(clock).run([(sched, 0, 0)])
    sched.stop()
    await asyncio.wait_for(run, timeout=5)


async def test_a_fire_that_stops_its_scheduler_ends_the_run_cleanly() -> None:
    """stop() from inside fire (a burst still being issued) ends run() without an error."""
    clock = FakeClock()
    fired: list[int] = []
    sched: Sender | None = None

    async def fire(k: int, intended_ns: int) -> None:
        fired.append(k)

    def stopping_fire(k: int, intended_ns: int) -> Awaitable[None]:
        if k == 2:
            assert sched is not None
            sched.stop()
        return fire(k, intended_ns)

    loop_errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
    sched = make(100, clock=clock, fire=stopping_fire)
    clock.set(SEC)  # a whole second of arrivals is due at the first wake-up
    await asyncio.wait_for(sched.run(0), timeout=5)
    await settle(sched)
    await asyncio.sleep(0)  # a callback failing after run() returned would report now
    assert fired == [0, 1, 2]
    assert loop_errors == []
