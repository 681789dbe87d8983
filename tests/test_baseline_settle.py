"""Between search steps the target works off the last step's backlog (soakd.baseline.settle)."""

from __future__ import annotations

import asyncio
import io
import re

import pytest

from soakd.baseline.model import Step
from soakd.baseline.plan import BaselinePlan, SizePlan
from soakd.baseline.run import _Session
from soakd.baseline.search import judge
from soakd.baseline.settle import settle
from soakd.clock import SystemClock
from soakd.engram import EngramClient
from soakd.reference.harness import reference


class FakeTarget:
    """Answers each lone request after ``times`` (in order; None: no answer), on a fake clock."""

    def __init__(self, times: list[float | None], then: float | None) -> None:
        self.times = list(times)
        self.then = then
        self.now = 0.0
        self.asked: list[str] = []

    async def probe(self, op: str, timeout_s: float) -> float | None:
        self.asked.append(op)
        took = self.times.pop(0) if self.times else self.then
        self.now += timeout_s if took is None else took
        return took

    def clock(self) -> float:
        return self.now


def test_settles_after_three_prompt_rounds_in_a_row() -> None:
    target = FakeTarget([None, 2.0, 0.01, None], then=0.01)
    done = asyncio.run(
        settle(target.probe, ["store"], ceiling_s=0.1, timeout_s=60, gap_s=0, now=target.clock)
    )
    assert done.settled
    assert done.rounds == 7  # four slow or unanswered (one prompt round between), then three
    assert done.last_s == 0.01


def test_a_round_is_prompt_only_when_every_operation_is() -> None:
    target = FakeTarget([0.01, 0.5] * 3, then=0.01)  # store prompt, recall slow, three times
    done = asyncio.run(
        settle(
            target.probe,
            ["store", "recall"],
            ceiling_s=0.1,
            timeout_s=60,
            gap_s=0,
            now=target.clock,
        )
    )
    assert done.settled and done.rounds == 6
    assert target.asked[:4] == ["store", "recall", "store", "recall"]


def test_gives_up_at_the_timeout_and_says_how_slow_the_target_still_was() -> None:
    target = FakeTarget([], then=0.5)
    done = asyncio.run(
        settle(target.probe, ["recall"], ceiling_s=0.1, timeout_s=5, gap_s=0, now=target.clock)
    )
    assert not done.settled
    assert done.waited_s >= 5
    assert done.last_s == 0.5
    assert done.rounds == 10


async def _after_an_overload(url: str, settle_first: bool) -> tuple[Step, str]:
    """An 80/s window against a 10/s target, then (after the settle, or not) a 5/s step."""
    plan = BaselinePlan(p99_ceiling_ms=500.0, operations=("store",))
    client = EngramClient(url, clock=SystemClock(), timeout_s=30.0)
    err = io.StringIO()
    try:
        session = _Session(plan, client, None, err, None)
        driver, _spaces, _stats = await session.prepare(SizePlan("small", 10, 1))
        await session.window(driver, {"store": 80.0}, 1.0)
        if settle_first:
            await session.settle(driver, ["store"])
        tallies = await session.window(driver, {"store": 5.0}, 1.0)
    finally:
        await client.close()
    step = judge(5.0, 1.0, tallies, min_achieved=0.99, p99_ceiling_ms=plan.p99_ceiling_ms)
    return step, err.getvalue()


@pytest.mark.slow
def test_an_overloaded_windows_backlog_is_not_charged_to_the_next_step() -> None:
    """A target serving 10 stores/s that goes on with requests whose client gave up (as
    Engram does, and the reference target always does): an 80/s window leaves ~3 s of work
    queued in it after soakd's drain deadline. Measured right after, a 5/s step fails on
    that backlog; after the settle it passes, and the wait is said."""
    with reference("--service-ms", "store=100") as ref:
        charged, _ = asyncio.run(_after_an_overload(ref.url, settle_first=False))
    with reference("--service-ms", "store=100") as ref:
        settled, said = asyncio.run(_after_an_overload(ref.url, settle_first=True))
    assert not charged.passed and charged.ok < charged.offered, charged  # stuck behind it
    assert settled.passed, (settled, said)
    waits = [float(w) for w in re.findall(r"worked off the step's backlog in ([\d.]+) s", said)]
    assert waits and waits[0] >= 1.5, said
