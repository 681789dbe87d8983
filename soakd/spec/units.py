"""Parsers for the human units a soak spec is written in: durations, rates, sizes.

Each parser takes what YAML handed over (a string, or a bare number) and
returns a plain float/int in the unit its name promises (seconds, operations
per second, bytes), or raises :class:`ValueError` with a message that says
which forms are accepted. They are pure, so the loader can report every bad
value at once and tests can hammer them directly.
"""

from __future__ import annotations

import math
import re

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"

#: Duration units and their length in seconds (lower-cased on lookup).
_DURATION_UNITS: dict[str, float] = {
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
    "w": 604800.0,
    "week": 604800.0,
    "weeks": 604800.0,
}

_DURATION_PART = re.compile(rf"\s*({_NUMBER})\s*([a-zµ]+)\s*")

DURATION_FORMS = "a number of seconds or e.g. '90s', '500ms', '10m', '168h', '7d', '1h30m'"
RATE_FORMS = "a number (ops/s) or e.g. '100 ops/sec', '100/s', '6000/min', '100 per second'"
SIZE_FORMS = "a number of bytes or e.g. '512MiB', '1GB', '64 KiB'"

_RATE_PER: dict[str, float] = {
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
}

# "100 ops/sec", "100/s", "100 per second", "100 requests a minute", "100 rps".
_RATE = re.compile(
    rf"^({_NUMBER})\s*"
    r"(?:(?:ops?|operations?|requests?|reqs?|calls?|queries|query)\b\s*)?"
    r"(?:(?:/|per\b|an?\b)\s*([a-z]+)|(rps|qps))$"
)

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}

_SIZE = re.compile(rf"^({_NUMBER})\s*([a-z]*)$")


def _bare_number(value: int | float, what: str) -> float:
    """A YAML number used as-is; bool is refused although Python calls it an int."""
    if isinstance(value, bool):
        raise ValueError(f"expected {what}, got a boolean")
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        raise ValueError(f"expected {what}, got a number too large") from None
    if not math.isfinite(number):
        raise ValueError(f"expected {what}, got {value!r}")
    return number


def _short(text: str) -> str:
    """Quote a value for a message without letting a hostile one flood it."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def parse_duration(text: str | int | float) -> float:
    """Seconds from ``"168h"``, ``"90s"``, ``"7d"``, ``"500ms"``, ``"1h30m"`` or a bare number."""
    if not isinstance(text, str):
        seconds = _bare_number(text, "a duration")
    else:
        seconds = _parse_duration_text(text)
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative ({_short(str(text))})")
    return seconds


def _parse_duration_text(text: str) -> float:
    cleaned = text.strip().lower()
    if cleaned.startswith("-"):
        raise ValueError(f"a duration cannot be negative ({_short(text)})")
    if re.fullmatch(_NUMBER, cleaned):
        return _finite(float(cleaned), text)
    total, pos = 0.0, 0
    while pos < len(cleaned):
        match = _DURATION_PART.match(cleaned, pos)
        if match is None or match.group(2) not in _DURATION_UNITS:
            raise ValueError(f"not a duration: {_short(text)}; use {DURATION_FORMS}")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError(f"not a duration: {_short(text)}; use {DURATION_FORMS}")
    return _finite(total, text)


def _finite(value: float, text: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {_short(text)}")
    return value


def parse_rate(text: str | int | float) -> float:
    """Operations per second from ``"100 ops/sec"``, ``"6000/min"``, a bare number, ...

    A rate must be above zero: a zero or negative rate is an error here
    rather than a silent "do nothing".
    """
    rate = _parse_rate_text(text) if isinstance(text, str) else _bare_number(text, "a rate")
    if rate <= 0:
        raise ValueError(f"a rate must be above zero (got {_short(str(text))})")
    return rate


def _parse_rate_text(text: str) -> float:
    cleaned = " ".join(text.strip().lower().split())
    if cleaned.startswith("-"):
        raise ValueError(f"a rate must be above zero (got {_short(text)})")
    if re.fullmatch(_NUMBER, cleaned):
        return _finite(float(cleaned), text)
    match = _RATE.match(cleaned)
    if match is None:
        raise ValueError(f"not a rate: {_short(text)}; use {RATE_FORMS}")
    number = float(match.group(1))
    if match.group(3) is not None:  # "rps", "qps": per second
        return _finite(number, text)
    per = _RATE_PER.get(match.group(2))
    if per is None:
        raise ValueError(f"not a rate: {_short(text)}; use {RATE_FORMS}")
    return _finite(number / per, text)


def parse_size(text: str | int | float) -> int:
    """Bytes from ``"512MiB"``, ``"1GB"`` or a bare number (SI and IEC prefixes)."""
    if not isinstance(text, str):
        number = _bare_number(text, "a size")
        unit = 1
    else:
        cleaned = text.strip().lower()
        match = _SIZE.match(cleaned)
        if match is None or match.group(2) not in _SIZE_UNITS:
            raise ValueError(f"not a size: {_short(text)}; use {SIZE_FORMS}")
        number = _finite(float(match.group(1)), text)
        unit = _SIZE_UNITS[match.group(2)]
    if number < 0:
        raise ValueError(f"a size cannot be negative ({_short(str(text))})")
    total = number * unit
    if total >= 2**63:  # also catches inf: int(inf) would raise OverflowError
        raise ValueError(f"size too large: {_short(str(text))}")
    return int(total)
