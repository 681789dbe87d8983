"""The only place soakd reads time; a fake clock for tests lives beside it.

``loop.time()`` has 1 ms resolution (shared/field-notes.md), so schedules and
latencies use ``time.monotonic_ns()``; timers may fire a tick early, so
``sleep_until`` re-checks the deadline after each wake-up.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable


class SystemClock:
    """Real time: monotonic nanoseconds for durations, wall seconds for records."""

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def wall(self) -> float:
        return time.time()

    async def sleep_until(self, deadline_ns: int) -> None:
        while True:
            remaining = deadline_ns - time.monotonic_ns()
            if remaining <= 0:
                return
            await asyncio.sleep(_whole_ms_s(remaining))

    def call_at(self, deadline_ns: int, callback: Callable[[], object]) -> asyncio.TimerHandle:
        """Run ``callback`` on the running loop at ``deadline_ns``, in whole milliseconds.

        Rounded up like ``sleep_until``, yet a loop timer may still fire a tick
        early: the callback must re-check the time. A plain timer callback is
        what the Pacer wakes on: a sleeping coroutine costs a future and a
        task step per wake-up on top (docs/perf-compare.md).
        """
        delay_s = _whole_ms_s(max(0, deadline_ns - time.monotonic_ns()))
        return asyncio.get_running_loop().call_later(delay_s, callback)


def _whole_ms_s(remaining_ns: int) -> float:
    """``remaining_ns`` as seconds in whole milliseconds, rounded up.

    The loop's timers have 1 ms resolution, so a sub-ms sleep would spin until
    the deadline.
    """
    return -(-remaining_ns // 1_000_000) / 1000


class _FakeTimer:
    """A ``FakeClock.call_at`` timer: runs its callback on the loop once time passes it."""

    __slots__ = ("_callback", "_cancelled", "_fired")

    def __init__(self, callback: Callable[[], object]) -> None:
        self._callback = callback
        self._cancelled = False
        self._fired = False

    def cancel(self) -> None:
        self._cancelled = True

    def done(self) -> bool:
        return self._cancelled or self._fired

    def fire(self) -> None:
        if not self.done():
            self._fired = True
            asyncio.get_running_loop().call_soon(self._callback)


class FakeClock:
    """Time that only moves when a test says so.

    ``sleep_until`` parks the caller (and ``call_at`` its callback) until
    ``advance`` moves time past its deadline, so scheduler tests can simulate
    days in milliseconds.
    """

    def __init__(self, start_ns: int = 0, wall_start: float = 1_700_000_000.0) -> None:
        self._now_ns = start_ns
        self._wall0 = wall_start
        self._start_ns = start_ns
        self._sleepers: list[tuple[int, int, asyncio.Future[None] | _FakeTimer]] = []
        self._seq = 0

    def monotonic_ns(self) -> int:
        return self._now_ns

    def wall(self) -> float:
        return self._wall0 + (self._now_ns - self._start_ns) / 1e9

    async def sleep_until(self, deadline_ns: int) -> None:
        if deadline_ns <= self._now_ns:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (deadline_ns, self._seq, fut))
        await fut

    def call_at(self, deadline_ns: int, callback: Callable[[], object]) -> _FakeTimer:
        timer = _FakeTimer(callback)
        if deadline_ns <= self._now_ns:
            timer.fire()
        else:
            self._seq += 1
            heapq.heappush(self._sleepers, (deadline_ns, self._seq, timer))
        return timer

    @property
    def sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def advance(self, delta_ns: int) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        self.set(self._now_ns + delta_ns)

    def set(self, now_ns: int) -> None:
        self._now_ns = max(self._now_ns, now_ns)
        while self._sleepers and self._sleepers[0][0] <= self._now_ns:
            _, _, waiter = heapq.heappop(self._sleepers)
            if isinstance(waiter, _FakeTimer):
                waiter.fire()
            elif not waiter.done():
                waiter.set_result(None)
