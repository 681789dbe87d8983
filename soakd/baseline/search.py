"""The highest fixed rate a target sustains: step up, then bisect, on the open-model schedule.

A step at rate R passes when, over ``step_seconds``: the OK answers received by
the window's close plus the P99 ceiling are at least ``min_achieved`` (99 %) of
the arrivals offered in it (a target that falls behind answers fewer than it was
sent, and a backlog that takes longer than the ceiling to clear does not count),
nothing was dropped at the in-flight cap, nothing failed, and the P99 (from the
intended send time) is under the ceiling. Doubling from ``start_rate`` finds a failing rate (or
``max_rate``); halving finds a passing one when the start already fails; then
geometric bisection narrows [pass, fail) until fail / pass < 1 + resolution,
and the rate found is tried once more (a lucky pass resumes the search below it, halving
first when nothing below it was tried).
The figure is the highest rate that passed; the failing one above it is kept as
the bracket's top, so a comparison knows how far apart two searches may
honestly be. A closed loop (N requests in flight, as fast as answers come) has
no such notion: its rate is whatever the latency allows.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from soakd.baseline.model import Step, Throughput
from soakd.baseline.runner import Tally

Trial = Callable[[float], Awaitable[Step]]
#: The search gives up below start_rate / 2**MAX_HALVINGS.
MAX_HALVINGS = 8
#: Times the rate found may fail its second try before the search settles for the
#: next lower rate that passed without a second try.
CONFIRM_ROUNDS = 2


def nice_rate(rate: float) -> float:
    """Three significant figures: rates a reader can repeat."""
    if rate <= 0:
        return 0.0
    digits = 2 - math.floor(math.log10(rate))
    return round(rate, max(0, digits)) if digits > 0 else float(round(rate, digits))


def judge(
    rate: float,
    seconds: float,
    tallies: list[Tally],
    *,
    min_achieved: float,
    p99_ceiling_ms: float,
) -> Step:
    """One step's verdict from its operations' tallies (all of them must pass)."""
    offered = sum(t.offered for t in tallies)
    ok = sum(t.ok_in_window for t in tallies)
    errors = sum(t.error_count for t in tallies)
    dropped = sum(t.dropped for t in tallies)
    p99s = [t.hist.percentile_ms(99.0) for t in tallies if t.hist.count]
    p99 = max(p99s) if p99s else None
    why = "ok"
    if dropped:
        why = f"{dropped} arrivals dropped at the in-flight cap (the target fell behind)"
    elif errors:
        named = len(tallies) > 1  # a mixed step: say which operation failed how
        why = f"{errors} failed: " + "; ".join(
            f"{t.op} {t.error_text()}" if named else t.error_text() for t in tallies if t.errors
        )
    elif offered == 0 or ok < min_achieved * offered:
        # Rounded down: 98.96 % must not read as the 99 % it fell short of.
        share = math.floor(1000.0 * ok / max(offered, 1)) / 10.0
        why = f"achieved {share:.1f} % of offered (< {100 * min_achieved:g} %)"
    elif p99 is not None and p99 > p99_ceiling_ms:
        why = f"p99 {p99:.1f} ms > ceiling {p99_ceiling_ms:g} ms"
    return Step(
        rate_per_s=rate,
        seconds=seconds,
        offered=offered,
        ok=ok,
        errors=errors,
        dropped=dropped,
        achieved_per_s=ok / seconds if seconds > 0 else 0.0,
        p99_ms=p99,
        passed=why == "ok",
        why=why,
    )


def verdict_of(step: Step) -> str:
    """What decided a step, with its P99 when that was not it (a step short of answers may
    also have been slow)."""
    if step.p99_ms is None or step.why.startswith("p99 "):
        return step.why
    return f"{step.why}; p99 {step.p99_ms:.1f} ms"


async def search(
    trial: Trial, *, start_rate: float, max_rate: float, resolution: float
) -> Throughput:
    """The highest rate ``trial`` passes (see the module docstring)."""
    steps: list[Step] = []

    async def run(rate: float) -> bool:
        step = await trial(nice_rate(rate))
        steps.append(step)
        return step.passed

    lo: float | None = None
    hi: float | None = None
    rate = min(start_rate, max_rate)
    while True:  # step up
        if not await run(rate):
            hi = nice_rate(rate)
            break
        lo = nice_rate(rate)
        if rate >= max_rate:
            break
        rate = min(rate * 2.0, max_rate)

    async def step_down(rate: float) -> tuple[float | None, float]:
        """Halve from a failing ``rate`` until a step passes: (that rate or None, lowest fail)."""
        failed = nice_rate(rate)
        for _ in range(MAX_HALVINGS):
            rate /= 2.0
            if await run(rate):
                return nice_rate(rate), failed
            failed = nice_rate(rate)
        return None, failed

    if lo is None:  # the start already fails: step down
        lo, hi = await step_down(rate)
        if lo is None:
            return Throughput(0.0, 0.0, hi, tuple(steps), note=f"no rate passed: {steps[-1].why}")
    # A step just under the limit passes or fails by luck (one draw of a noisy
    # machine): the figure must pass a second time. When it does not, the search
    # goes on below it (bisecting from the next lower rate that passed), at most
    # CONFIRM_ROUNDS times.
    for _ in range(CONFIRM_ROUNDS):
        while hi is not None and hi / lo > 1.0 + resolution:  # bisect
            mid = nice_rate(math.sqrt(lo * hi))
            if mid in (lo, hi):
                break
            if await run(mid):
                lo = mid
            else:
                hi = mid
        if await run(lo):
            break
        hi = lo
        lower = [s.rate_per_s for s in steps if s.passed and s.rate_per_s < lo]
        if lower:
            lo = max(lower)
            continue
        # Nothing lower was tried (the start rate passed once, then failed): a noisy
        # step is no proof the target sustains nothing, so step down as from a failing start.
        found, hi = await step_down(lo)
        if found is None:
            return Throughput(
                0.0, 0.0, hi, tuple(steps), note=f"no rate passed twice: {steps[-1].why}"
            )
        lo = found
    return Throughput(lo, lo, hi, tuple(steps))


def held_throughput(found: Throughput, held: Sequence[Step], step_seconds: float) -> Throughput:
    """``found`` as holding a rate showed it: a latency run judged as a step.

    A search step lasts seconds; a target may take a rate that long and not for
    longer (a queue that fills, work put off to later), so every latency run is
    judged as a step too. A held rate that failed proves the target sustains less:
    it caps the bracket, and when the figure was not below it the figure becomes
    the highest held rate that passed (0 when none did): the steps found a burst rate.
    """
    failed = [s for s in held if not s.passed]
    if not failed:
        return replace(found, held=tuple(held))
    worst = min(failed, key=lambda s: s.rate_per_s)
    cap = worst.rate_per_s
    hi = cap if found.hi_per_s is None else min(found.hi_per_s, cap)
    if found.per_s < cap:
        return replace(found, hi_per_s=hi, held=tuple(held))
    passed = [s.rate_per_s for s in held if s.passed and s.rate_per_s < cap]
    lo = max(passed, default=0.0)
    said = (
        f"held {worst.seconds:.0f} s, {cap:g}/s failed ({verdict_of(worst)}): the"
        f" {step_seconds:g}-s steps' {found.per_s:g}/s was a burst rate; "
        + (f"{lo:g}/s held" if lo > 0 else "no held rate passed")
    )
    note = f"{found.note}; {said}" if found.note else said
    return Throughput(lo, lo, hi, found.steps, note, tuple(held))
