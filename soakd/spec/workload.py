"""The ``workload:`` list (driven operations and consolidation) and ``monitoring:``.

Each ``workload`` entry names its ``operation``; the keys allowed depend on
which one, so a key that belongs to another operation gets a message saying
so rather than a bare "unknown key". Space counts default to the largest count
named anywhere in the workload (else 1): the plan's spread entry gives none
and means "over the same spaces as the rest".
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from soakd.spec.fields import Ctx, Section, as_rate, as_str, did_you_mean, items, join, short
from soakd.spec.model import (
    ConsolidationSpec,
    OperationSpec,
    RecallOptions,
    SpreadOptions,
    spec_keys,
)

DRIVEN_OPERATIONS: tuple[str, ...] = ("store", "recall", "spread")
OPERATIONS: tuple[str, ...] = (*DRIVEN_OPERATIONS, "consolidation")

# The keys of each entry, from the model's fields (spec_keys): declared once.
_COMMON = spec_keys(OperationSpec)
OPERATION_KEYS: dict[str, tuple[str, ...]] = {
    "store": _COMMON,
    "recall": (*_COMMON, *spec_keys(RecallOptions)),
    "spread": (*_COMMON, *spec_keys(SpreadOptions)),
    "consolidation": ("operation", *spec_keys(ConsolidationSpec)),
}
_ALL_KEYS = tuple(dict.fromkeys(k for keys in OPERATION_KEYS.values() for k in keys))

#: The series ``monitoring:`` may name.
MONITORING_NAMES: tuple[str, ...] = (
    "memory_rss",
    "memory_heap",
    "memory_uss",
    "cpu_percent",
    "disk_io",
    "fds",
    "threads",
    "data_dir_size",
    "consolidation_cadence",
    "query_latency_p99",
    "query_latency_p50",
    "error_rate",
)

MAX_RATE_PER_S = 100_000.0
MAX_SPACES = 999  # space_001..space_999 stays inside Engram's 3-64 character IDs
MAX_WORKLOAD_ENTRIES = 32
MAX_MAX_HOPS = 6  # MAX_HOPS >= 7 makes Engram answer 400 "too complex"


@dataclass(frozen=True)
class Workload:
    """What the ``workload:`` list became."""

    operations: tuple[OperationSpec, ...]
    consolidation: ConsolidationSpec | None


@dataclass(frozen=True)
class _Entry:
    path: str
    node: yaml.Node
    operation: str | None  # None: missing or unknown (already reported)
    section: Section
    spaces: int | None  # as written; None when absent (or wrong, and reported)


def read_workload(ctx: Ctx, node: yaml.Node | None) -> Workload:
    """The driven operations and the consolidation watch, every problem recorded."""
    if node is None:
        return Workload((), None)
    before = len(ctx.problems)
    listed = items(ctx, node, "workload", MAX_WORKLOAD_ENTRIES)
    entries = [_entry(ctx, path, item) for path, item in listed]
    if not entries and len(ctx.problems) > before:
        return Workload((), None)  # not a usable list: already said so
    _check_duplicates(ctx, entries)
    default_spaces = max((e.spaces for e in entries if e.spaces is not None), default=1)
    operations = tuple(
        _operation(e, default_spaces)
        for e in entries
        if e.operation in DRIVEN_OPERATIONS and e.section.ok
    )
    for unknown in (e for e in entries if e.operation is None and e.section.ok):
        _operation(unknown, default_spaces)  # still check its rate, timeout...
    consolidation = next(
        (
            _consolidation(e, default_spaces)
            for e in entries
            if e.operation == "consolidation" and e.section.ok
        ),
        None,
    )
    _check_shape(ctx, node, entries)
    return Workload(operations, consolidation)


def _entry(ctx: Ctx, path: str, node: yaml.Node) -> _Entry:
    operation = _operation_name(ctx, path, node)
    allowed = OPERATION_KEYS.get(operation or "", _ALL_KEYS)

    def elsewhere(key: str) -> str | None:
        owners = [op for op, keys in OPERATION_KEYS.items() if key in keys]
        if operation is None or not owners:
            return None
        return f"'{key}' applies to {' and '.join(owners)}, not {operation}"

    section = Section(ctx, node, path, allowed, elsewhere=elsewhere)
    spaces = section.integer("spaces", None, 1, MAX_SPACES)
    return _Entry(path, node, operation, section, spaces)


def _operation_name(ctx: Ctx, path: str, node: yaml.Node) -> str | None:
    """The entry's ``operation:`` value, read before the rest to know its keys."""
    if not isinstance(node, yaml.MappingNode):
        return None  # Section reports "expected a mapping"
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "operation":
            name = as_str(ctx, value, join(path, "operation"))
            if name is None or name in OPERATIONS:
                return name
            message = f"unknown operation {short(name)}; expected one of {', '.join(OPERATIONS)}"
            ctx.add(join(path, "operation"), value, message + did_you_mean(name, OPERATIONS))
            return None
    ctx.add(join(path, "operation"), node, "'operation' is required")
    return None


