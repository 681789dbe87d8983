"""What a baseline run measures: the plan's workloads (the default) or a spec's.

The plan (Prerequisite 4, Task 4.2): small = 10K memories in 1 space, medium =
100K in 5, large = 1M in 10, and a store/recall/spread mix at 70/20/10.
``--scale`` multiplies the dataset sizes (0.01: 100 / 1K / 10K memories).

A spec is a YAML file with a ``baseline:`` mapping; every key is optional and
overrides the default of the same name::

    baseline:
      sizes: [{name: small, memories: 10000, spaces: 1}, ...]
      mixed: {on: large, shares: {store: 0.7, recall: 0.2, spread: 0.1}}
      operations: [store, recall, spread]
      latency_share: 0.5        # latency is measured at this share of the throughput found
      p99_ceiling_ms: 100       # a step whose p99 is above this fails
      step_seconds: 3           # length of each throughput-search step
      resolution: 0.1           # the search stops when fail/pass < 1 + resolution
      start_rate: 50
      max_rate: 20000
      latency_min_seconds: 10
      latency_min_requests: 2000
      load_concurrency: 32
      max_in_flight: 2000
      seed: 1
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from soakd.model import DRIVEN_OPS

#: The plan's mix (Task 4.2, item 4).
PLAN_SHARES: tuple[tuple[str, float], ...] = (("store", 0.7), ("recall", 0.2), ("spread", 0.1))
OPERATIONS: tuple[str, ...] = tuple(op.value for op in DRIVEN_OPS)


class PlanError(ValueError):
    """A baseline spec that cannot be used; ``str()`` names the key and the problem."""


@dataclass(frozen=True)
class SizePlan:
    name: str
    memories: int
    spaces: int


@dataclass(frozen=True)
class MixPlan:
    on: str  # the size whose dataset the mix runs on
    shares: tuple[tuple[str, float], ...] = PLAN_SHARES


@dataclass(frozen=True)
class BaselinePlan:
    sizes: tuple[SizePlan, ...] = (
        SizePlan("small", 10_000, 1),
        SizePlan("medium", 100_000, 5),
        SizePlan("large", 1_000_000, 10),
    )
    mixed: MixPlan | None = field(default_factory=lambda: MixPlan("large"))
    operations: tuple[str, ...] = OPERATIONS
    latency_share: float = 0.5
    p99_ceiling_ms: float = 100.0  # Engram's own soak plan aborts above this (engram-api.md §6)
    min_achieved: float = 0.99
    step_seconds: float = 3.0
    resolution: float = 0.1
    start_rate: float = 50.0
    max_rate: float = 20_000.0
    latency_min_seconds: float = 10.0
    latency_min_requests: int = 2000
    load_concurrency: int = 32
    max_in_flight: int = 2000
    seed: int = 1
    scale: float = 1.0
    #: Engram takes ~11 s to create a new space (engram-api.md §7); queued creations longer.
    setup_timeout_s: float = 120.0

    def scaled(self, scale: float) -> BaselinePlan:
        if not 0 < scale <= 1000:
            raise PlanError(f"--scale must be in (0, 1000], got {scale}")
        sizes = tuple(
            dataclasses.replace(s, memories=max(s.spaces, round(s.memories * scale)))
            for s in self.sizes
        )
        return dataclasses.replace(self, sizes=sizes, scale=scale)

    def size(self, name: str) -> SizePlan:
        return next(s for s in self.sizes if s.name == name)


def _number(
    doc: dict[str, Any], key: str, default: float, lo: float, hi: float, *, where: str = "baseline"
) -> float:
    if key not in doc:
        return default
    v = doc[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise PlanError(f"{where}.{key}: expected a number in [{lo}, {hi}], got {v!r}")
    return float(v)


def _int(
    doc: dict[str, Any], key: str, default: int, lo: int, hi: int, *, where: str = "baseline"
) -> int:
    v = _number(doc, key, default, lo, hi, where=where)
    if v != int(v):
        raise PlanError(f"{where}.{key}: expected a whole number, got {doc[key]!r}")
    return int(v)


def _sizes(raw: Any) -> tuple[SizePlan, ...]:
    if not isinstance(raw, list) or not raw:
        raise PlanError("baseline.sizes: expected a non-empty list of {name, memories, spaces}")
    out: list[SizePlan] = []
    for i, item in enumerate(raw):
        where = f"baseline.sizes[{i}]"
        if not isinstance(item, dict):
            raise PlanError(f"{where}: expected a mapping with name, memories, spaces")
        unknown = set(item) - {"name", "memories", "spaces"}
        if unknown:
            raise PlanError(f"{where}: unknown key(s) {sorted(unknown)}")
        name = item.get("name")
        if not isinstance(name, str) or not name.isidentifier() or len(name) > 20:
            raise PlanError(f"{where}.name: expected a short identifier, got {name!r}")
        memories = _int(item, "memories", -1, 1, 100_000_000, where=where)
        spaces = _int(item, "spaces", -1, 1, 100, where=where)
        if memories < 0 or spaces < 0:
            raise PlanError(f"{where}: 'memories' and 'spaces' are required")
        if any(s.name == name for s in out):
            raise PlanError(f"{where}.name: {name!r} given twice")
        out.append(SizePlan(name, memories, spaces))
    return tuple(out)


def _shares(raw: Any, where: str) -> tuple[tuple[str, float], ...]:
    if not isinstance(raw, dict) or not raw:
        raise PlanError(f"{where}: expected a mapping of operation to share")
    out: list[tuple[str, float]] = []
    for op, share in raw.items():
        if op not in OPERATIONS:
            raise PlanError(f"{where}.{op}: not one of {', '.join(OPERATIONS)}")
        if isinstance(share, bool) or not isinstance(share, int | float) or share <= 0:
            raise PlanError(f"{where}.{op}: expected a positive number, got {share!r}")
        out.append((op, float(share)))
    total = sum(s for _, s in out)
    return tuple((op, s / total) for op, s in out)


def plan_from_doc(doc: Any, base: BaselinePlan | None = None) -> BaselinePlan:
    """The plan a spec's ``baseline:`` mapping describes, over the defaults."""
    plan = base or BaselinePlan()
    if not isinstance(doc, dict) or not isinstance(doc.get("baseline"), dict):
        raise PlanError("baseline: expected a top-level 'baseline:' mapping")
    b: dict[str, Any] = doc["baseline"]
    known = {f.name for f in dataclasses.fields(BaselinePlan)} - {"scale"}
    unknown = set(b) - known
    if unknown:
        raise PlanError(f"baseline: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    sizes = _sizes(b["sizes"]) if "sizes" in b else plan.sizes
    mixed = plan.mixed
    if "mixed" in b:
        m = b["mixed"]
        if m is None:
            mixed = None
        elif not isinstance(m, dict):
            raise PlanError("baseline.mixed: expected {on: SIZE, shares: {op: share}} or null")
        else:
            # YAML 1.1 (PyYAML) reads a bare `on` key as the boolean true.
            m = {"on" if k is True else k: v for k, v in m.items()}
            extra = sorted(str(k) for k in set(m) - {"on", "shares"})
            if extra:
                raise PlanError(f"baseline.mixed: unknown key(s) {extra}; known: ['on', 'shares']")
            on = m.get("on", sizes[-1].name)
            shares = _shares(m["shares"], "baseline.mixed.shares") if "shares" in m else PLAN_SHARES
            mixed = MixPlan(str(on), shares)
    if mixed is not None and all(s.name != mixed.on for s in sizes):
        mixed = dataclasses.replace(mixed, on=sizes[-1].name) if "mixed" not in b else mixed
        if all(s.name != mixed.on for s in sizes):
            raise PlanError(f"baseline.mixed.on: no size named {mixed.on!r}")
    ops = plan.operations
    if "operations" in b:
        raw = b["operations"]
        if not isinstance(raw, list) or not raw or any(o not in OPERATIONS for o in raw):
            raise PlanError(f"baseline.operations: expected a list drawn from {OPERATIONS}")
        ops = tuple(o for o in OPERATIONS if o in raw)
    return dataclasses.replace(
        plan,
        sizes=sizes,
        mixed=mixed,
        operations=ops,
        latency_share=_number(b, "latency_share", plan.latency_share, 0.01, 1.0),
        p99_ceiling_ms=_number(b, "p99_ceiling_ms", plan.p99_ceiling_ms, 0.1, 600_000),
        min_achieved=_number(b, "min_achieved", plan.min_achieved, 0.5, 1.0),
        step_seconds=_number(b, "step_seconds", plan.step_seconds, 0.2, 600),
        resolution=_number(b, "resolution", plan.resolution, 0.01, 1.0),
        start_rate=_number(b, "start_rate", plan.start_rate, 0.1, 1e6),
        max_rate=_number(b, "max_rate", plan.max_rate, 1.0, 1e6),
        latency_min_seconds=_number(b, "latency_min_seconds", plan.latency_min_seconds, 0.2, 3600),
        latency_min_requests=_int(b, "latency_min_requests", plan.latency_min_requests, 1, 10**7),
        load_concurrency=_int(b, "load_concurrency", plan.load_concurrency, 1, 1024),
        max_in_flight=_int(b, "max_in_flight", plan.max_in_flight, 1, 100_000),
        seed=_int(b, "seed", plan.seed, 0, 2**31),
        setup_timeout_s=_number(b, "setup_timeout_s", plan.setup_timeout_s, 1, 3600),
    )


def load_plan(path: Path) -> BaselinePlan:
    """The plan of a spec file; PlanError names the file, key and problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PlanError(f"{path}: not YAML: {exc}") from None
    try:
        return plan_from_doc(doc)
    except PlanError as exc:
        raise PlanError(f"{path}: {exc}") from None
