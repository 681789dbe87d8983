"""Every kind of spec mistake is a Problem with its YAML path and line, all reported at once."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from soakd.errors import ExitCode, Problem, SpecError
from soakd.spec import RECOGNISED_PHRASES, load_spec, load_spec_text

CONFIG = Path(__file__).resolve().parents[2] / "config"

HEAD = """\
duration: 1h
workload:
  - operation: store
    rate: 10/s
"""


def problems(text: str) -> list[Problem]:
    """The problems loading ``text`` reports (failing the test if it loads)."""
    with pytest.raises(SpecError) as caught:
        load_spec_text(textwrap.dedent(text))
    assert caught.value.exit_code is ExitCode.USAGE
    return caught.value.problems


def only(text: str) -> Problem:
    """The single problem ``text`` has."""
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def test_bad_example_reports_all_three_problems_at_once() -> None:
    """config/bad-example.yaml: misspelt key, negative rate, unknown phrase, together."""
    with pytest.raises(SpecError) as caught:
        load_spec(CONFIG / "bad-example.yaml")
    found = caught.value.problems
    assert [(p.path, p.line) for p in found] == [
        ("workload[0].rat", 10),
        ("workload[1].rate", 13),
        ("alerts[1].memory_leak", 18),
    ]
    assert found[0].message == "unknown key; did you mean 'rate'?"
    assert "above zero" in found[1].message
    assert RECOGNISED_PHRASES[0] in found[2].message
    assert "config/bad-example.yaml: 3 problem(s)" in str(caught.value)
    assert "workload[0].rat (line 10): unknown key; did you mean 'rate'?" in str(caught.value)


def test_misspelt_key_did_you_mean() -> None:
    """An unknown key gets the closest known key as a suggestion, with its line."""
    p = only(
        """\
        duration: 1h
        workload:
          - operation: store
            rat: 100 ops/sec
        """
    )
    assert (p.path, p.line, p.message) == (
        "workload[0].rat",
        4,
        "unknown key; did you mean 'rate'?",
    )


def test_top_level_typo_and_missing_required() -> None:
    """A misspelt top-level key suggests the right one instead of also saying it is missing."""
    found = problems("durration: 1h\nworkload: [{operation: store, rate: 1}]\n")
    assert [(p.path, p.line) for p in found] == [("durration", 1)]
    assert "did you mean 'duration'" in found[0].message
    p = only("duration: 1h\n")
    assert (p.path, p.message) == ("workload", "'workload' is required")


def test_key_of_another_operation() -> None:
    """A key valid for another operation says which one it belongs to."""
    p = only(HEAD + "    max_hops: 3\n")
    assert (p.path, p.line) == ("workload[0].max_hops", 5)
    assert p.message == "'max_hops' applies to spread, not store"


@pytest.mark.parametrize(
    ("rate", "needle"),
    [
        ("0", "above zero"),
        ("-5 ops/sec", "above zero"),
        ("fast", "not a rate"),
        ("[1, 2]", "got a list"),
        ("true", "got a boolean"),
        ("1000000 ops/sec", "at most"),
    ],
)
def test_bad_rates(rate: str, needle: str) -> None:
    """Zero, negative, junk, mistyped and absurd rates are problems at workload[0].rate."""
    p = only(f"duration: 1h\nworkload:\n  - operation: store\n    rate: {rate}\n")
    assert (p.path, p.line) == ("workload[0].rate", 4)
    assert needle in p.message


@pytest.mark.parametrize(
    ("value", "needle"),
    [("soon", "not a duration"), ("-1h", "negative"), ("0s", "above zero"), ("400d", "between")],
)
def test_bad_durations(value: str, needle: str) -> None:
    """Bad, negative, zero and over-long durations are problems at ``duration``."""
    p = only(f"duration: {value}\nworkload: [{{operation: store, rate: 1}}]\n")
    assert (p.path, p.line) == ("duration", 1)
    assert needle in p.message


def test_missing_rate_and_unknown_operation() -> None:
    """A driven operation without rate, and an unknown operation, are both reported."""
    found = problems(
        """\
        duration: 1h
        workload:
          - operation: store
            spaces: 2
          - operation: stroe
            rate: 0
        """
    )
    assert [(p.path, p.line) for p in found] == [
        ("workload[0].rate", 3),
        ("workload[1].operation", 5),
        ("workload[1].rate", 6),
    ]
    assert "did you mean 'store'" in found[1].message


def test_duplicate_operation() -> None:
    """An operation listed twice is a problem pointing at the second one."""
    p = only(HEAD + "  - operation: store\n    rate: 5\n")
    assert (p.path, p.line) == ("workload[1].operation", 5)
    assert "duplicate operation 'store' (first at workload[0])" in p.message


def test_spread_needs_store_and_hops_limit() -> None:
    """Spread without store, and MAX_HOPS >= 7 (a 400 in Engram), are problems."""
    found = problems(
        "duration: 1h\nworkload:\n  - operation: spread\n    rate: 1\n    max_hops: 7\n"
    )
    assert [(p.path, p.line) for p in found] == [
        ("workload[0].operation", 3),
        ("workload[0].max_hops", 5),
    ]
    assert "needs a store operation" in found[0].message
    assert "400" in found[1].message


def test_consolidation_only_workload_and_poll_interval() -> None:
    """A workload with nothing to drive, and a poll interval outside 1-5 s, are problems."""
    found = problems(
        "duration: 1h\nworkload:\n  - operation: consolidation\n    poll_interval: 10s\n"
    )
    assert {(p.path, p.line) for p in found} == {
        ("workload", 3),
        ("workload[0].poll_interval", 4),
    }


def test_wrong_types_everywhere() -> None:
    """Wrong YAML types are each reported with their own path."""
    found = problems(
        HEAD
        + """\
