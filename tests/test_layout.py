"""The code's shape that issue 19 asked for, held: a small daemon, no unexplained big module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOAKD = ROOT / "soakd"


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_the_daemon_module_stays_under_400_lines() -> None:
    assert _lines(SOAKD / "daemon.py") < 400


def test_a_module_over_600_lines_says_at_its_top_why() -> None:
    """A module of more than 600 lines explains itself in its docstring ("Why one module ...")."""
    unexplained = []
    for path in sorted(SOAKD.rglob("*.py")):
        if _lines(path) <= 600:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if "Why one module of more than 600 lines" not in doc:
            unexplained.append(str(path.relative_to(ROOT)))
    assert unexplained == []
