"""baseline.json: the versioned record of one baseline run, as frozen dataclasses.

Every figure carries what it rests on: latency percentiles their 95 % bounds
and request counts, throughput the search's bracket (the highest rate that
passed, the lowest that failed) and every step it tried. ``to_json`` is the
one serialisation (sorted by the dataclass field order, two-space indent), so
``from_json(to_json(b)) == b`` and a re-render is byte-for-byte.

Reading is strict: a wrong field is a :class:`BaselineFormatError` naming its
JSON path (``workloads[1].ops[0].latency.p99_ms``) and what is wrong with it.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

SCHEMA = "soakd-baseline"
VERSION = 2
#: Versions this soakd reads (version 1 has no held steps).
READS = (1, 2)


class BaselineFormatError(ValueError):
    """A baseline.json that cannot be read; ``str()`` names the JSON path and the problem."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class WorkloadKind(enum.StrEnum):
    SIZE = "size"  # each operation on its own, on a dataset of a given size
    MIXED = "mixed"  # the operations together at fixed shares of one total rate


@dataclass(frozen=True)
class Machine:
    """The host the target ran on (the plan's "Hardware" section), read from /proc and os."""

    cpu_model: str
    cpu_cores_physical: int | None
    cpu_threads: int
    memory_bytes: int | None
    storage: str  # device and its kind (NVMe SSD, SSD, HDD, virtual disk) under the data dir
    filesystem: str
    kernel: str
    hostname: str
    loadavg_start: tuple[float, float, float]  # the box may be shared: say how busy it was


@dataclass(frozen=True)
class Step:
    """One fixed-rate trial of a throughput search."""

    rate_per_s: float
    seconds: float
    offered: int  # arrivals scheduled in the window
    ok: int
    errors: int
    dropped: int  # arrivals not sent: soakd's in-flight cap was full (the target was behind)
    achieved_per_s: float  # ok answers per second of the window
    p99_ms: float | None
    passed: bool
    why: str  # what decided it ("ok", "achieved 91.2 % of offered", "p99 812 ms > 500 ms", ...)


@dataclass(frozen=True)
class Throughput:
    """The highest fixed rate sustained: in ``[lo_per_s, hi_per_s)`` (hi: first failing rate)."""

    per_s: float  # the figure reported: the highest rate that passed (== lo_per_s)
    lo_per_s: float
    hi_per_s: float | None  # None: never failed up to the search's maximum
    steps: tuple[Step, ...]
    note: str = ""  # why there is no figure, when per_s is 0; what holding a rate showed
    # The latency runs, judged as steps: a rate held that long that failed caps the figure
    # (the short steps found a burst rate), see soakd.baseline.search.held_throughput.
    held: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Latency:
    """Percentiles at a fixed rate, from the intended send time (no coordinated omission)."""

    rate_per_s: float
    seconds: float
    requests: int  # answered OK, the percentiles' sample count
    errors: int
    dropped: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    p99_lo_ms: float  # the 95 % bounds of the P99 (order statistics), widened to take in
    p99_hi_ms: float  # each stretch's own P99 (soakd.baseline.measure)
    p99_bounded: bool  # enough requests that the upper bound is a real order statistic
    p99_stretches_ms: tuple[float, ...] = ()  # the P99 of each consecutive stretch of the run


@dataclass(frozen=True)
class OpBaseline:
    op: str
    throughput: Throughput
    latency: Latency | None  # None when no rate was sustained


@dataclass(frozen=True)
class Resources:
    """The target process over the workload's latency runs (None: not readable)."""

    pid: int | None
    rss_bytes: int | None
    rss_anon_bytes: int | None
    cpu_cores: float | None  # CPU seconds per wall second over the latency runs
    note: str = ""


@dataclass(frozen=True)
class LoadStats:
    memories_before: int | None  # what the target already held in the dataset's spaces
    stored: int  # stores this run sent to reach the size (0: resumed, nothing to load)
    failed: int
    seconds: float


@dataclass(frozen=True)
class Workload:
    name: str
    kind: WorkloadKind
    dataset: str  # the size whose dataset it ran on (a size: its own name)
    memories: int  # the dataset size asked for (after --scale)
    spaces: tuple[str, ...]
    shares: tuple[tuple[str, float], ...]  # MIXED: (op, share); SIZE: empty
    load: LoadStats
    ops: tuple[OpBaseline, ...]
    total: Throughput | None  # MIXED: the search for the total rate; SIZE: None
    resources: Resources
    memories_after: int | None


@dataclass(frozen=True)
class Settings:
    """How the figures were taken (compare warns when two baselines differ here)."""

    scale: float
    seed: int
    latency_share: float
    p99_ceiling_ms: float
    min_achieved: float
    resolution: float
    step_seconds: float
    latency_min_seconds: float
    latency_min_requests: int
    max_in_flight: int
    spread_hops: int