monitoring: memory_rss
alerts: {a: b}
target: [x]
seed: "seven"
name: 5
"""
    )
    assert [(p.path, p.line) for p in found] == [
        ("monitoring", 5),
        ("alerts", 6),
        ("target", 7),
        ("seed", 8),
        ("name", 9),
    ]
    assert all("expected" in p.message for p in found)


def test_unknown_monitoring_name() -> None:
    """An unknown monitoring series gets a did-you-mean and the known list."""
    p = only(HEAD + "monitoring: [memory_rss, memroy_heap]\n")
    assert (p.path, p.line) == ("monitoring[1]", 5)
    assert "did you mean 'memory_heap'" in p.message
    assert "query_latency_p99" in p.message


def test_unknown_alert_phrase_path() -> None:
    """An unknown phrase is a problem at alerts[i].<name> listing the recognised forms."""
    p = only(
        HEAD + 'alerts:\n  - memory_leak: "RSS increases >10% per day"\n  - leak: "RSS wobbles"\n'
    )
    assert (p.path, p.line) == ("alerts[1].leak", 7)
    assert all(form in p.message for form in RECOGNISED_PHRASES)


def test_alert_problems() -> None:
    """Duplicate names, bad kinds, missing thresholds and unknown metrics are reported."""
    found = problems(
        HEAD
        + """\
alerts:
  - crash: "any crash"
  - crash: "crash"
  - {name: a, kind: memory_leek, threshold: 1}
  - {name: b, kind: error_rate}
  - {name: c, kind: threshold, metric: rss_byte, threshold: 1}
  - {name: d, kind: crash, metric: rss_bytes}
  - {name: e, kind: error_rate, threshold: 1%, operations: [spread]}
  - {name: f, phrase: "any crash", kind: crash}
  - g: "any crash"
    for: soon
    threshold: 3
  - {name: h, kind: error_rate, threshold: lots}
  - {name: i, kind: threshold, threshold: 1}
"""
    )
    assert [p.path for p in found] == [
        "alerts[1].crash",
        "alerts[2].kind",
        "alerts[3].threshold",
        "alerts[4].metric",
        "alerts[5].metric",
        "alerts[6].operations[0]",
        "alerts[7].kind",
        "alerts[8].for",
        "alerts[8].threshold",
        "alerts[9].threshold",
        "alerts[10].metric",
    ]
    assert "duplicate alert name" in found[0].message
    assert "did you mean 'memory_leak'" in found[1].message
    assert "did you mean 'rss_bytes'" in found[3].message
    assert "not in the workload" in found[5].message


def test_target_problems() -> None:
    """Inline secrets, shell strings, several locators and bad URLs are refused."""
    found = problems(
        HEAD
        + """\
target:
  url: "localhost:7432"
  api_key: "engram_key_abc_s3cr3t"
  command: "engram start -p 7432"
  pid: 12
  restart: always
