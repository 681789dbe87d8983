"""Exit codes and the exception hierarchy; imports nothing else of soakd.

The CLI is the only place that turns these into messages and exit codes, so
every other module raises and never prints.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ExitCode(enum.IntEnum):
    """Process exit codes; listed in the README and matched in deploy/soakd.service."""

    PASSED = 0  # the run completed and every criterion passed
    FAILED = 1  # the run completed and at least one criterion failed
    USAGE = 2  # the spec or the command line is wrong; nothing was started
    STARTUP = 3  # state dir, exporter or target could not be brought up
    STOPPED = 4  # stopped early by a signal; the report says "stopped"
    INTERNAL = 70  # a bug in soakd (EX_SOFTWARE)


class SoakdError(Exception):
    """Base of every error soakd raises on purpose."""

    exit_code: ExitCode = ExitCode.INTERNAL


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where (YAML path and line) and what."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path} (line {self.line})" if self.line is not None else self.path
        return f"{where}: {self.message}"


class SpecError(SoakdError):
    """The spec is invalid; carries every problem found, not only the first."""

    exit_code = ExitCode.USAGE

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")


class UsageError(SoakdError):
    """A command-line or state-dir mismatch the user must fix."""

    exit_code = ExitCode.USAGE


class StartupError(SoakdError):
    """Something needed for the run could not be brought up."""

    exit_code = ExitCode.STARTUP
