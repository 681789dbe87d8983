"""Load a workload's dataset: every memory stored once, as fast as the target takes it.

Bounded concurrency (``concurrency`` requests out at a time, a closed loop: here
the goal is to fill the target, not to time it), a progress line on stderr
about once a second, and resumable: the target's per-space memory counts
(``GET /api/v1/system/health``) say what is there already, and only the rest is
sent. The IDs are a function of ``(seed, dataset name, k)``, so a resumed load
re-sends at most the few stores that were in flight when the last one stopped
(Engram keeps one memory per ID).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from soakd.baseline.model import LoadStats
from soakd.engram import EngramClient
from soakd.model import Outcome
from soakd.workload import Workload

#: Failed stores tolerated before a load gives up (the target is refusing, not slow).
MAX_LOAD_FAILURES = 1000


class LoadError(RuntimeError):
    """The dataset could not be loaded (the message says how far it got and why)."""


@dataclass(frozen=True)
class Held:
    """What the target holds in a dataset's spaces (None: it does not say)."""

    per_space: dict[str, int] | None

    @property
    def total(self) -> int | None:
        return None if self.per_space is None else sum(self.per_space.values())

    def resume_from(self, spaces: Sequence[str]) -> int:
        """The first ``k`` not known to be stored (stores go round-robin over the spaces)."""
        if self.per_space is None:
            return 0
        return min(self.per_space.get(s, 0) for s in spaces) * len(spaces)


async def held(client: EngramClient, spaces: Sequence[str], timeout_s: float) -> Held:
    counts = await client.memory_counts(timeout_s=timeout_s)
    if counts is None:
        return Held(None)
    return Held({s: counts.get(s, 0) for s in spaces})


def _progress(out: TextIO, name: str) -> Callable[[int, int, float], None]:
    last = [0.0]
    tty = out.isatty()
    every, end = (1.0, "\r") if tty else (10.0, "")

    def show(done: int, total: int, started: float) -> None:
        now = time.monotonic()
        if now - last[0] < every and done < total:
            return
        last[0] = now
        rate = done / max(now - started, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        pct = 100.0 * done / max(total, 1)
        bar = "#" * int(pct / 5)
        out.write(
            f"{end}load {name}: [{bar:<20}] {done:,}/{total:,} ({pct:.0f} %) {rate:,.0f}/s"
            f" ETA {eta:,.0f} s   "
        )
        if done >= total or not tty:
            out.write("\n")
        out.flush()

    return show


async def load_dataset(
    client: EngramClient,
    workload: Workload,
    name: str,
    memories: int,
    *,
    concurrency: int,
    timeout_s: float,
    out: TextIO = sys.stderr,
) -> LoadStats:
    """Store memories ``0 .. memories-1`` of ``workload`` that the target does not hold yet."""
    started = time.monotonic()
    before = await held(client, workload.spaces, timeout_s)
    total_before = before.total
    if total_before is not None and total_before >= memories:
        out.write(f"load {name}: {total_before:,} memories already there, nothing to load\n")
        return LoadStats(total_before, 0, 0, time.monotonic() - started)
    first = min(before.resume_from(workload.spaces), memories)
    todo = range(first, memories)
    show = _progress(out, name)
    it = iter(todo)
    stored = failed = 0
    first_error = ""

    async def worker() -> None:
        nonlocal stored, failed, first_error
        for k in it:
            req = workload.store(k)
            result = await client.store(req, time.monotonic_ns())
            if result.outcome is Outcome.OK:
                stored += 1
            else:
                failed += 1
                first_error = first_error or result.error_key
                if failed > MAX_LOAD_FAILURES:
                    return
            show(stored + failed, len(todo), started)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    if failed > MAX_LOAD_FAILURES:
        raise LoadError(
            f"loading {name} gave up after {failed} failed stores ({first_error} first);"
            f" {stored} stored"
        )
    if len(todo) > 0 and stored + failed < len(todo):
        show(len(todo), len(todo), started)
    return LoadStats(total_before, stored, failed, time.monotonic() - started)


def seed_spread_sources(workload: Workload, memories: int, per_space: int = 1024) -> None:
    """Make the newest loaded memories of each space the SPREAD starting points."""
    n = len(workload.spaces)
    for k in range(max(0, memories - per_space * n), memories):
        workload.confirm_stored(workload.spaces[k % n], workload.memory_id(k))
