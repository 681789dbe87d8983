"""Bringing the run's memory spaces up before the first arrival.

Engram takes seconds to create a space (engram-api.md §7: 10.8 s each, eight
at once 43 s, partly serialised) and answers at once for one that exists. So
soakd lists the spaces first and creates only the missing ones, a few at a
time, each call with its own generous timeout: with the server serialising
creations, a call waits for those ahead of it, and a bounded number in flight
keeps that wait a few creations long whatever the space count. Every space
logs how it came up; a failure names the call and why ("timed out after N s",
"connection refused"), never a bare status.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import structlog

from soakd.engram import EngramClient, Exchange, call_problem
from soakd.errors import StartupError
from soakd.model import Outcome

log = structlog.get_logger(__name__)

#: Creations in flight at once. With a server that serialises them, one call
#: waits for at most this many creations, so its timeout need not grow with
#: the space count (docs/reference-target.md has the measured model).
CREATE_CONCURRENCY = 4


def _hint(ex: Exchange, url: str) -> str:
    """What the user can do about a failed set-up call."""
    if ex.failure is Outcome.TIMEOUT:
        return "; if the server is only slow, raise target.setup_timeout"
    if ex.failure is not None:
        return f"; is the target running at {url}?"
    return f"; is {url} an Engram server?"


async def ensure_spaces(
    client: EngramClient, spaces: Sequence[str], *, timeout_s: float, url: str
) -> None:
    """Create the spaces ``GET /api/v1/spaces`` does not list; raise StartupError on failure."""
    existing, ex = await client.list_spaces(timeout_s)
    if existing is None:
        problem = call_problem("GET", "/api/v1/spaces", ex, timeout_s)
        if ex.failure is not None:  # no answer: creating would fail the same way, slower
            raise StartupError(f"{problem}{_hint(ex, url)}")
        # it answered, but not with a list: create-or-get is safe on every space
        log.warning("spaces_not_listed", problem=problem or "GET /api/v1/spaces: no 'spaces' list")
        existing = frozenset()
    missing = [s for s in spaces if s not in existing]
    for space in spaces:
        if space in existing:
            log.info("space_ready", space=space, how="already there")
    if not missing:
        return
    log.info("spaces_creating", missing=len(missing), total=len(spaces), timeout_s=timeout_s)
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)
    done = [len(spaces) - len(missing)]

    async def create(space: str) -> None:
        async with gate:
            started = time.monotonic()
            ex = await client.create_space_exchange(space, timeout_s)
            took = time.monotonic() - started
        problem = call_problem("POST", "/api/v1/spaces", ex, timeout_s)
        if problem is not None:
            raise StartupError(f"{problem} (creating space {space!r}){_hint(ex, url)}")
        done[0] += 1
        log.info("space_ready", space=space, how=f"created in {took:.1f} s")
        log.info("spaces_progress", ready=done[0], total=len(spaces))

    tasks = [asyncio.ensure_future(create(s)) for s in missing]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done() and not task.cancelled():
                error = task.exception()
                if error is not None:
                    raise error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
