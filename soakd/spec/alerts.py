"""The ``alerts:`` list: plan phrases, or the structured form, into AlertRuleSpecs.

Four shapes are accepted for one entry:

* ``- memory_leak: "RSS increases >10% per day"`` (the plan's: name -> phrase);
* the same followed by option keys in the same item (``for: 10m``...);
* ``- memory_leak: {phrase: ..., for: 10m, severity: ticket}`` (name -> options);
* ``- {name: p99_store, kind: threshold, metric: "p99_ms:store", threshold: 50}``.

The phrase (or ``kind``) decides what the rule measures; the name is only a
name. Thresholds are stored in the unit the kind implies (AlertRuleSpec's
docstring), whichever way they were written.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable

import yaml

from soakd.baseline.soakfile import read_p99_file
from soakd.model import Sample
from soakd.spec.fields import (
    Ctx,
    Section,
    as_duration,
    as_float,
    as_size,
    as_str,
    as_text,
    describe,
    did_you_mean,
    is_null,
    items,
    join,
    key_text,
    short,
)
from soakd.spec.model import AlertKind, AlertRuleSpec, MemorySeries
from soakd.spec.phrases import parse_alert_phrase
from soakd.spec.workload import DRIVEN_OPERATIONS

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_SEVERITY = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_OPTION_KEYS = (
    "phrase",
    "kind",
    "metric",
    "condition",
    "threshold",
    "abs_mb_per_h",
    "memory",
    "memory_cost",
    "window",
    "for",
    "severity",
    "labels",
    "annotations",
    "operations",
    "baseline_file",
)
STRUCTURED_KEYS: tuple[str, ...] = ("name", *_OPTION_KEYS)
ANNOTATION_KEYS: tuple[str, ...] = ("summary", "description", "runbook_url")
CONDITIONS: tuple[str, ...] = (">", ">=", "<", "<=")
PERCENTILES: tuple[str, ...] = ("p50", "p90", "p95", "p99", "p999")
ALERT_OPERATIONS: tuple[str, ...] = (*DRIVEN_OPERATIONS, "readback")
MAX_ALERTS = 64
_NO_METRIC = frozenset({"t", "pid"})


def threshold_metrics() -> tuple[str, ...]:
    """Metric names the ``threshold`` kind accepts (beyond ``pNN_ms:<op>``)."""
    names = (f.name for f in dataclasses.fields(Sample) if f.name not in _NO_METRIC)
    return (*names, "cpu_percent", "self_cpu_percent")


def read_alerts(
    ctx: Ctx, node: yaml.Node | None, workload_ops: Iterable[str], min_window_s: float = 0.0
) -> tuple[AlertRuleSpec, ...]:
    """Every rule of ``alerts:``; names must be unique.

    ``min_window_s`` (two stats intervals): a shorter ``window`` holds one
    interval record or none at times, which would read as "no data".
    """
    if node is None:
        return ()
    driven = frozenset(workload_ops)
    rules: list[AlertRuleSpec] = []
    seen: dict[str, str] = {}
    for path, item in items(ctx, node, "alerts", MAX_ALERTS):
        found = _read_alert(ctx, path, item, driven, min_window_s)
        if found is None:
            continue
        rule, rule_path, name_node = found
        if rule.name in seen:
            ctx.add(rule_path, name_node, f"duplicate alert name (first at {seen[rule.name]})")
            continue
        seen[rule.name] = rule_path
        rules.append(rule)
    return tuple(rules)


def _read_alert(
    ctx: Ctx, path: str, node: yaml.Node, driven: frozenset[str], min_window_s: float
) -> tuple[AlertRuleSpec, str, yaml.Node] | None:
    """One entry, in whichever of the three shapes it is written."""
    if isinstance(node, yaml.MappingNode) and len(node.value) == 1:
        key_node, value = node.value[0]
        name = key_text(ctx, key_node, path)
        if name is None:
            return None
        if name not in STRUCTURED_KEYS:
            rule_path = join(path, name)
            if not _NAME.match(name):
                ctx.add(
                    rule_path, key_node, "an alert name is an identifier ([A-Za-z_][A-Za-z0-9_]*)"
                )
                return None
            rule = _named(ctx, rule_path, name, value, driven, min_window_s=min_window_s)
            return (rule, rule_path, key_node) if rule else None
    if not isinstance(node, yaml.MappingNode):
        ctx.add(path, node, f'expected `name: "phrase"` or a mapping, got {describe(node)}')
        return None
    keys = [str(k.value) for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
    extra = [k for k in keys if k not in STRUCTURED_KEYS]
    if "name" not in keys and len(extra) == 1 and _NAME.match(extra[0]):
        # `- leak: "phrase"` followed by option keys (for:, severity:...) in the same item.
        name = extra[0]
        section = Section(ctx, node, path, (*_OPTION_KEYS, name))
        rule = _options(ctx, section, name, driven, min_window_s=min_window_s, phrase_key=name)
        return (rule, section.at(name), section.entries[name][0]) if rule else None
    section = Section(ctx, node, path, STRUCTURED_KEYS, required=("name",))
    name_node = section.node("name")
    name = section.string("name", None)
    if name is not None and not _NAME.match(name):
        ctx.add(section.at("name"), name_node, "an alert name is an identifier")
        name = None
    if name is None or name_node is None:
        return None
    rule = _options(ctx, section, name, driven, min_window_s=min_window_s)
    return (rule, section.at("name"), name_node) if rule else None


def _named(
    ctx: Ctx,
    path: str,
    name: str,
    value: yaml.Node,
    driven: frozenset[str],
    *,
    min_window_s: float,
) -> AlertRuleSpec | None:
    """``name: "phrase"`` or ``name: {options}``."""
    if isinstance(value, yaml.MappingNode):
        section = Section(ctx, value, path, _OPTION_KEYS)
        return _options(ctx, section, name, driven, min_window_s=min_window_s)
    phrase = as_str(ctx, value, path) if not is_null(value) else None
    if phrase is None:
        if is_null(value):
            ctx.add(path, value, "expected an alert phrase, got nothing")
        return None
    try:
        return parse_alert_phrase(name, phrase)
    except ValueError as exc:
        ctx.add(path, value, str(exc))
        return None


def _options(
    ctx: Ctx,
    s: Section,
    name: str,
    driven: frozenset[str],
    *,
    min_window_s: float = 0.0,
    phrase_key: str = "phrase",
) -> AlertRuleSpec | None:
    """The structured form: a phrase or a kind, then the common options."""
    if not s.ok:
        return None
    base = _base_rule(ctx, s, name, phrase_key)
    if base is None:
        return None
    for_s = s.duration("for", base.for_s, maximum=30 * 86400.0)
    window_s = s.duration("window", base.window_s, above_zero=True)
    if s.has("window") and window_s is not None and window_s < min_window_s:
        ctx.add(
            s.at("window"),
            s.node("window"),
            f"window {window_s:g} s is shorter than two stats intervals ({min_window_s:g} s):"
            " some evaluations would see no interval record and judge nothing;"
            " lengthen the window or shorten sampling.stats_interval",
        )
    severity = s.read("severity", base.severity, lambda n, p: _severity(ctx, n, p))
    labels = s.read("labels", base.labels, lambda n, p: _pairs(ctx, n, p, _label_key))
    annotations = s.read(
        "annotations", base.annotations, lambda n, p: _pairs(ctx, n, p, _annotation_key)
    )
    operations = s.read("operations", base.operations, lambda n, p: _operations(ctx, n, p, driven))
    for key in ("memory", "memory_cost"):
        if s.has(key) and base.kind is not AlertKind.MEMORY_LEAK:
            ctx.add(s.at(key), s.node(key), f"'{key}' applies to memory_leak rules only")
    memory = MemorySeries(
        s.choice("memory", base.memory.value, [m.value for m in MemorySeries]) or base.memory.value
    )
    cost = s.read("memory_cost", None, lambda n, p: _bytes(ctx, n, p))
    baseline_file = _baseline_file(ctx, s, base.kind)
    return dataclasses.replace(
        base,
        baseline_file=baseline_file,
        for_s=for_s,
        window_s=window_s,
        severity=severity,
        labels=labels,
        annotations=annotations,
        operations=operations,
        memory=memory,
        memory_cost_bytes=cost if cost else base.memory_cost_bytes,
    )


def _baseline_file(ctx: Ctx, s: Section, kind: AlertKind) -> str | None:
    """``baseline_file:`` of a performance_degradation rule, read now so a bad one is named."""
    path = s.string("baseline_file", None)
    if path is None:
        return None
    if kind is not AlertKind.PERFORMANCE_DEGRADATION:
        ctx.add(
            s.at("baseline_file"),
            s.node("baseline_file"),
            "applies to performance_degradation only",
        )
        return None
    try:
        read_p99_file(path)
    except ValueError as exc:
        ctx.add(s.at("baseline_file"), s.node("baseline_file"), str(exc))
        return None
    return path


def _base_rule(ctx: Ctx, s: Section, name: str, phrase_key: str) -> AlertRuleSpec | None:
    """What the rule measures: from its phrase, or from ``kind`` and its threshold."""
    if phrase_key != "phrase" and s.has("phrase"):
        ctx.add(s.at("phrase"), s.node("phrase"), f"the phrase is already given as '{name}:'")
    if s.has(phrase_key) or phrase_key != "phrase":
        for key in ("kind", "metric", "condition", "threshold", "abs_mb_per_h"):
            if s.has(key):
                ctx.add(s.at(key), s.node(key), f"'{key}' cannot be used with a phrase")
        phrase = s.string(phrase_key, None)
        if phrase is None:
            if not s.has(phrase_key):
                ctx.add(s.at(phrase_key), s.node(phrase_key) or s.mapping, "expected a phrase")
            return None
        try:
            return parse_alert_phrase(name, phrase)
        except ValueError as exc:
            ctx.add(s.at(phrase_key), s.node(phrase_key), str(exc))
            return None
    kind_text = s.choice("kind", None, [k.value for k in AlertKind])
    if kind_text is None:
        if not s.has("kind"):
            ctx.add(s.at("kind"), s.mapping, "give 'phrase' or 'kind'")
        return None
    return _kind_rule(ctx, s, name, AlertKind(kind_text))


def _kind_rule(ctx: Ctx, s: Section, name: str, kind: AlertKind) -> AlertRuleSpec | None:
    for key, kinds in (
        ("metric", (AlertKind.THRESHOLD, AlertKind.PERFORMANCE_DEGRADATION)),
        ("condition", (AlertKind.THRESHOLD,)),
        ("abs_mb_per_h", (AlertKind.MEMORY_LEAK,)),
    ):
        if s.has(key) and kind not in kinds:
            allowed = " and ".join(k.value for k in kinds)
            ctx.add(s.at(key), s.node(key), f"'{key}' applies to kind {allowed} only")
    reader = _THRESHOLDS[kind]
    threshold = s.read("threshold", None, lambda n, p: reader(ctx, n, p))
    rule = AlertRuleSpec(name, kind, threshold if threshold is not None else 0.0)
    if kind is AlertKind.MEMORY_LEAK:
        abs_mb = s.number("abs_mb_per_h", None, 0.0, 1e9, lo_open=True)
        if threshold is None and abs_mb is None:
            if not s.has("threshold") and not s.has("abs_mb_per_h"):
                message = "memory_leak needs 'threshold' (percent/day) or 'abs_mb_per_h'"
                _missing(ctx, s, "threshold", message)
            return None
        return dataclasses.replace(rule, abs_mb_per_h=abs_mb)
    if threshold is None and kind not in (AlertKind.CRASH, AlertKind.INTEGRITY):
        if not s.has("threshold"):
            _missing(ctx, s, "threshold", f"'threshold' is required for kind {kind.value}")
        return None
    if kind is AlertKind.DISK_SPACE:
        return dataclasses.replace(rule, condition="<")
    if kind is AlertKind.PERFORMANCE_DEGRADATION:
        percentile = s.read("metric", "p99_ms", lambda n, p: _percentile(ctx, n, p))
        return dataclasses.replace(rule, metric=percentile)
    if kind is AlertKind.THRESHOLD:
        metric = s.read("metric", None, lambda n, p: _metric(ctx, n, p))
        if metric is None:
            if not s.has("metric"):
                _missing(ctx, s, "metric", "kind threshold needs 'metric'")
            return None
        condition = s.choice("condition", ">", CONDITIONS)
        return dataclasses.replace(rule, metric=metric, condition=condition)
    return rule


def _missing(ctx: Ctx, s: Section, key: str, message: str) -> None:
    """A required key is absent: point at the kind that needs it."""
    ctx.add(s.at(key), s.node("kind") or s.mapping, message)


def _fraction(ctx: Ctx, node: yaml.Node, path: str) -> float | None:
    """A share: ``0.01`` or ``"1%"``."""
    if isinstance(node, yaml.ScalarNode) and str(node.value).strip().endswith("%"):
        text = str(node.value).strip()[:-1]
        percent = yaml.ScalarNode("tag:yaml.org,2002:str", text, start_mark=node.start_mark)
        value = as_float(ctx, percent, path, 0.0, 100.0)
        return None if value is None else value / 100.0
    return as_float(ctx, node, path, 0.0, 1.0)


def _percent(ctx: Ctx, node: yaml.Node, path: str) -> float | None:
    text = str(node.value).strip() if isinstance(node, yaml.ScalarNode) else ""
    if text.endswith("%"):
        node = yaml.ScalarNode("tag:yaml.org,2002:str", text[:-1], start_mark=node.start_mark)
    return as_float(ctx, node, path, 0.0, 1e6, lo_open=True)


def _count(ctx: Ctx, node: yaml.Node, path: str) -> float | None:
    return as_float(ctx, node, path, 0.0, 1e12)


def _any(ctx: Ctx, node: yaml.Node, path: str) -> float | None:
    return as_float(ctx, node, path, -1e18, 1e18)


def _drift(ctx: Ctx, node: yaml.Node, path: str) -> float | None:
    return as_duration(ctx, node, path, above_zero=True)


def _horizon(ctx: Ctx, node: yaml.Node, path: str) -> float | None:
    return as_duration(ctx, node, path, above_zero=True)


def _bytes(ctx: Ctx, node: yaml.Node, path: str) -> float | None:
    value = as_size(ctx, node, path)
    return None if value is None else float(value)


_THRESHOLDS: dict[AlertKind, Callable[[Ctx, yaml.Node, str], float | None]] = {
    AlertKind.MEMORY_LEAK: _percent,
    AlertKind.PERFORMANCE_DEGRADATION: _percent,
    AlertKind.CONSOLIDATION_FAILURE: _drift,
    AlertKind.CRASH: _count,
    AlertKind.INTEGRITY: _count,
    AlertKind.ERROR_RATE: _fraction,
    AlertKind.SOAKD_SATURATED: _fraction,
    AlertKind.DISK_SPACE: _bytes,
    AlertKind.THRESHOLD: _any,
    AlertKind.MEMORY_EXHAUSTION: _horizon,
    AlertKind.TARGET_OVERLOADED: _fraction,
}


def _percentile(ctx: Ctx, node: yaml.Node, path: str) -> str | None:
    value = as_str(ctx, node, path)
    options = [f"{p}_ms" for p in PERCENTILES]
    if value is None or value in options:
        return value
    ctx.add(path, node, f"must be one of {', '.join(options)}" + did_you_mean(value, options))
    return None


def _metric(ctx: Ctx, node: yaml.Node, path: str) -> str | None:
    """A Sample field, ``pNN_ms:<op>`` (a latency percentile) or ``error_rate:<op>``."""
    value = as_str(ctx, node, path)
    if value is None:
        return None
    known = threshold_metrics()
    head, _, op = value.partition(":")
    per_op = (*(f"{p}_ms" for p in PERCENTILES), "error_rate")
    if value in known or (head in per_op and op in ALERT_OPERATIONS):
        return value
    examples = ", ".join(known)
    ctx.add(
        path,
        node,
        f"unknown metric {short(value)}{did_you_mean(value, known)} "
        f"(known: {examples}, pNN_ms:<op> with NN in 50/90/95/99/999, error_rate:<op>)",
    )
    return None


def _severity(ctx: Ctx, node: yaml.Node, path: str) -> str | None:
    value = as_str(ctx, node, path)
    if value is not None and not _SEVERITY.match(value):
        ctx.add(path, node, "a severity is a short lower-case word (page, ticket, warning...)")
        return None
    return value


def _label_key(ctx: Ctx, key: str, node: yaml.Node, path: str) -> bool:
    if _LABEL.match(key) and not key.startswith("__"):
        return True
    ctx.add(path, node, "a label name is [A-Za-z_][A-Za-z0-9_]* and may not start with __")
    return False


def _annotation_key(ctx: Ctx, key: str, node: yaml.Node, path: str) -> bool:
    if key in ANNOTATION_KEYS:
        return True
    ctx.add(path, node, "unknown annotation" + did_you_mean(key, ANNOTATION_KEYS))
    return False


def _pairs(
    ctx: Ctx,
    node: yaml.Node,
    path: str,
    key_ok: Callable[[Ctx, str, yaml.Node, str], bool],
) -> tuple[tuple[str, str], ...] | None:
    """A mapping of string to string, as sorted pairs (no dict leaves the spec)."""
    if not isinstance(node, yaml.MappingNode):
        ctx.add(path, node, f"expected a mapping, got {describe(node)}")
        return None
    pairs: dict[str, str] = {}
    for key_node, value_node in node.value[:64]:
        key = key_text(ctx, key_node, path)
        if key is None or not key_ok(ctx, key, key_node, join(path, key)):
            continue
        if key in pairs:
            ctx.add(join(path, key), key_node, "duplicate key")
            continue
        value = as_text(ctx, value_node, join(path, key))
        if value is not None:
            pairs[key] = value
    return tuple(sorted(pairs.items()))


def _operations(
    ctx: Ctx, node: yaml.Node, path: str, driven: frozenset[str]
) -> tuple[str, ...] | None:
    names: list[str] = []
    for item_path, item in items(ctx, node, path, 8):
        name = as_str(ctx, item, item_path)
        if name is None:
            continue
        if name not in ALERT_OPERATIONS:
            message = f"unknown operation {short(name)}" + did_you_mean(name, ALERT_OPERATIONS)
            ctx.add(item_path, item, message)
        elif name != "readback" and name not in driven:
            ctx.add(item_path, item, f"operation '{name}' is not in the workload")
        elif name not in names:
            names.append(name)
    return tuple(names)


#: What an SRE expects to be paged for even when the spec names no rule for it
#: (the plan's spec names only three): the kind, its threshold, and why.
IMPLICIT_KINDS: tuple[tuple[AlertKind, float, str], ...] = (
    (AlertKind.CRASH, 0.0, "the target crashed or was restarted"),
    (AlertKind.INTEGRITY, 0.0, "a write was lost or read back corrupted"),
    (
        AlertKind.SOAKD_SATURATED,
        0.05,
        "over 5 % of arrivals sent late (soakd's loop behind): soakd's own figures are in doubt",
    ),
    (
        AlertKind.TARGET_OVERLOADED,
        0.01,
        "over 1 % of an operation's arrivals dropped: the target had max_in_flight "
        "requests outstanding and is not keeping up",
    ),
    (
        AlertKind.MEMORY_EXHAUSTION,
        86400.0,
        "at the current anonymous-memory growth the target's available memory runs out within 24 h",
    ),
)


def with_implicit_rules(
    rules: tuple[AlertRuleSpec, ...], min_free_disk_bytes: int
) -> tuple[AlertRuleSpec, ...]:
    """``rules`` plus a default rule for every implicit kind the spec does not cover.

    Each added rule is named after its kind and carries the annotation
    ``implicit: "true"``, so reports and pages say it was not in the spec.
    """
    present = {r.kind for r in rules}
    names = {r.name for r in rules}
    extra: list[AlertRuleSpec] = []
    defaults = [
        *IMPLICIT_KINDS,
        (AlertKind.DISK_SPACE, float(min_free_disk_bytes), "the state dir's disk is nearly full"),
    ]
    for kind, threshold, summary in defaults:
        if kind in present or kind.value in names:
            continue
        extra.append(
            AlertRuleSpec(
                name=kind.value,
                kind=kind,
                threshold=threshold,
                condition="<" if kind is AlertKind.DISK_SPACE else ">",
                annotations=(("summary", summary), ("implicit", "true")),
            )
        )
    return rules + tuple(extra)
