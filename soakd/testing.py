"""Helpers for soakd's tests, shipped with the package (the structlog habit).

Tests never sleep to wait for a state: they poll for it under a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(AssertionError):
    """The awaited state did not arrive in time."""


def wait_for(
    predicate: Callable[[], T], timeout_s: float = 10.0, interval_s: float = 0.02, what: str = ""
) -> T:
    """Return the first truthy value of ``predicate()``, polling until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(f"timed out after {timeout_s}s waiting for {what or predicate}")
        time.sleep(interval_s)


async def async_wait_for(
    predicate: Callable[[], T | Awaitable[T]],
    timeout_s: float = 10.0,
    interval_s: float = 0.02,
    what: str = "",
) -> T:
    """Async twin of :func:`wait_for`; ``predicate`` may be sync or async."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(f"timed out after {timeout_s}s waiting for {what or predicate}")
        await asyncio.sleep(interval_s)
