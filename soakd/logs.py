"""Logging set-up: structured JSON lines for journald, readable lines on a terminal.

Only the CLI calls :func:`configure`; every module just uses
``structlog.get_logger()``. Logs go to stderr so stdout stays for command output.
On a terminal stderr also carries the live progress line (:data:`terminal`): a
log line clears it, prints, and draws it again below, so the two never share a line.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TextIO

import structlog

_CLEAR_LINE = "\r\x1b[2K"  # back to column 0, erase the line


class TerminalLine:
    """The one live line at the foot of stderr; whole lines are printed above it.

    ``stream=None`` means whatever ``sys.stderr`` is at the time of each write
    (so a test's capture sees it). Log lines may come from worker threads.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._text = ""

    def show(self, text: str) -> None:
        """Replace the live line with ``text`` (no newline: the next show overwrites it).

        Cut to the terminal's width: a line that wraps cannot be taken back with a
        carriage return, and each redraw would leave its first rows behind.
        """
        with self._lock:
            width = self._columns()
            self._text = text if width is None or len(text) < width else text[: width - 1]
            self._write(_CLEAR_LINE + self._text)

    def end(self) -> None:
        """Leave the live line as it is, end it with a newline, and stop redrawing it."""
        with self._lock:
            if self._text:
                self._write("\n")
            self._text = ""

    def print_line(self, line: str) -> None:
        """Print ``line`` on a line of its own, above the live line."""
        with self._lock:
            if self._text:
                self._write(f"{_CLEAR_LINE}{line}\n{self._text}")
            else:
                self._write(line + "\n")

    def _columns(self) -> int | None:
        try:
            return os.get_terminal_size((self._stream or sys.stderr).fileno()).columns
        except (AttributeError, OSError, ValueError):  # not a terminal: nothing wraps
            return None

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(text)
        stream.flush()


#: stderr's live line: the daemon shows its progress here, log lines print above it.
terminal = TerminalLine()


class _AboveTheLiveLine:
    """A structlog logger that prints each rendered line through :data:`terminal`."""

    def msg(self, message: str) -> None:
        terminal.print_line(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _above_the_live_line(*_args: object) -> _AboveTheLiveLine:
    return _AboveTheLiveLine()


def configure(*, json_logs: bool | None = None, level: str = "info") -> None:
    """Configure structlog once per process.

    ``json_logs=None`` picks JSON when stderr is not a terminal (journald,
    CI, pipes), which is what an unattended 7-day run wants.
    """
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=_above_the_live_line,
        cache_logger_on_first_use=True,
    )
