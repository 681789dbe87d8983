"""Fault knobs, applied from inside the server so a client sees them from outside.

* leak: each store retains (and touches) N more bytes, so RSS really grows;
* latency drift: each operation waits ``drift * uptime_minutes`` ms before running;
* stalls: every N s the event loop itself is frozen for M ms (a blocking sleep on
  the loop thread), so requests sent meanwhile wait, as in a GC pause;
* errors: a rate and status per operation, answered in Engram's envelope;
* crash: after N s or N operations the process signals itself (no clean exit);
* write loss: a fraction of stores are answered 201 but not kept;
* saturation: each operation of a kind holds that kind's one worker for N ms,
  so above 1000/N per second requests queue and wait longer the longer the queue;
* burst: a kind keeps up with N per second on end after a burst of B more (a
  token bucket), so a short step passes well above what a longer run holds.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import signal
import time

import structlog

from soakd.reference.config import FaultConfig
from soakd.reference.timing import sleep_until

log = structlog.get_logger()


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` (and one) saved up; a request takes one.

    Tokens go negative: the debt is the queue, so each request's wait is the time the
    refill takes to pay for everyone ahead of it and itself (first come, first served).
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.cap = max(burst, 1.0)
        self.tokens = self.cap
        self.at = now

    def take(self, now: float) -> float:
        """Take a token at ``now``; the seconds to wait for it."""
        self.tokens = min(self.cap, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class Faults:
    """The fault state of one server process."""

    def __init__(self, config: FaultConfig, started_monotonic: float, rng: random.Random) -> None:
        self.config = config
        self._started = started_monotonic
        self._rng = rng
        self._ops = 0
        self._leaked: list[bytearray] = []
        self.leaked_bytes = 0
        self.stalls = 0
        self._workers: dict[str, asyncio.Lock] = {}
        self._buckets: dict[str, TokenBucket] = {}

    def uptime_min(self) -> float:
        """Minutes since the server started."""
        return (time.monotonic() - self._started) / 60.0

    async def before(self, op: str) -> int | None:
        """Apply crash, drift and error knobs; return a status to fail with, or None."""
        self._ops += 1
        if 0 < self.config.crash_after_ops <= self._ops:
            self.crash(f"after {self._ops} operations")
        faults = self.config.op(op)
        if faults.drift_ms_per_min > 0:
            await asyncio.sleep(faults.drift_ms_per_min * self.uptime_min() / 1000.0)
        if faults.service_ms > 0:
            worker = self._workers.setdefault(op, asyncio.Lock())
            async with worker:  # FIFO: the wait is the queue ahead of this request
                await asyncio.sleep(faults.service_ms / 1000.0)
        if faults.sustain_per_s > 0:
            now = time.monotonic()
            bucket = self._buckets.get(op)
            if bucket is None:  # built once per kind, not on every request
                bucket = self._buckets[op] = TokenBucket(faults.sustain_per_s, faults.burst, now)
            wait = bucket.take(now)
            if wait > 0:
                await asyncio.sleep(wait)
        if faults.error_rate > 0 and self._rng.random() < faults.error_rate:
            return faults.error_status
        return None

    def work(self, op: str) -> None:
        """Spin for the operation's ``work_ms``: compute the handler would otherwise not do."""
        ms = self.config.op(op).work_ms
        if ms > 0:
            _spin(ms / 1000.0)

    def slow_down(self, worked_s: float) -> None:
        """Spin for ``(latency_scale - 1) * worked_s``: the work cost that much more CPU.

        A busy wait, not a sleep: a slower build holds the loop (and a core) longer, so
        throughput falls with it, as it would for real.
        """
        extra = (self.config.latency_scale - 1.0) * worked_s
        if extra > 0:
            _spin(extra)

    def leak(self) -> None:
        """Retain ``leak_bytes_per_store`` bytes, written so the pages are resident."""
        size = self.config.leak_bytes_per_store
        if size > 0:
            self._leaked.append(bytearray(b"\x5a") * size)
            self.leaked_bytes += size

    def lose_write(self) -> bool:
        """Whether this store is to be silently dropped."""
        return self.config.write_loss > 0 and self._rng.random() < self.config.write_loss

    def crash(self, why: str) -> None:
        """Die by the configured signal: no cleanup, no PID-file removal."""
        log.warning("crashing (knob)", why=why, signal=self.config.crash_signal.name)
        # No core file for a deliberate SIGSEGV/SIGABRT.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        sig = self.config.crash_signal
        if sig in (signal.SIGSEGV, signal.SIGABRT):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        time.sleep(5.0)  # the signal is asynchronous; never run on past it
        os._exit(70)

    async def run_stalls(self) -> None:
        """Every ``stall_every_s``, block the whole event loop for ``stall_for_s``."""
        every, length = self.config.stall_every_s, self.config.stall_for_s
        if every <= 0 or length <= 0:
            return
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        k = 0
        while True:
            k += 1
            await sleep_until(t0 + k * every)
            self.stalls += 1
            time.sleep(length)  # noqa: ASYNC251 - blocking the loop is the fault

    async def run_crash_timer(self) -> None:
        """Crash after ``crash_after_s`` of uptime."""
        after = self.config.crash_after_s
        if after <= 0:
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + max(0.0, after - (time.monotonic() - self._started))
        await sleep_until(due)
        self.crash(f"after {after} s")


def _spin(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass
