"""Logging set-up: structured JSON lines for journald, readable lines on a terminal.

Only the CLI calls :func:`configure`; every module just uses
``structlog.get_logger()``. Logs go to stderr so stdout stays for command output.
"""

from __future__ import annotations

import logging
import sys

import structlog


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
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
