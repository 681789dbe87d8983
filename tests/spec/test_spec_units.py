"""Durations, rates and sizes as a spec writes them."""

from __future__ import annotations

import pytest

from soakd.spec import parse_duration, parse_rate, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("168h", 604800.0),
        ("90s", 90.0),
        ("7d", 604800.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("2 hours", 7200.0),
        ("1.5h", 5400.0),
        ("10m", 600.0),
        ("1w", 604800.0),
        ("90", 90.0),
        (90, 90.0),
        (2.5, 2.5),
        ("0", 0.0),
        (" 5 S ", 5.0),
    ],
)
def test_parse_duration_accepts_the_documented_forms(text: str | float, seconds: float) -> None:
    """Every documented duration form gives the expected number of seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "x", "-5s", "5 parsecs", "h", "1e400s", "nan", "inf", "5s-", True, float("nan"), 10**400],
)
def test_parse_duration_refuses_junk(text: str | float) -> None:
    """Negative, non-finite, unit-less junk and booleans are refused with ValueError."""
    with pytest.raises(ValueError, match=r"duration|finite|negative"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("100 ops/sec", 100.0),
        ("100/s", 100.0),
        ("100 ops/s", 100.0),
        ("6000/min", 100.0),
        ("100 per second", 100.0),
        ("100 ops per second", 100.0),
        ("360000/h", 100.0),
        ("100 rps", 100.0),
        ("1.5/s", 1.5),
        ("100", 100.0),
        (100, 100.0),
        (0.5, 0.5),
    ],
)
def test_parse_rate_accepts_the_documented_forms(text: str | float, rate: float) -> None:
    """Every documented rate form gives ops per second."""
    assert parse_rate(text) == pytest.approx(rate)


@pytest.mark.parametrize(
    "text", ["0", 0, "-5/s", "-1", "0 ops/sec", "100 ops", "100/ms", "fast", "", True]
)
def test_parse_rate_refuses_zero_negative_and_junk(text: str | float) -> None:
    """A rate must be a positive number of ops per some time unit."""
    with pytest.raises(ValueError, match=r"rate"):
        parse_rate(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [("512MiB", 512 * 1024**2), ("1GB", 10**9), ("64 KiB", 65536), ("100", 100), (4096, 4096)],
)
def test_parse_size_accepts_si_and_iec(text: str | int, size: int) -> None:
    """Sizes take SI and IEC prefixes and bare byte counts."""
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["-1", "12 parsecs", "1e300GB", "", -5])
def test_parse_size_refuses_junk(text: str | int) -> None:
    """Negative, unknown-unit and absurdly large sizes are refused."""
    with pytest.raises(ValueError, match=r"size"):
        parse_size(text)
