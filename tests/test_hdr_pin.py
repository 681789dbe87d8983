"""hdrhistogram's internals: touched in soakd/hdr.py only, at the version pinned (issue 19)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

from soakd.hdr import HDRH_VERSION

ROOT = Path(__file__).resolve().parent.parent


def test_only_soakd_hdr_imports_hdrh() -> None:
    """No other soakd module imports hdrh or its C helpers (pyhdrh)."""
    offenders = []
    for path in sorted((ROOT / "soakd").rglob("*.py")):
        if path == ROOT / "soakd" / "hdr.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] in {"hdrh", "pyhdrh"} for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_the_pin_is_the_version_soakd_hdr_names_and_the_one_installed() -> None:
    """pyproject pins hdrhistogram exactly; soakd/hdr.py and the installed copy agree."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "dependencies"
    ]
    pins = [d for d in deps if re.match(r"hdrhistogram\b", d)]
    assert pins == [f"hdrhistogram=={HDRH_VERSION}"]
    assert importlib.metadata.version("hdrhistogram") == HDRH_VERSION
    assert HDRH_VERSION in (ROOT / "soakd" / "hdr.py").read_text(encoding="utf-8").split('"""')[1]
