"""A rate a target takes for a search step but not for a latency run is a burst rate.

The real Engram passed its mix at 336/s in 3-second steps and could not hold half of
that for a minute (docs/real-engram.md). The reference target's --sustain/--burst knob
(a token bucket) does the same on demand: these tests hold a rate against it.
"""

from __future__ import annotations

import asyncio
import io
import re

import pytest

from soakd.baseline.model import Throughput
from soakd.baseline.plan import BaselinePlan, SizePlan
from soakd.baseline.run import _Session, _Usage
from soakd.clock import SystemClock
from soakd.engram import EngramClient
from soakd.reference.harness import reference

#: As short 3-s steps would have found it: 600/s passed, 700/s failed.
FOUND = Throughput(600.0, 600.0, 700.0, ())


async def _hold(url: str) -> tuple[Throughput, str]:
    """The latency run at half of FOUND, as ``soakd baseline`` takes it after a search."""
    plan = BaselinePlan(
        operations=("store",), latency_min_seconds=2.0, latency_min_requests=1, step_seconds=3.0
    )
    client = EngramClient(url, clock=SystemClock(), timeout_s=30.0)
    err = io.StringIO()
    try:
        session = _Session(plan, client, None, err, None)
        driver, _spaces, _stats = await session.prepare(SizePlan("small", 10, 1))
        thr, _ = await session.hold(
            "small/store", driver, {"store": 1.0}, FOUND, _Usage(None), workload="small"
        )
    finally:
        await client.close()
    return thr, err.getvalue()


@pytest.mark.timing
def test_a_held_rate_that_fails_halves_and_caps_the_throughput() -> None:
    """A target that keeps up with 100 stores/s after a burst of 200: held at 300/s for 2 s
    it falls ~2 s behind, at 150/s ~1 s; 75/s it holds. The throughput is then [75, 150),
    not the 600/s the short steps found, and the note and stderr say it was a burst."""
    with reference("--sustain", "store=100", "--burst", "store=200") as ref:
        thr, said = asyncio.run(_hold(ref.url))
    assert [(s.rate_per_s, s.passed) for s in thr.held] == [
        (300.0, False),
        (150.0, False),
        (75.0, True),
    ], said
    assert (thr.per_s, thr.lo_per_s, thr.hi_per_s) == (75.0, 75.0, 150.0)
    assert re.match(r"held \d+ s, 150/s failed \(", thr.note), thr.note
    assert thr.note.endswith("the 3-s steps' 600/s was a burst rate; 75/s held")
    assert "small/store: held 2 s at 300/s -> " in said
    assert "was a burst rate: holding 150/s" in said
    assert re.search(r"small/store: held \d+ s at 75/s -> pass", said), said


@pytest.mark.timing
def test_a_target_that_holds_the_rate_keeps_the_figure_found() -> None:
    """The same run against a target with no bucket: held at 300/s it passes, 600/s stands."""
    with reference() as ref:
        thr, said = asyncio.run(_hold(ref.url))
    assert [(s.rate_per_s, s.passed) for s in thr.held] == [(300.0, True)], said
    assert (thr.per_s, thr.hi_per_s, thr.note) == (600.0, 700.0, "")
