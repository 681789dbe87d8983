"""The plan's alert phrases ("RSS increases >10% per day") turned into typed rules.

The execution plan writes its alerts as English, so soakd reads English: a
small set of phrase shapes, tolerant of case, spacing and common wording
variants, each mapped to an :class:`AlertKind` and a threshold in the unit that
kind implies (see :class:`soakd.spec.model.AlertRuleSpec`). Anything else is
refused with the list of recognised forms rather than guessed at: an alert
that silently means something other than what its author wrote is worse than
none.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from soakd.spec.model import AlertKind, AlertRuleSpec
from soakd.spec.units import parse_duration, parse_size

#: Human-readable forms, for error messages and docs/spec.md.
RECOGNISED_PHRASES: tuple[str, ...] = (
    '"RSS increases >N% per day" (also "RSS grows more than N%/day", per hour, per week)',
    '">N MB/h" or "RSS grows >N MB/h" (absolute memory growth; KB, MB, GB, MiB...; per h or day)',
    '"P99 latency increases >N%" (optionally "over baseline"; P50, P90, P95, P99, P999)',
    '"Cadence drift >5s" (any duration: 500ms, 5s, 1m; also "consolidation delay >5s")',
    '"error rate >N%" (optionally for one operation: "store error rate >N%")',
    '"any crash" (also "crash", "engram crashes", "any restart")',
    '"any lost or corrupted write" (also "data loss", "integrity failure")',
    '"dropped or late arrivals >N%" or "soakd saturated" (soakd itself is the bottleneck)',
    '"free disk <SIZE" (e.g. "free disk < 1GB")',
)

_N = r"(\d+(?:\.\d+)?)"
_GT = r"(?:by\s+)?(?:>=?|≥|more\s+than|greater\s+than|over|above|exceed(?:s|ing)?|beyond)"
_LT = r"(?:<=?|≤|below|under|less\s+than)"
_PER = r"\s*(?:/|per\b|an?\b|every\b)\s*"
_MEM_SUBJECT = r"(?:(?:memory\s+)?(?:rss|memory|heap|uss|resident\s+memory)(?:\s+usage)?\s+)?"
_GROWS = r"(?:(?:increases?|grows?|growth|rises?|climbs?|goes\s+up|leaks?)\s+)?"
_OP = r"(store|recall|spread)"

_PERCENT_PER_DAY = {"day": 1.0, "d": 1.0, "24h": 1.0, "hour": 24.0, "h": 24.0, "hr": 24.0}
_PERCENT_PER_DAY |= {"week": 1.0 / 7.0, "w": 1.0 / 7.0}
_HOURS = {"h": 1.0, "hr": 1.0, "hour": 1.0, "d": 24.0, "day": 24.0}


@dataclass(frozen=True)
class _Form:
    """One recognised phrase shape and how its match becomes a rule."""

    pattern: re.Pattern[str]
    build: Callable[[str, str, re.Match[str]], AlertRuleSpec]


def _number(text: str) -> float:
    """A phrase's number; ValueError when it is too large to mean anything."""
    value = float(text)
    if not math.isfinite(value) or value > 1e12:
        raise ValueError(f"number too large: {text[:20]}")
    return value


def _memory_relative(name: str, phrase: str, m: re.Match[str]) -> AlertRuleSpec:
    per_day = _number(m.group(1)) * _PERCENT_PER_DAY[m.group(2)]
    return AlertRuleSpec(name, AlertKind.MEMORY_LEAK, per_day, phrase=phrase)


def _memory_absolute(name: str, phrase: str, m: re.Match[str]) -> AlertRuleSpec:
    # threshold 0 switches the relative (percent/day) test off: only MB/h counts.
    mb = parse_size(f"{m.group(1)}{m.group(2)}") / 1e6
    mb_per_h = mb / _HOURS[m.group(3)]
    return AlertRuleSpec(name, AlertKind.MEMORY_LEAK, 0.0, phrase=phrase, abs_mb_per_h=mb_per_h)


def _latency(name: str, phrase: str, m: re.Match[str]) -> AlertRuleSpec:
    percentile = (m.group(1) or "p99").replace(".", "")
    return AlertRuleSpec(
        name,
        AlertKind.PERFORMANCE_DEGRADATION,
        _number(m.group(2)),
        phrase=phrase,
        metric=f"{percentile}_ms",
    )


def _cadence(name: str, phrase: str, m: re.Match[str]) -> AlertRuleSpec:
    drift_s = parse_duration(m.group(1))  # ValueError when it is not a duration
    return AlertRuleSpec(name, AlertKind.CONSOLIDATION_FAILURE, drift_s, phrase=phrase)


def _error_rate(name: str, phrase: str, m: re.Match[str]) -> AlertRuleSpec:
    value = _number(m.group(2))
    fraction = value / 100.0 if m.group(3) else value
    if fraction > 1.0:
        raise ValueError("an error rate is at most 100% (or a fraction up to 1; 0.01 = 1%)")
    ops = (m.group(1),) if m.group(1) else ()
    return AlertRuleSpec(name, AlertKind.ERROR_RATE, fraction, phrase=phrase, operations=ops)


