"""Tests of soakd.systemd against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from soakd.clock import FakeClock, SystemClock
from soakd.systemd import Notifier
from soakd.testing import async_wait_for, wait_for

INTERVAL_NS = 15_000_000_000  # WatchdogSec=30s: pet every 15 s


class Receiver:
    """What systemd's notify socket would be: a bound datagram socket we read from."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address  # what goes in NOTIFY_SOCKET
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        """Read every datagram waiting now (non-blocking) and return all seen so far."""
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def count(self, message: str) -> int:
        return self.drain().count(message)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    # A short directory: AF_UNIX paths are limited to 108 bytes and tmp_path can be long.
    with tempfile.TemporaryDirectory(prefix="sdn") as d:
        path = str(Path(d) / "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.setblocking(False)
        try:
            yield Receiver(sock, path)
        finally:
            sock.close()


async def wait_pets(rx: Receiver, n: int) -> None:
    """Wait (bounded) until exactly ``n`` WATCHDOG=1 datagrams have arrived."""
    await async_wait_for(lambda: rx.count("WATCHDOG=1") == n, 5.0, what=f"{n} WATCHDOG=1")


def notifier(rx: Receiver, watchdog_usec: int | None = None) -> Notifier:
    env = {"NOTIFY_SOCKET": rx.address}
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
        env["WATCHDOG_PID"] = str(os.getpid())
    return Notifier(environ=env)


def test_ready_status_stopping_arrive_as_datagrams(receiver: Receiver) -> None:
    """READY=1, STATUS=<text> and STOPPING=1 reach the notify socket in order."""
    n = notifier(receiver)
    assert n.enabled
    n.ready()
    n.status("36.0/168 h, verdict pending, 0 alerts firing")
    n.stopping()
    got = wait_for(lambda: len(receiver.drain()) >= 3 and receiver.messages, what="3 datagrams")
    assert got == [
        "READY=1",
        "STATUS=36.0/168 h, verdict pending, 0 alerts firing",
        "STOPPING=1",
    ]


def test_status_is_sent_as_one_line(receiver: Receiver) -> None:
    """A multi-line status text is folded to one line (systemd shows one)."""
    notifier(receiver).status("line one\nline two\n")
    assert wait_for(receiver.drain) == ["STATUS=line one line two"]


def test_socket_path_argument_wins_over_the_environment(receiver: Receiver) -> None:
    """An explicit socket_path is used even when $NOTIFY_SOCKET says otherwise."""
    n = Notifier(receiver.address, environ={"NOTIFY_SOCKET": "/nonexistent/socket"})
    n.extend_timeout(90)
    assert wait_for(receiver.drain) == ["EXTEND_TIMEOUT_USEC=90000000"]


def test_abstract_namespace_socket() -> None:
    """A NOTIFY_SOCKET starting with '@' names a socket in the abstract namespace."""
    name = f"soakd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5.0)
        Notifier(environ={"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"


def test_without_notify_socket_everything_is_a_no_op() -> None:
    """Outside systemd: not enabled, no watchdog, and calls do nothing and raise nothing."""
    n = Notifier(environ={})
    assert not n.enabled
    assert n.watchdog_interval_s() is None
    n.ready()
    n.status("x")
    n.watchdog()
    n.stopping()


def test_a_dead_notify_socket_is_logged_not_raised() -> None:
    """If systemd's socket is gone, notifying must not crash the soak."""
    Notifier("/nonexistent/dir/notify").ready()


def test_watchdog_interval_is_half_of_watchdog_usec(receiver: Receiver) -> None:
    """WATCHDOG_USEC=30s gives a 15 s interval; a WATCHDOG_PID of another process gives none."""
    assert notifier(receiver, 30_000_000).watchdog_interval_s() == 15.0
    env = {"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "30000000"}
    assert Notifier(environ=env).watchdog_interval_s() == 15.0  # no WATCHDOG_PID: ours
    env["WATCHDOG_PID"] = str(os.getpid() + 1)
    assert Notifier(environ=env).watchdog_interval_s() is None
    env.update(WATCHDOG_PID=str(os.getpid()), WATCHDOG_USEC="garbage")
    assert Notifier(environ=env).watchdog_interval_s() is None


async def test_watchdog_loop_returns_at_once_without_a_watchdog(receiver: Receiver) -> None:
    """No WATCHDOG_USEC: the loop has nothing to do and returns."""
    await asyncio.wait_for(notifier(receiver).watchdog_loop(lambda: 0, FakeClock()), 5.0)
    assert receiver.drain() == []


async def test_watchdog_pets_while_progressing_and_stops_when_wedged(receiver: Receiver) -> None:
    """WATCHDOG=1 every interval while the scheduler advances; none once it is wedged."""
    clock = FakeClock()
    progress = {"ns": 0}
    n = notifier(receiver, watchdog_usec=2 * INTERVAL_NS // 1000)
    task = asyncio.create_task(n.watchdog_loop(lambda: progress["ns"], clock))
    try:
        await async_wait_for(lambda: clock.sleepers == 1, 5.0, what="loop parked")
        for k in range(1, 4):  # healthy: the scheduler advances between checks
            progress["ns"] = clock.monotonic_ns() + 1
            clock.advance(INTERVAL_NS)
            await wait_pets(receiver, k)
        # Wedged: progress freezes. Drive five more intervals; each check must stay silent.
        for _ in range(5):
            clock.advance(INTERVAL_NS)
            await async_wait_for(lambda: clock.sleepers == 1, 5.0, what="loop parked again")
        assert receiver.count("WATCHDOG=1") == 3
        # Unwedged: petting resumes.
        progress["ns"] = clock.monotonic_ns()
        clock.advance(INTERVAL_NS)
        await wait_pets(receiver, 4)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_recent_progress_counts_as_advancing_with_stall_after(receiver: Receiver) -> None:
    """With stall_after_s, an advance within that window keeps petting even if not since the
    last check (a slow plan whose arrivals are further apart than the watchdog interval)."""
    clock = FakeClock()
    n = notifier(receiver, watchdog_usec=2 * INTERVAL_NS // 1000)
    task = asyncio.create_task(n.watchdog_loop(lambda: 0, clock, stall_after_s=40.0))
    try:
        await async_wait_for(lambda: clock.sleepers == 1, 5.0)
        for k in (1, 2):  # checks at 15 s and 30 s: the advance at 0 is within 40 s
            clock.advance(INTERVAL_NS)
            await wait_pets(receiver, k)
        clock.advance(INTERVAL_NS)  # 45 s: too old
        await async_wait_for(lambda: clock.sleepers == 1, 5.0)
        assert receiver.count("WATCHDOG=1") == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watchdog_on_the_real_clock(receiver: Receiver) -> None:
    """With a 50 ms interval and real time, WATCHDOG=1 keeps arriving while progress is fresh."""
    n = notifier(receiver, watchdog_usec=100_000)
    task = asyncio.create_task(n.watchdog_loop(time.monotonic_ns, SystemClock()))
    try:
        await async_wait_for(lambda: receiver.count("WATCHDOG=1") >= 3, 10.0, what="3 pets")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
