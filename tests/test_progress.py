"""Tests for the terminal progress line: human units, a bar, and log lines printed above it."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import struct
import termios
import threading
import time

import pytest
import structlog

from soakd import logs
from soakd.logs import TerminalLine
from soakd.progress import bar, clock_span, progress_line

STORE = {"achieved_rate": 99.96, "p99_ms": 3.14, "errors": 2, "dropped": 0}


def test_a_short_run_reads_in_minutes_and_seconds_with_a_bar() -> None:
    """A 90 s demo 12 s in: ``00m12s/01m30s``, a bar 14 % full, then the operations."""
    line = progress_line(
        {"elapsed_s": 12.9, "planned_s": 90, "operations": {"store": STORE}, "firing_alerts": []}
    )
    assert line == (
        "00m12s/01m30s [====>                         ] 14.3%"
        " | store 100.0/s p99 3.1ms err 2 drop 0 | alerts firing: 0"
    )


def test_a_week_reads_in_hours_and_minutes() -> None:
    """26 h 10 min into a 168 h run: ``26h10m/168h``; the total keeps no ``00m``."""
    line = progress_line(
        {"elapsed_s": 26 * 3600 + 10 * 60 + 59, "planned_s": 168 * 3600, "firing_alerts": [1]}
    )
    assert line.startswith("26h10m/168h [=====>")
    assert line.endswith("] 15.6% | alerts firing: 1")


def test_clock_span_takes_the_totals_units() -> None:
    """Under an hour: minutes and seconds; from an hour: hours and minutes, truncated."""
    assert clock_span(0, 90) == "00m00s"
    assert clock_span(3599.9, 3599) == "59m59s"
    assert clock_span(59.9, 5400) == "00h00m"
    assert clock_span(5400, 5400, total=True) == "01h30m"
    assert clock_span(7200, 7200, total=True) == "02h"
    assert clock_span(-5, 90) == "00m00s"


def test_the_bar_fills_and_stops_at_its_width() -> None:
    """Empty, half and full bars keep one width; overtime does not overflow it."""
    assert bar(0.0, 10) == "[>         ]"
    assert bar(0.5, 10) == "[=====>    ]"
    assert bar(1.0, 10) == "[==========]"
    assert bar(1.7, 10) == bar(1.0, 10)
    assert len({len(bar(f / 7)) for f in range(8)}) == 1


def test_overtime_and_missing_keys_do_not_break_the_line() -> None:
    """Past the planned time the bar is full at 100 %; a bare mapping still renders."""
    assert progress_line({"elapsed_s": 100, "planned_s": 90}).startswith(
        "01m40s/01m30s [==============================] 100.0%"
    )
    assert progress_line({}) == "00m00s/00m00s | alerts firing: 0"


def test_a_log_line_prints_above_the_progress_line_never_after_it() -> None:
    """The live line is cleared before a log line and drawn again below it."""
    out = io.StringIO()
    line = TerminalLine(out)
    line.show("00m01s/01m30s")
    line.show("00m02s/01m30s")
    line.print_line("target started")
    line.end()
    line.print_line("report written")
    assert out.getvalue() == (
        "\r\x1b[2K00m01s/01m30s"
        "\r\x1b[2K00m02s/01m30s"
        "\r\x1b[2Ktarget started\n00m02s/01m30s"
        "\n"
        "report written\n"
    )
    # What a terminal shows: each log line on its own line, the progress line last.
    screen = [row.rpartition("\x1b[2K")[2] for row in out.getvalue().split("\n")]
    assert screen == ["target started", "00m02s/01m30s", "report written", ""]


def test_structlog_lines_go_above_the_progress_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through configure(): a structlog event clears the progress line first."""
    out = io.StringIO()
    monkeypatch.setattr(logs, "terminal", TerminalLine(out))
    try:
        logs.configure(json_logs=True)
        logs.terminal.show("00m05s/01m30s")
        structlog.get_logger("t").info("target healthy", pid=7)
        logs.terminal.end()
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    assert text.startswith("\r\x1b[2K00m05s/01m30s\r\x1b[2K{")
    first_log = text.split("\r\x1b[2K")[2]
    assert '"event": "target healthy"' in first_log and first_log.endswith("\n00m05s/01m30s\n")


def test_log_lines_from_threads_are_never_cut_by_the_progress_line() -> None:
    """Lines printed from worker threads while progress redraws stay whole."""
    out = io.StringIO()
    line = TerminalLine(out)

    def logger(n: int) -> None:
        for i in range(200):
            line.print_line(f"worker {n} line {i}")

    threads = [threading.Thread(target=logger, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for i in range(200):
        line.show(f"progress {i}")
    for t in threads:
        t.join(10)
    line.end()
    rows = [row.rpartition("\x1b[2K")[2] for row in out.getvalue().split("\n")]
    logged = [r for r in rows if r.startswith("worker")]
    assert len(logged) == 600 and all(r.split()[2] == "line" for r in logged)


def _read_pty_until(fd: int, tail: str, deadline_s: float = 10.0) -> str:
    """Read a pty until its text ends with ``tail``: one read may return only part of a write."""
    out = ""
    end = time.monotonic() + deadline_s
    while not out.replace("\r\n", "\n").endswith(tail):
        left = end - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            out += os.read(fd, 4096).decode()
    return out


def test_the_live_line_is_cut_to_the_terminals_width() -> None:
    """On an 80-column terminal the line stays within one row, so \\r can redraw it."""
    main, sub = pty.openpty()
    try:
        fcntl.ioctl(sub, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        with os.fdopen(sub, "w", closefd=False) as tty:
            line = TerminalLine(tty)
            line.show("x" * 200)
            line.print_line("a log line longer than the terminal is not cut: " + "y" * 100)
        out = _read_pty_until(main, "\n" + "x" * 79)
    finally:
        os.close(main)
        os.close(sub)
    rows = out.replace("\r\n", "\n").split("\n")
    assert (
        rows[0]
        == "\r\x1b[2K"
        + "x" * 79
        + "\r\x1b[2Ka log line longer than the terminal is not cut: "
        + "y" * 100
    )
    assert rows[1] == "x" * 79
