"""Between two steps: wait until the target has worked off what the last one left behind.

A step the target could not keep up with leaves work queued in it. soakd cancels its own
requests at the drain deadline, but a server need not notice: the real Engram went on with
an overloaded step's abandoned requests, and its next steps, and the next operation's
search, were charged for that backlog (docs/baseline.md, "The real Engram"). So after each
window soakd sends lone requests of the window's operations, one at a time, until
``in_a_row`` rounds in a row were all answered (any HTTP status: a server that answers 500
quickly is idle) within the P99 ceiling, or ``timeout_s`` has passed; then the next step is
measured on the target as it is, and the wait is reported.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

#: One lone request of an operation: seconds to its answer, or None for no answer in time.
Probe = Callable[[str, float], Awaitable[float | None]]

#: Rounds in a row answered within the ceiling that count as settled.
IN_A_ROW = 3
#: Pause between rounds: a lone request is no load, and a queue ahead of it shows in its time.
GAP_S = 0.05


@dataclass(frozen=True)
class Settled:
    waited_s: float
    rounds: int
    settled: bool
    last_s: float | None  # the slowest answer of the last round (None: one went unanswered)


async def settle(
    probe: Probe,
    ops: Sequence[str],
    *,
    ceiling_s: float,
    timeout_s: float,
    in_a_row: int = IN_A_ROW,
    gap_s: float = GAP_S,
    now: Callable[[], float] = time.monotonic,
) -> Settled:
    """Probe ``ops`` until ``in_a_row`` rounds answer within ``ceiling_s`` (or ``timeout_s``)."""
    t0 = now()
    deadline = t0 + timeout_s
    good = rounds = 0
    last: float | None = None
    while True:
        rounds += 1
        last = 0.0
        for op in ops:
            left = deadline - now()
            took = await probe(op, max(ceiling_s, min(left, 10.0 * ceiling_s, 5.0)))
            last = None if took is None or last is None else max(last, took)
        good = good + 1 if last is not None and last <= ceiling_s else 0
        waited = now() - t0
        if good >= in_a_row:
            return Settled(waited, rounds, True, last)
        if waited >= timeout_s:
            return Settled(waited, rounds, False, last)
        await asyncio.sleep(gap_s)
