"""Tests for soakd.diskwatch: low-space transitions, hysteresis, and failures of statvfs."""

from __future__ import annotations

import os
from pathlib import Path

from soakd.clock import FakeClock
from soakd.diskwatch import DiskWatch
from soakd.model import Event

MIB = 2**20


class FakeFs:
    """A statvfs whose free space the test sets (4 KiB blocks)."""

    def __init__(self, free_bytes: int) -> None:
        self.free_bytes = free_bytes
        self.fail = False

    def __call__(self, path: Path) -> os.statvfs_result:
        if self.fail:
            raise OSError(5, "Input/output error")
        free_blocks = self.free_bytes // 4096
        # f_bsize f_frsize f_blocks f_bfree f_bavail f_files f_ffree f_favail f_flag f_namemax
        return os.statvfs_result(
            (4096, 4096, 10**7, free_blocks + 1000, free_blocks, 10**6, 10**5, 10**5, 0, 255)
        )


def make(fs: FakeFs, events: list[Event]) -> DiskWatch:
    return DiskWatch(
        Path("/state"), 512 * MIB, on_event=events.append, statvfs=fs, clock=FakeClock()
    )


def test_low_and_ok_are_reported_once_per_transition() -> None:
    """Falling below the threshold emits disk_low once; recovering emits disk_ok once."""
    events: list[Event] = []
    fs = FakeFs(2048 * MIB)
    watch = make(fs, events)
    assert watch.check() is False and events == []
    fs.free_bytes = 100 * MIB
    assert watch.check() is True
    assert watch.check() is True and watch.low
    assert [e.kind for e in events] == ["disk_low"]
    assert events[0].detail["free_bytes"] == 100 * MIB
    assert "100 MiB" in events[0].message and "512 MiB" in events[0].message
    fs.free_bytes = 2048 * MIB
    assert watch.check() is False
    assert [e.kind for e in events] == ["disk_low", "disk_ok"]
    assert events[1].t == FakeClock().wall()


def test_recovery_needs_a_margin_above_the_threshold() -> None:
    """Just above the threshold is not yet "ok": the disk must clear it by 10 %, so no flapping."""
    events: list[Event] = []
    fs = FakeFs(100 * MIB)
    watch = make(fs, events)
    assert watch.check() is True
    fs.free_bytes = 520 * MIB
    assert watch.check() is True
    fs.free_bytes = 600 * MIB
    assert watch.check() is False
    assert [e.kind for e in events] == ["disk_low", "disk_ok"]


def test_statvfs_failure_keeps_the_last_state() -> None:
    """An OSError from statvfs neither crashes the watcher nor changes its state."""
    events: list[Event] = []
    fs = FakeFs(100 * MIB)
    watch = make(fs, events)
    assert watch.check() is True
    fs.fail = True
    assert watch.check() is True
    assert [e.kind for e in events] == ["disk_low"]


def test_real_filesystem_reports_free_space(tmp_path: Path) -> None:
    """Against the real statvfs, free space is read and a zero threshold is never low."""
    events: list[Event] = []
    watch = DiskWatch(tmp_path, 0, on_event=events.append)
    assert watch.check() is False
    assert watch.free_bytes is not None and watch.free_bytes > 0
    huge = DiskWatch(tmp_path, 2**62, on_event=events.append)
    assert huge.check() is True and [e.kind for e in events] == ["disk_low"]
