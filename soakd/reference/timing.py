"""Sleeping until an absolute loop time, robust to timers that fire a tick early."""

from __future__ import annotations

import asyncio

_MAX_WAKEUPS = 1000


async def sleep_until(due: float) -> None:
    """Return at or after loop time ``due`` (re-checked after each wake-up)."""
    loop = asyncio.get_running_loop()
    for _ in range(_MAX_WAKEUPS):
        delay = due - loop.time()
        if delay <= 0:
            return
        await asyncio.sleep(delay)