@dataclass(frozen=True)
class Baseline:
    schema: str
    version: int
    created_at: str  # ISO 8601 UTC
    target_url: str
    target: str  # "reference (launched)", "launched: CMD", "attached"
    machine: Machine
    settings: Settings
    workloads: tuple[Workload, ...]

    def workload(self, name: str) -> Workload | None:
        return next((w for w in self.workloads if w.name == name), None)

    def date(self) -> str:
        return self.created_at[:10]


# -- JSON --------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return round(value, 6)
    return value


def to_json(baseline: Baseline) -> str:
    """The one serialisation of a baseline (stable: a re-render is byte-for-byte)."""
    return json.dumps(_plain(baseline), indent=2, ensure_ascii=False) + "\n"


class _Reader:
    """Typed field access that names the JSON path of whatever is wrong."""

    def __init__(self, doc: Any, path: str) -> None:
        if not isinstance(doc, dict):
            raise BaselineFormatError(path or "$", f"expected an object, got {_kind(doc)}")
        self.doc: dict[str, Any] = doc
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def raw(self, key: str) -> Any:
        if key not in self.doc:
            raise BaselineFormatError(self.at(key), "missing")
        return self.doc[key]

    def str_(self, key: str) -> str:
        v = self.raw(key)
        if not isinstance(v, str):
            raise BaselineFormatError(self.at(key), f"expected a string, got {_kind(v)}")
        return v

    def num(self, key: str, *, optional: bool = False, minimum: float = 0.0) -> Any:
        v = self.raw(key)
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise BaselineFormatError(self.at(key), f"expected a number, got {_kind(v)}")
        if not v >= minimum:  # also NaN
            raise BaselineFormatError(self.at(key), f"expected a number >= {minimum}, got {v}")
        return v

    def int_(self, key: str, *, optional: bool = False) -> Any:
        v = self.num(key, optional=optional)
        if v is not None and not isinstance(v, int):
            raise BaselineFormatError(self.at(key), f"expected an integer, got {v}")
        return v

    def bool_(self, key: str) -> bool:
        v = self.raw(key)
        if not isinstance(v, bool):
            raise BaselineFormatError(self.at(key), f"expected true or false, got {_kind(v)}")
        return v

    def obj(self, key: str, *, optional: bool = False) -> _Reader | None:
        v = self.raw(key)
        if v is None and optional:
            return None
        return _Reader(v, self.at(key))

    def list_(self, key: str) -> Sequence[Any]:
        v = self.raw(key)
        if not isinstance(v, list):
            raise BaselineFormatError(self.at(key), f"expected a list, got {_kind(v)}")
        return v

    def objs(self, key: str) -> list[_Reader]:
        return [_Reader(v, f"{self.at(key)}[{i}]") for i, v in enumerate(self.list_(key))]


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean {str(v).lower()}"
    if isinstance(v, str):
        return f"string {v[:40]!r}"
    if isinstance(v, int | float):
        return f"number {v}"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "a list"
    return type(v).__name__


def _machine(r: _Reader) -> Machine:
    load = r.list_("loadavg_start")
    if len(load) != 3 or not all(isinstance(x, int | float) for x in load):
        raise BaselineFormatError(r.at("loadavg_start"), "expected three numbers")
    return Machine(
        cpu_model=r.str_("cpu_model"),
        cpu_cores_physical=r.int_("cpu_cores_physical", optional=True),
        cpu_threads=r.int_("cpu_threads"),
        memory_bytes=r.int_("memory_bytes", optional=True),
        storage=r.str_("storage"),
        filesystem=r.str_("filesystem"),
        kernel=r.str_("kernel"),
        hostname=r.str_("hostname"),
        loadavg_start=(float(load[0]), float(load[1]), float(load[2])),
    )


def _settings(r: _Reader) -> Settings:
    return Settings(
        scale=r.num("scale"),
        seed=r.int_("seed"),
        latency_share=r.num("latency_share"),
        p99_ceiling_ms=r.num("p99_ceiling_ms"),
        min_achieved=r.num("min_achieved"),
        resolution=r.num("resolution"),
        step_seconds=r.num("step_seconds"),
        latency_min_seconds=r.num("latency_min_seconds"),
        latency_min_requests=r.int_("latency_min_requests"),
        max_in_flight=r.int_("max_in_flight"),
        spread_hops=r.int_("spread_hops"),
    )


def _step(r: _Reader) -> Step:
    return Step(
        rate_per_s=r.num("rate_per_s"),
        seconds=r.num("seconds"),
        offered=r.int_("offered"),
        ok=r.int_("ok"),
        errors=r.int_("errors"),
        dropped=r.int_("dropped"),
        achieved_per_s=r.num("achieved_per_s"),
        p99_ms=r.num("p99_ms", optional=True),
        passed=r.bool_("passed"),
        why=r.str_("why"),
    )


