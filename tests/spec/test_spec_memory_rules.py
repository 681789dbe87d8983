"""The memory and overload keys of issue 17: which memory a leak rule judges, what a memory
costs, setup_timeout, and the two new implicit rules."""

from __future__ import annotations

import textwrap

import pytest

from soakd.errors import SpecError
from soakd.spec import load_spec_text
from soakd.spec.model import AlertKind, MemorySeries

HEAD = """\
duration: 1h
workload:
  - operation: store
    rate: 10/s
"""


def test_the_plans_rss_phrase_judges_anonymous_memory_and_rss_can_be_chosen() -> None:
    """The plan's phrase maps to anonymous memory; `memory: rss` and `memory_cost` are read."""
    spec = load_spec_text(
        HEAD
        + textwrap.dedent(
            """\
            alerts:
              - memory_leak: "RSS increases >10% per day"
              - leak_total:
                  phrase: "RSS increases >10% per day"
                  memory: rss
                  memory_cost: 16KiB
            target: {setup_timeout: 45s}
            """
        )
    )
    rules = {r.name: r for r in spec.alerts}
    assert rules["memory_leak"].memory is MemorySeries.ANON
    assert rules["memory_leak"].memory_cost_bytes is None
    assert rules["leak_total"].memory is MemorySeries.RSS
    assert rules["leak_total"].memory_cost_bytes == 16 * 1024
    assert spec.target.setup_timeout_s == 45.0


def test_memory_keys_on_another_kind_and_a_bad_series_are_named() -> None:
    """`memory` on an error_rate rule and `memory: heap` are problems with their paths."""
    with pytest.raises(SpecError) as caught:
        load_spec_text(
            HEAD
            + textwrap.dedent(
                """\
                alerts:
                  - {name: e, kind: error_rate, threshold: 0.01, memory: anon}
                  - {name: l, kind: memory_leak, threshold: 10, memory: heap}
                """
            )
        )
    text = str(caught.value)
    assert "alerts[0].memory" in text and "memory_leak rules only" in text
    assert "alerts[1].memory" in text and "anon, rss" in text


def test_new_implicit_rules_and_their_defaults() -> None:
    """target_overloaded (1 %) and memory_exhaustion (24 h) are added unless named."""
    spec = load_spec_text(HEAD)
    implicit = {r.kind: r for r in spec.alerts}
    assert implicit[AlertKind.TARGET_OVERLOADED].threshold == 0.01
    assert implicit[AlertKind.MEMORY_EXHAUSTION].threshold == 86400.0
    assert spec.target.setup_timeout_s == 120.0
    own = load_spec_text(
        HEAD + "alerts:\n  - {name: oom, kind: memory_exhaustion, threshold: 2h}\n"
    )
    exhaustion = [r for r in own.alerts if r.kind is AlertKind.MEMORY_EXHAUSTION]
    assert [(r.name, r.threshold) for r in exhaustion] == [("oom", 7200.0)]