def _check_duplicates(ctx: Ctx, entries: list[_Entry]) -> None:
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.operation is None:
            continue
        if entry.operation in seen:
            where = entry.section.node("operation")
            message = f"duplicate operation '{entry.operation}' (first at {seen[entry.operation]})"
            ctx.add(join(entry.path, "operation"), where, message)
        else:
            seen[entry.operation] = entry.path


def _check_shape(ctx: Ctx, node: yaml.Node, entries: list[_Entry]) -> None:
    named = {e.operation for e in entries}
    if isinstance(node, yaml.SequenceNode) and not named & set(DRIVEN_OPERATIONS):
        ctx.add("workload", node, "needs at least one of store, recall, spread")
    if "spread" in named and "store" not in named:
        spread = next(e for e in entries if e.operation == "spread")
        ctx.add(
            join(spread.path, "operation"),
            spread.node,
            "spread starts from stored memories: the workload needs a store operation",
        )


def _operation(entry: _Entry, default_spaces: int) -> OperationSpec:
    s = entry.section
    op = entry.operation or ""
    if entry.operation and not s.has("rate") and not s.misspelt_only("rate"):
        s.ctx.add(s.at("rate"), s.node("rate") or entry.node, f"'rate' is required for {op}")
    recall = spread = None
    if op == "recall":
        recall = RecallOptions(
            max_results=s.integer("max_results", 10, 1, 10_000),
            threshold=s.number("threshold", 0.5, 0.0, 1.0),
            by=s.choice("by", "embedding", ("embedding", "text")),
        )
    elif op == "spread":
        spread = SpreadOptions(
            max_hops=_max_hops(s),
            decay=s.number("decay", 0.1, 0.0, 1.0),
            threshold=s.number("threshold", 0.01, 0.0, 1.0),
        )
    return OperationSpec(
        operation=op,
        rate_per_s=s.read("rate", 1.0, lambda n, p: _rate(s.ctx, n, p)),
        spaces=entry.spaces or default_spaces,
        max_in_flight=s.integer("max_in_flight", 512, 1, 1_000_000),
        timeout_s=s.duration("timeout", 30.0, above_zero=True, maximum=3600.0),
        recall=recall,
        spread=spread,
    )


def _rate(ctx: Ctx, node: yaml.Node, path: str) -> float | None:
    return as_rate(ctx, node, path, MAX_RATE_PER_S)


def _max_hops(s: Section) -> int:
    """1..6; the message for 7+ says why (Engram's 400), not just the range."""
    hops = s.integer("max_hops", 3, -(2**63), 2**63)
    if 1 <= hops <= MAX_MAX_HOPS:
        return hops
    why = ": Engram answers 400 'too complex' to MAX_HOPS 7 or more" if hops > 1 else ""
    s.ctx.add(s.at("max_hops"), s.node("max_hops"), f"must be 1..{MAX_MAX_HOPS}, got {hops}{why}")
    return 3


def _consolidation(entry: _Entry, default_spaces: int) -> ConsolidationSpec:
    s = entry.section
    return ConsolidationSpec(
        interval_s=s.duration("interval", 60.0, minimum=1.0, maximum=86400.0),
        spaces=entry.spaces or default_spaces,
        poll_interval_s=s.duration("poll_interval", 2.0, minimum=1.0, maximum=5.0),
        tolerance_s=s.duration("tolerance", 5.0, maximum=86400.0),
    )


def read_monitoring(ctx: Ctx, node: yaml.Node | None) -> tuple[str, ...]:
    """``monitoring:`` names, each known and listed once."""
    if node is None:
        return ()
    names: list[str] = []
    for path, item in items(ctx, node, "monitoring", 64):
        name = as_str(ctx, item, path)
        if name is None:
            continue
        if name not in MONITORING_NAMES:
            message = f"unknown monitoring series {short(name)}" + did_you_mean(
                name, MONITORING_NAMES
            )
            ctx.add(path, item, message + f" (known: {', '.join(MONITORING_NAMES)})")
        elif name in names:
            ctx.add(path, item, f"'{name}' is listed twice")
        else:
            names.append(name)
    return tuple(names)


__all__ = [
    "DRIVEN_OPERATIONS",
    "MONITORING_NAMES",
    "OPERATIONS",
    "OPERATION_KEYS",
    "Workload",
    "read_monitoring",
    "read_workload",
]