def _throughput(r: _Reader) -> Throughput:
    return Throughput(
        per_s=r.num("per_s"),
        lo_per_s=r.num("lo_per_s"),
        hi_per_s=r.num("hi_per_s", optional=True),
        steps=tuple(_step(s) for s in r.objs("steps")),
        note=r.str_("note"),
        held=tuple(_step(s) for s in r.objs("held")) if "held" in r.doc else (),  # version 1: none
    )


def _latency(r: _Reader) -> Latency:
    lat = Latency(
        rate_per_s=r.num("rate_per_s"),
        seconds=r.num("seconds"),
        requests=r.int_("requests"),
        errors=r.int_("errors"),
        dropped=r.int_("dropped"),
        p50_ms=r.num("p50_ms"),
        p95_ms=r.num("p95_ms"),
        p99_ms=r.num("p99_ms"),
        p999_ms=r.num("p999_ms"),
        p99_lo_ms=r.num("p99_lo_ms"),
        p99_hi_ms=r.num("p99_hi_ms"),
        p99_bounded=r.bool_("p99_bounded"),
        p99_stretches_ms=_numbers(r, "p99_stretches_ms"),
    )
    if not lat.p99_lo_ms <= lat.p99_ms <= lat.p99_hi_ms:
        raise BaselineFormatError(r.at("p99_ms"), "not within [p99_lo_ms, p99_hi_ms]")
    return lat


def _numbers(r: _Reader, key: str) -> tuple[float, ...]:
    values = r.list_(key)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise BaselineFormatError(r.at(key), "expected a list of numbers")
    return tuple(float(v) for v in values)


def _op(r: _Reader) -> OpBaseline:
    lat = r.obj("latency", optional=True)
    return OpBaseline(
        op=r.str_("op"),
        throughput=_throughput(_need(r.obj("throughput"))),
        latency=None if lat is None else _latency(lat),
    )


def _need(r: _Reader | None) -> _Reader:
    assert r is not None  # obj() without optional never returns None
    return r


def _workload(r: _Reader) -> Workload:
    kind_text = r.str_("kind")
    try:
        kind = WorkloadKind(kind_text)
    except ValueError:
        choices = ", ".join(k.value for k in WorkloadKind)
        raise BaselineFormatError(r.at("kind"), f"{kind_text!r} is not one of {choices}") from None
    shares = []
    for i, pair in enumerate(r.list_("shares")):
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not isinstance(pair[0], str)
            or not isinstance(pair[1], int | float)
        ):
            raise BaselineFormatError(f"{r.at('shares')}[{i}]", "expected [operation, share]")
        shares.append((pair[0], float(pair[1])))
    spaces = r.list_("spaces")
    if not all(isinstance(s, str) for s in spaces):
        raise BaselineFormatError(r.at("spaces"), "expected a list of space names")
    load = _need(r.obj("load"))
    res = _need(r.obj("resources"))
    total = r.obj("total", optional=True)
    return Workload(
        name=r.str_("name"),
        kind=kind,
        dataset=r.str_("dataset"),
        memories=r.int_("memories"),
        spaces=tuple(spaces),
        shares=tuple(shares),
        load=LoadStats(
            memories_before=load.int_("memories_before", optional=True),
            stored=load.int_("stored"),
            failed=load.int_("failed"),
            seconds=load.num("seconds"),
        ),
        ops=tuple(_op(o) for o in r.objs("ops")),
        total=None if total is None else _throughput(total),
        resources=Resources(
            pid=res.int_("pid", optional=True),
            rss_bytes=res.int_("rss_bytes", optional=True),
            rss_anon_bytes=res.int_("rss_anon_bytes", optional=True),
            cpu_cores=res.num("cpu_cores", optional=True),
            note=res.str_("note"),
        ),
        memories_after=r.int_("memories_after", optional=True),
    )


def from_doc(doc: Any) -> Baseline:
    """A parsed JSON document as a Baseline; BaselineFormatError names what is wrong."""
    r = _Reader(doc, "")
    schema = r.str_("schema")
    if schema != SCHEMA:
        raise BaselineFormatError("schema", f"expected {SCHEMA!r}, got {schema!r}")
    version = r.int_("version")
    if version not in READS:
        known = ", ".join(str(v) for v in READS)
        raise BaselineFormatError("version", f"this soakd reads versions {known}, got {version}")
    return Baseline(
        schema=schema,
        version=version,
        created_at=r.str_("created_at"),
        target_url=r.str_("target_url"),
        target=r.str_("target"),
        machine=_machine(_need(r.obj("machine"))),
        settings=_settings(_need(r.obj("settings"))),
        workloads=tuple(_workload(w) for w in r.objs("workloads")),
    )


def from_json(text: str) -> Baseline:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise BaselineFormatError("$", f"not JSON: {exc}") from None
    return from_doc(doc)


def is_baseline_doc(doc: Mapping[str, Any]) -> bool:
    """True when a parsed JSON object says it is a soakd baseline (any version)."""
    return doc.get("schema") == SCHEMA