def _crash(name: str, phrase: str, m: re.Match[str]) -> AlertRuleSpec:
    return AlertRuleSpec(name, AlertKind.CRASH, 0.0, phrase=phrase)


def _integrity(name: str, phrase: str, m: re.Match[str]) -> AlertRuleSpec:
    return AlertRuleSpec(name, AlertKind.INTEGRITY, 0.0, phrase=phrase)


def _saturated(name: str, phrase: str, m: re.Match[str]) -> AlertRuleSpec:
    fraction = _number(m.group(1)) / 100.0 if m.group(1) else 0.01
    return AlertRuleSpec(name, AlertKind.SOAKD_SATURATED, fraction, phrase=phrase)


def _disk(name: str, phrase: str, m: re.Match[str]) -> AlertRuleSpec:
    free_bytes = float(parse_size(m.group(1)))
    return AlertRuleSpec(name, AlertKind.DISK_SPACE, free_bytes, phrase=phrase, condition="<")


def _form(regex: str, build: Callable[[str, str, re.Match[str]], AlertRuleSpec]) -> _Form:
    return _Form(re.compile(rf"^{regex}$"), build)


_FORMS: tuple[_Form, ...] = (
    _form(
        rf"{_MEM_SUBJECT}{_GROWS}{_GT}\s*{_N}\s*%{_PER}(day|d|24h|hour|hr|h|week|w)",
        _memory_relative,
    ),
    _form(
        rf"{_MEM_SUBJECT}{_GROWS}{_GT}\s*{_N}\s*(kb|kib|mb|mib|gb|gib){_PER}(hour|hr|h|day|d)",
        _memory_absolute,
    ),
    _form(
        r"(?:(p50|p90|p95|p99|p99\.9|p999)\s+)?(?:(?:query|request|response)\s+)?latency\s+"
        r"(?:(?:increases?|grows?|rises?|degrades?|regresses?|goes\s+up|worsens?)\s+)?"
        rf"{_GT}\s*{_N}\s*%"
        r"(?:\s+(?:over|above|from|vs\.?|versus|compared\s+to|relative\s+to)\s+(?:the\s+)?baseline)?",
        _latency,
    ),
    _form(
        r"(?:consolidation\s+)?(?:cadence|interval|schedule|timing)\s+"
        r"(?:drifts?|deviation|deviates|delay|jitter)\s+"
        rf"{_GT}\s*(\d[\w. ]*)",
        _cadence,
    ),
    _form(
        rf"consolidation\s+(?:drift|delay|delayed|late|lateness)\s+{_GT}\s*(\d[\w. ]*)", _cadence
    ),
    _form(
        rf"(?:{_OP}\s+)?(?:error|failure)(?:\s+(?:rate|ratio))?s?\s+(?:is\s+)?{_GT}\s*{_N}\s*(%)?",
        _error_rate,
    ),
    _form(
        r"(?:any\s+|a\s+)?(?:crash(?:es)?|(?:target|engram|process|server)\s+"
        r"(?:crash(?:es)?|dies|exits|restarts)|(?:unexpected\s+)?(?:exit|restart)s?)",
        _crash,
    ),
    _form(
        r"(?:any\s+)?(?:lost|missing|corrupt(?:ed)?)(?:\s*(?:or|and|/)\s*(?:lost|missing|corrupt(?:ed)?))?"
        r"\s+(?:writes?|memor(?:y|ies)|stores?|data)",
        _integrity,
    ),
    _form(
        r"(?:any\s+)?(?:data\s+(?:loss|corruption)|integrity\s+(?:failure|error|violation)s?)",
        _integrity,
    ),
    _form(r"soakd\s+(?:is\s+)?saturated()", _saturated),
    _form(
        r"(?:dropped|late)(?:\s*(?:or|and|/)\s*(?:dropped|late))?\s+arrivals\s+"
        rf"{_GT}\s*{_N}\s*%",
        _saturated,
    ),
    _form(rf"(?:free\s+)?disk(?:\s+space)?(?:\s+free)?\s+{_LT}\s*(\d[\w. ]*)", _disk),
)


def _normalise(phrase: str) -> str:
    text = " ".join(phrase.lower().split())
    return text.strip(" .!\"'")


def parse_alert_phrase(name: str, phrase: str) -> AlertRuleSpec:
    """The typed rule a plan phrase means; ValueError (listing the known forms) if none."""
    text = _normalise(phrase)
    for form in _FORMS:
        match = form.pattern.match(text)
        if match is None:
            continue
        try:
            return form.build(name, phrase, match)
        except ValueError as exc:
            raise ValueError(f"{exc} (in alert phrase {_quote(phrase)})") from None
    raise ValueError(
        f"unrecognised alert phrase {_quote(phrase)}; recognised forms: "
        + "; ".join(RECOGNISED_PHRASES)
    )


def _quote(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")
