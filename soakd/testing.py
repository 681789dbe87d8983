"""Helpers for soakd's tests, shipped with the package (the structlog habit).

Tests never sleep to wait for a state: they poll for it under a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from soakd.errors import SoakdError
from soakd.ports import free_port  # noqa: F401  (re-exported: tests take it from here)
from soakd.store import RunStore

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
    predicate: Callable[[], Awaitable[T]] | Callable[[], T],
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


async def stops_when_cancelled(task: asyncio.Task[None]) -> bool:
    """Cancel ``task``; whether it ended cancelled within 100 loop steps. If not, it is
    cancelled again (it is parked now, so this one lands) and awaited, so no test leaks it."""
    task.cancel()
    for _ in range(100):
        if task.done():
            break
        await asyncio.sleep(0)
    if task.done() and task.cancelled():
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


def store_figure(state: Path, read: Callable[[RunStore], T], default: T) -> T:
    """``read`` of the run store in ``state`` (read-only), or ``default`` while there is none
    yet or it cannot be opened (a soakd still creating it, or just killed)."""
    if not RunStore.exists(state):
        return default
    try:
        store = RunStore.open(state, readonly=True)
    except SoakdError:
        return default
    try:
        return read(store)
    finally:
        store.close()


def finished_report(state: Path, returncode: int | None, stderr: str) -> dict[str, object]:
    """The report.json a soakd run wrote in ``state``; if there is none, fail saying why.

    A run that ends without a report (refused spec, start-up failure) otherwise
    shows up as a bare FileNotFoundError with its exit code and stderr lost.
    """
    path = state / "report.json"
    if not path.exists():
        raise AssertionError(
            f"no report in {state}: soakd exited {returncode}; stderr (tail):\n{stderr[-3000:]}"
        )
    data = json.loads(path.read_text())
    assert isinstance(data, dict), path
    return data


def soak_spec(
    port: int,
    *,
    duration: str = "20s",
    store: float = 50,
    recall: float = 25,
    spread: float = 10,
    spaces: int = 4,
    consolidation_interval: str | None = "2s",
    knobs: Sequence[str] = (),
    capacity: int | None = None,
    extra: str = "",
    alerts: Sequence[str] = (
        'memory_leak: "RSS increases >10% per day"',
        'performance_degradation: "P99 latency increases >20%"',
        'consolidation_failure: "Cadence drift >5s"',
        'crash: "any crash"',
        'integrity: "any lost or corrupted write"',
    ),
) -> str:
    """A spec that launches the reference target on ``port`` with fault ``knobs``."""
    workload = [
        f"  - {{operation: store, rate: {store}, spaces: {spaces}}}" if store else "",
        f"  - {{operation: recall, rate: {recall}, spaces: {spaces}}}" if recall else "",
        f"  - {{operation: spread, rate: {spread}, max_hops: 3}}" if spread else "",
    ]
    command = ["{python}", "-m", "soakd.reference", "--host", "127.0.0.1", "--port", "{port}"]
    if consolidation_interval:
        workload.append(
            f"  - {{operation: consolidation, interval: {consolidation_interval},"
            f" spaces: {spaces}, poll_interval: 1s}}"
        )
        command += ["--consolidation-interval", consolidation_interval]
    command += list(knobs)
    integrity = "integrity: {sample_fraction: 0.2, delay: 1s"
    if capacity is not None:
        # A small per-space cap makes the dataset flat within seconds; soakd is
        # told, so that a 404 in a full space counts as an eviction.
        command += ["--capacity", str(capacity)]
        integrity += f", space_capacity: {capacity}"
    lines = [
        "name: e2e",
        "seed: 7",
        f"duration: {duration}",
        "workload:",
        *[w for w in workload if w],
        *(["alerts:", *[f"  - {a}" for a in alerts]] if alerts else []),
        "target:",
        f"  url: http://127.0.0.1:{port}",
        f"  command: {json.dumps(command)}",
        "exporter: {listen: '127.0.0.1:0'}",
        integrity + "}",
        extra,
    ]
    return "\n".join(lines) + "\n"


def soakd_command(*args: str) -> list[str]:
    """argv that runs this checkout's soakd CLI in a child process."""
    return [sys.executable, "-m", "soakd", *args]


def chromium(
    profile: Path, *args: str, timeout_s: float = 150.0
) -> subprocess.CompletedProcess[str]:
    """Headless Debian Chromium with the flags this sandbox needs (no network, no GPU)."""
    cmd = [
        shutil.which("chromium") or "/usr/bin/chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
