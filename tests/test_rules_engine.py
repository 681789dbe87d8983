"""AlertEngine state machine tests and gather_inputs against a real run store."""

from __future__ import annotations

from pathlib import Path

from test_rules import MB, T0, inputs, latency_records, record, rss_samples

from soakd.model import Alert, AlertState, Event, IntervalRecord, Op, RunInfo
from soakd.rules import AlertEngine, evaluate_rule, gather_inputs
from soakd.spec.model import AlertKind, AlertRuleSpec
from soakd.store import Batch, RunStore

BASE = {"run_id": "r1", "target": "http://127.0.0.1:7432", "job": "soakd"}
INTEGRITY = AlertRuleSpec("integrity", AlertKind.INTEGRITY, 0.0, severity="critical")
CRASH = AlertRuleSpec("crash", AlertKind.CRASH, 0.0, for_s=30.0)


def _crash_events(at: float) -> list[Event]:
    return [Event(T0 + at, "target_crash", "exit -9")]


def test_for_holds_pending_until_duration() -> None:
    """With for=30 s an active condition is pending first and fires only after 30 s."""
    engine = AlertEngine([CRASH], base_labels=BASE)
    ev = _crash_events(10)
    (t1,) = engine.evaluate(inputs(11, events=ev))
    assert (t1.old, t1.new) == (AlertState.INACTIVE, AlertState.PENDING)
    assert engine.evaluate(inputs(30, events=ev)) == []
    (t2,) = engine.evaluate(inputs(41, events=ev))
    assert (t2.old, t2.new) == (AlertState.PENDING, AlertState.FIRING)


def test_pending_that_clears_goes_inactive_without_firing() -> None:
    """A condition that clears before `for` elapses never fires."""
    rule = AlertRuleSpec("crash", AlertKind.CRASH, 0.0, for_s=300.0)
    engine = AlertEngine([rule], base_labels=BASE)
    ev = [*_crash_events(10), Event(T0 + 12, "target_restart", "pid 2")]
    engine.evaluate(inputs(11, events=ev))
    (t,) = engine.evaluate(inputs(200, events=ev))
    assert (t.old, t.new) == (AlertState.PENDING, AlertState.INACTIVE)


def test_fires_immediately_and_resolves() -> None:
    """for=0 fires on the first active evaluation and resolves when the condition clears."""
    engine = AlertEngine([AlertRuleSpec("crash", AlertKind.CRASH, 0.0)], base_labels=BASE)
    ev = [*_crash_events(10), Event(T0 + 11, "target_restart", "pid 2")]
    (t1,) = engine.evaluate(inputs(12, events=ev))
    assert t1.new is AlertState.FIRING
    assert engine.evaluate(inputs(40, events=ev)) == []  # still firing: no new transition
    (t2,) = engine.evaluate(inputs(200, events=ev))
    assert (t2.old, t2.new) == (AlertState.FIRING, AlertState.RESOLVED)
    (alert,) = engine.current()
    assert alert.state is AlertState.RESOLVED


ERRORS = AlertRuleSpec("errs", AlertKind.ERROR_RATE, 0.5, window_s=20.0, operations=("spread",))


def _failing(start_elapsed: float, n: int, per_interval: int = 30) -> list[IntervalRecord]:
    """``n`` 10-second spread records from ``start_elapsed`` whose every request failed."""
    return [
        record(Op.SPREAD, T0 + start_elapsed + 10 * i, 10.0, [5.0] * per_interval, ok=0)
        for i in range(n)
    ]


def test_a_firing_alert_is_held_while_its_window_has_too_little_data() -> None:
    """Not enough data is not "resolved": the alert stays firing, then resolves on real data.

    The 10 s window of issue 18 flapped: one evaluation saw a record, the next
    none ("not judged"), which resolved the alert; the next one fired it anew.
    """
    engine = AlertEngine([ERRORS], base_labels=BASE)
    recs = _failing(0, 3)
    (fired,) = engine.evaluate(inputs(30, intervals={Op.SPREAD: recs}))
    assert fired.new is AlertState.FIRING
    # 45 s: nothing recorded since 30 s (a gap, a restart): too few requests.
    assert engine.evaluate(inputs(55, intervals={Op.SPREAD: recs})) == []
    (alert,) = engine.current()
    assert alert.state is AlertState.FIRING and alert.since == fired.t
    assert "held" in alert.summary and alert.value == fired.value
    # Data again, all failing: still firing, no new transition.
    more = recs + _failing(60, 2)
    assert engine.evaluate(inputs(80, intervals={Op.SPREAD: more})) == []
    # Data again, all ok: now it is over.
    ok = more + [record(Op.SPREAD, T0 + 80 + 10 * i, 10.0, [5.0] * 30) for i in range(2)]
    (resolved,) = engine.evaluate(inputs(100, intervals={Op.SPREAD: ok}))
    assert (resolved.old, resolved.new) == (AlertState.FIRING, AlertState.RESOLVED)