"""
    )
    by_path = {p.path: p for p in found}
    assert set(by_path) == {
        "target.url",
        "target.api_key",
        "target.command",
        "target.pid",
        "target.restart",
    }
    assert by_path["target.api_key"].line == 7
    assert "never inline a secret" in by_path["target.api_key"].message
    assert "s3cr3t" not in str(SpecError("x", found))  # the secret is never echoed
    assert "never a shell string" in by_path["target.command"].message
    assert "at most one of" in by_path["target.pid"].message
    assert "http://" in by_path["target.url"].message


def test_target_launch_options_need_command() -> None:
    """env, cwd and restart: on-failure make sense only for a launched target."""
    found = problems(HEAD + "target: {env: {A: b}, cwd: /tmp, restart: on-failure}\n")
    assert {p.path for p in found} == {"target.env", "target.cwd", "target.restart"}


def test_unknown_command_placeholder() -> None:
    """Only {python} and {port} placeholders are known in target.command."""
    p = only(HEAD + 'target: {command: ["{python}", "--data", "{data}"]}\n')
    assert (p.path, p.line) == ("target.command[2]", 5)
    assert "{data}" in p.message


def test_bad_listen_and_urls() -> None:
    """Listen addresses and receiver URLs are checked."""
    found = problems(
        HEAD
        + """\
exporter: {listen: "9464"}
receivers:
  - {name: am, type: alertmanager, url: "http://am:notaport"}
  - {name: s, type: slack, url: "https://hooks.slack.com/services/T/B/X"}
  - {name: p, type: pagerduty}
  - {name: w, type: webhok, url: "http://x"}
  - {name: k, type: webhook, url: {env: "bad name"}}
"""
    )
    assert [p.path for p in found] == [
        "exporter.listen",
        "receivers[0].url",
        "receivers[1].url",
        "receivers[2].routing_key",
        "receivers[3].type",
        "receivers[4].url.env",
    ]
    assert "hooks.slack.com" not in found[2].message


def test_sampling_and_integrity_bounds() -> None:
    """Out-of-range sampling and integrity values are problems with their paths."""
    found = problems(
        HEAD + "sampling: {interval: 10ms, min_free_disk: lots}\n"
        "integrity: {sample_fraction: 2, max_pending: 0}\n"
    )
    assert [p.path for p in found] == [
        "sampling.interval",
        "sampling.min_free_disk",
        "integrity.sample_fraction",
        "integrity.max_pending",
    ]


def test_duplicate_key() -> None:
    """A key written twice in one mapping is a problem at its second line."""
    p = only("duration: 1h\nduration: 2h\nworkload: [{operation: store, rate: 1}]\n")
    assert (p.path, p.line, p.message) == ("duration", 2, "duplicate key")


def test_problem_flood_is_capped() -> None:
    """A file with thousands of mistakes lists a bounded number and counts the rest."""
    junk = "".join(f"junk{i}: 1\n" for i in range(500))
    found = problems(HEAD + junk)
    assert len(found) == 101
    assert found[-1].message == "400 more problem(s) not listed"


def test_a_rule_window_shorter_than_two_stats_intervals_is_refused_with_its_path() -> None:
    """window 10 s with 10 s stats intervals: some evaluations would see no record at all."""
    found = only(
        HEAD
        + """\
alerts:
  - spread_errors: {phrase: "store error rate >50%", window: 10s}
"""
    )
    assert (found.path, found.line) == ("alerts[0].spread_errors.window", 6)
    assert "two stats intervals (20 s)" in found.message
    structured = only(
        HEAD
        + """\
sampling: {stats_interval: 5s}
alerts:
  - {name: errs, kind: error_rate, threshold: 0.5, window: 9s}
"""
    )
    assert structured.path == "alerts[0].window" and "(10 s)" in structured.message


def test_a_rule_window_of_two_stats_intervals_is_accepted() -> None:
    """The bound itself is fine, and a shorter stats interval allows a shorter window."""
    spec = load_spec_text(
        HEAD + 'alerts:\n  - spread_errors: {phrase: "store error rate >50%", window: 20s}\n'
    )
    assert spec.alerts[0].window_s == 20.0
    spec = load_spec_text(
        HEAD + "sampling: {stats_interval: 2s}\n"
        'alerts:\n  - e: {phrase: "store error rate >50%", window: 4s}\n'
    )
    assert spec.alerts[0].window_s == 4.0
