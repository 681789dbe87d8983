"""The plan's alert phrases and their tolerated variants become typed rules."""

from __future__ import annotations

import pytest

from soakd.spec import RECOGNISED_PHRASES, parse_alert_phrase
from soakd.spec.model import AlertKind


@pytest.mark.parametrize(
    ("phrase", "kind", "threshold"),
    [
        ("RSS increases >10% per day", AlertKind.MEMORY_LEAK, 10.0),
        ("P99 latency increases >20%", AlertKind.PERFORMANCE_DEGRADATION, 20.0),
        ("Cadence drift >5s", AlertKind.CONSOLIDATION_FAILURE, 5.0),
    ],
)
def test_the_plans_three_phrases(phrase: str, kind: AlertKind, threshold: float) -> None:
    """Each phrase of the plan's spec parses into its kind and threshold, keeping the words."""
    rule = parse_alert_phrase("rule", phrase)
    assert (rule.name, rule.kind, rule.threshold, rule.phrase) == ("rule", kind, threshold, phrase)


@pytest.mark.parametrize(
    ("phrase", "kind", "threshold"),
    [
        ("rss  INCREASES > 10 % per day.", AlertKind.MEMORY_LEAK, 10.0),
        ("RSS grows more than 10%/day", AlertKind.MEMORY_LEAK, 10.0),
        ("memory grows >1% per hour", AlertKind.MEMORY_LEAK, 24.0),
        ("heap increases over 7% per week", AlertKind.MEMORY_LEAK, 1.0),
        ("P99 latency increases >20% over baseline", AlertKind.PERFORMANCE_DEGRADATION, 20.0),
        ("p99 query latency regresses by more than 20 %", AlertKind.PERFORMANCE_DEGRADATION, 20.0),
        ("cadence drift > 5 s", AlertKind.CONSOLIDATION_FAILURE, 5.0),
        ("consolidation delay > 500ms", AlertKind.CONSOLIDATION_FAILURE, 0.5),
        ("Consolidation cadence drift exceeds 1m", AlertKind.CONSOLIDATION_FAILURE, 60.0),
        ("error rate >1%", AlertKind.ERROR_RATE, 0.01),
        ("Error rate > 0.05", AlertKind.ERROR_RATE, 0.05),
        ("errors > 2%", AlertKind.ERROR_RATE, 0.02),
        ("any crash", AlertKind.CRASH, 0.0),
        ("crash", AlertKind.CRASH, 0.0),
        ("Engram crashes", AlertKind.CRASH, 0.0),
        ("any lost or corrupted write", AlertKind.INTEGRITY, 0.0),
        ("any corrupted or lost writes", AlertKind.INTEGRITY, 0.0),
        ("data loss", AlertKind.INTEGRITY, 0.0),
        ("soakd saturated", AlertKind.SOAKD_SATURATED, 0.01),
        ("dropped or late arrivals > 2%", AlertKind.SOAKD_SATURATED, 0.02),
        ("free disk < 1GB", AlertKind.DISK_SPACE, 1e9),
    ],
)
def test_tolerated_variants(phrase: str, kind: AlertKind, threshold: float) -> None:
    """Case, spacing and wording variants parse to the same kind and unit."""
    rule = parse_alert_phrase("r", phrase)
    assert rule.kind is kind
    assert rule.threshold == pytest.approx(threshold)


def test_absolute_memory_form_sets_mb_per_hour() -> None:
    """'>10 MB/h' is the absolute leak form: abs_mb_per_h set, percent test off."""
    rule = parse_alert_phrase("leak", ">10 MB/h")
    assert (rule.kind, rule.abs_mb_per_h, rule.threshold) == (AlertKind.MEMORY_LEAK, 10.0, 0.0)
    assert parse_alert_phrase("leak", "RSS grows >240 MB per day").abs_mb_per_h == 10.0


def test_latency_phrase_records_its_percentile() -> None:
    """The percentile named in a latency phrase is kept as the rule's metric."""
    assert parse_alert_phrase("l", "P99 latency increases >20%").metric == "p99_ms"
    assert parse_alert_phrase("l", "p50 latency increases >10%").metric == "p50_ms"


def test_error_rate_for_one_operation() -> None:
    """'store error rate >N%' limits the rule to the store operation."""
    rule = parse_alert_phrase("e", "store error rate > 5%")
    assert (rule.operations, rule.threshold) == (("store",), 0.05)


def test_disk_phrase_compares_below() -> None:
    """The free-disk rule fires below its threshold, so its condition is '<'."""
    assert parse_alert_phrase("d", "free disk < 512MiB").condition == "<"


@pytest.mark.parametrize(
    "phrase",
    [
        "RSS goes a bit wobbly",
        "RSS increases >10%",  # per what? refused rather than guessed
        "RSS increases >10% per fortnight",
        "Cadence drift >5 parsecs",
        "error rate > 5",  # a fraction above 1 without '%'
        "error rate > 150%",
        "error rate > " + "9" * 400 + "%",
        "RSS increases >" + "9" * 400 + "% per day",
        "",
    ],
)
def test_unrecognised_phrases_list_the_known_forms(phrase: str) -> None:
    """An unknown, ambiguous or absurd phrase is a ValueError naming it (and the known forms)."""
    with pytest.raises(ValueError) as caught:
        parse_alert_phrase("x", phrase)
    message = str(caught.value)
    assert repr(phrase[:20]).rstrip("'") in message  # long phrases are shortened
    assert len(message) < 2000
    if message.startswith("unrecognised"):
        assert all(form in message for form in RECOGNISED_PHRASES)


def test_recognised_phrases_examples_all_parse() -> None:
    """The first quoted example of every recognised form parses (the docs do not lie)."""
    for form in RECOGNISED_PHRASES:
        example = form.split('"')[1].replace("N", "10").replace("SIZE", "1GB")
        parse_alert_phrase("x", example)