def test_a_pending_alert_without_data_still_goes_inactive() -> None:
    """Only firing is held: a pending instance whose data dries up never fires on no data."""
    rule = AlertRuleSpec("errs", AlertKind.ERROR_RATE, 0.5, window_s=20.0, for_s=60.0)
    engine = AlertEngine([rule], base_labels=BASE)
    recs = _failing(0, 3)
    (pending,) = engine.evaluate(inputs(30, intervals={Op.SPREAD: recs}))
    assert pending.new is AlertState.PENDING
    (gone,) = engine.evaluate(inputs(55, intervals={Op.SPREAD: recs}))
    assert gone.new is AlertState.INACTIVE


def test_labels_include_alertname_severity_run_and_target() -> None:
    """Every alert carries alertname, severity and the run's base labels."""
    engine = AlertEngine([INTEGRITY], base_labels=BASE)
    (t,) = engine.evaluate(inputs(60, lost=1))
    assert t.labels["alertname"] == "integrity"
    assert t.labels["severity"] == "critical"
    assert t.labels["run_id"] == "r1" and t.labels["target"] == BASE["target"]
    (alert,) = engine.current()
    assert alert.annotations["summary"]


def test_restored_firing_alert_does_not_page_again() -> None:
    """An alert restored as firing stays firing without a new transition."""
    first = AlertEngine([INTEGRITY], base_labels=BASE)
    first.evaluate(inputs(60, lost=1))
    restored = first.current()
    second = AlertEngine([INTEGRITY], base_labels=BASE, restored=restored)
    assert second.evaluate(inputs(90, lost=1)) == []
    assert second.current()[0].state is AlertState.FIRING


def test_per_operation_instances_are_independent() -> None:
    """Performance degradation fires for the drifting operation and leaves the other inactive."""
    rule = AlertRuleSpec("perf", AlertKind.PERFORMANCE_DEGRADATION, 20.0)
    recs = {
        Op.STORE: latency_records(Op.STORE, 600, lambda e: 10.0 + (e > 400) * 5.0),
        Op.RECALL: latency_records(Op.RECALL, 600, lambda e: 10.0),
    }
    engine = AlertEngine([rule], base_labels=BASE)
    (t,) = engine.evaluate(inputs(600, intervals=recs))
    assert t.labels["op"] == "store" and t.new is AlertState.FIRING
    states = {a.labels["op"]: a.state for a in engine.current()}
    assert states == {"store": AlertState.FIRING, "recall": AlertState.INACTIVE}


def test_broken_rule_does_not_silence_others() -> None:
    """A rule that raises is logged and skipped; the other rules still evaluate."""
    broken = AlertRuleSpec("bad", AlertKind.PERFORMANCE_DEGRADATION, 20.0, operations=("nope",))
    engine = AlertEngine([broken, INTEGRITY], base_labels=BASE)
    (t,) = engine.evaluate(inputs(60, lost=1))
    assert t.rule == "integrity"


def test_restored_pending_keeps_its_since() -> None:
    """A pending alert restored after a restart fires once `for` has elapsed since it began."""
    labels = {**BASE, "alertname": "crash", "severity": "page"}
    pending = Alert("crash", labels, AlertState.PENDING, T0 + 11, 1.0, "crash")
    engine = AlertEngine([CRASH], base_labels=BASE, restored=[pending])
    (t,) = engine.evaluate(inputs(42, events=_crash_events(10)))
    assert (t.old, t.new) == (AlertState.PENDING, AlertState.FIRING)


def test_gather_inputs_reads_windows_from_run_store(tmp_path: Path) -> None:
    """gather_inputs reads samples, intervals and events from a real RunStore for the rules."""
    info = RunInfo("r1", "fp", "spec", T0, 600.0)
    store = RunStore.create(tmp_path, info)
    try:
        samples = rss_samples(600.0, 1.0, lambda e: 80 * MB + 100_000 * e, memories=lambda e: 50)
        recs = latency_records(Op.STORE, 600, lambda e: 10.0 + (e > 400) * 5.0)
        store.write(
            Batch(samples=samples, intervals=recs, events=[Event(T0 + 5, "disk_low", "low")])
        )
        got = gather_inputs(
            store,
            T0 + 600,
            expected_interval_s=None,
            tolerance_s=5.0,
            integrity_lost=0,
            integrity_corrupted=0,
        )
    finally:
        store.close()
    assert got.run_started == T0 and got.planned_duration_s == 600.0
    assert len(got.samples) >= 500
    assert [e.kind for e in got.events] == ["disk_low"]
    leak = AlertRuleSpec("memory_leak", AlertKind.MEMORY_LEAK, 10.0)
    assert evaluate_rule(leak, got)[0].active
    perf = AlertRuleSpec("perf", AlertKind.PERFORMANCE_DEGRADATION, 20.0)
    assert evaluate_rule(perf, got)[0].active
