"""A soak's ``performance_degradation`` baseline from a file: P99 per operation.

Two forms are read:

- a ``soakd baseline`` baseline.json: the P99 of each operation from its
  **mixed** workload (a soak drives the operations together, as the mix does);
  an operation the mix lacks (left out, or no mix run) takes the P99 of the size
  workload with the most spaces (the plan's soak uses 10, as "large" does);
- ``{"baseline_p99_ms": {"store": 8.1, "recall": 15.2}}``: the figures as given.

Imports nothing of soakd.spec, so the spec loader can call it while validating.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from soakd.baseline.model import BaselineFormatError, WorkloadKind, from_doc, is_baseline_doc

OPERATIONS = ("store", "recall", "spread", "readback")


def p99_from_doc(doc: Any) -> dict[str, float]:
    """``{op: P99 ms}`` from either form; ValueError says what is wrong."""
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")
    if is_baseline_doc(doc):
        try:
            b = from_doc(doc)
        except BaselineFormatError as exc:
            raise ValueError(f"not a readable soakd baseline: {exc}") from None
        out: dict[str, float] = {}
        mixed = [w for w in b.workloads if w.kind is WorkloadKind.MIXED]
        sizes = sorted(
            (w for w in b.workloads if w.kind is WorkloadKind.SIZE),
            key=lambda w: len(w.spaces),
            reverse=True,
        )
        for w in (*mixed, *sizes):
            for o in w.ops:
                if o.latency is not None and o.op not in out:
                    out[o.op] = o.latency.p99_ms
        if not out:
            raise ValueError("the baseline has no P99 for any operation")
        return out
    figures = doc.get("baseline_p99_ms")
    if not isinstance(figures, dict) or not figures:
        raise ValueError("expected a soakd baseline.json or {'baseline_p99_ms': {op: ms}}")
    out = {}
    for op, ms in figures.items():
        if op not in OPERATIONS:
            raise ValueError(f"baseline_p99_ms.{op}: not one of {', '.join(OPERATIONS)}")
        if isinstance(ms, bool) or not isinstance(ms, int | float) or not ms > 0:
            raise ValueError(f"baseline_p99_ms.{op}: expected a positive number, got {ms!r}")
        out[op] = float(ms)
    return out


def read_p99_file(path: str | Path) -> dict[str, float]:
    """P99 per operation from a baseline file; ValueError names what is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    try:
        return p99_from_doc(doc)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
