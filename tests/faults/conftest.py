"""Shared fixtures of the fault suite: real ``soakd`` child processes, bounded and reaped.

Every case of tests/faults/ drives a real ``soakd run`` (or ``soakd report``)
process and judges it from outside: exit code, stderr, report.json,
status.json and the run store opened read-only. The fixtures here only start
processes, remember them and kill whatever is still running at teardown, so a
failing test never leaves a soak (or its target) behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from soakd.testing import soakd_command

#: The environment of every child: unbuffered, so a kill loses no log line.
CHILD_ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}

#: ``spawn(args, stderr_file, env=None) -> Popen``: ``soakd ARGS`` in a child process.
Spawn = Callable[..., "subprocess.Popen[bytes]"]


def _reap(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGKILL every child still running, and its own children (a launched target)."""
    for proc in procs:
        if proc.poll() is not None:
            continue
        try:
            family = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            family = []
        proc.kill()
        proc.wait(timeout=30)
        for child in family:
            try:
                child.send_signal(signal.SIGCONT)  # a stopped target cannot die otherwise
                child.kill()
            except psutil.Error:
                pass


def _spawner(procs: list[subprocess.Popen[bytes]]) -> Spawn:
    def spawn(
        args: list[str], stderr_file: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with stderr_file.open("ab") as err:
            proc = subprocess.Popen(
                soakd_command(*args),
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env or CHILD_ENV,
            )
        procs.append(proc)
        return proc

    return spawn


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start ``soakd`` children for one test; any left running are killed afterwards."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield _spawner(procs)
    finally:
        _reap(procs)


@pytest.fixture(scope="module")
def module_spawn() -> Iterator[Spawn]:
    """Like ``spawn``, for the module-scoped fixtures that run several soaks side by side."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield _spawner(procs)
    finally:
        _reap(procs)
