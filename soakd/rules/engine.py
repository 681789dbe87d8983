"""The alert state machine: inactive -> pending -> firing -> resolved.

:class:`AlertEngine` turns each evaluation's :class:`RuleResult` list into
:class:`~soakd.model.AlertTransition` records, applying each rule's ``for``
(an instance must stay active that long before it fires) and resolving an
instance as soon as its condition clears (not when its data runs short: a
firing instance whose rule cannot judge it is held firing). It starts from the states the run
store kept (``restored``), so an alert that was already firing before a soakd
restart stays firing without paging again. It does no I/O: the daemon stores
the transitions and hands them to the dispatcher.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from soakd.model import Alert, AlertState, AlertTransition
from soakd.rules.evaluate import RuleResult, evaluate_rule
from soakd.rules.inputs import RuleInputs
from soakd.spec.model import AlertRuleSpec

log = structlog.get_logger()

_Key = tuple[str, tuple[tuple[str, str], ...]]


def alert_key(rule: str, labels: Mapping[str, str]) -> _Key:
    """The identity of an alert instance: its rule and its full, sorted label set."""
    return rule, tuple(sorted(labels.items()))


class AlertEngine:
    """Keeps every alert instance's state across evaluations."""

    def __init__(
        self,
        rules: Sequence[AlertRuleSpec],
        *,
        base_labels: Mapping[str, str],
        restored: Sequence[Alert] = (),
    ) -> None:
        self._rules = tuple(rules)
        self._base = dict(base_labels)
        self._alerts: dict[_Key, Alert] = {alert_key(a.rule, a.labels): a for a in restored}
        self.last_results: tuple[RuleResult, ...] = ()

    def labels_for(self, rule: AlertRuleSpec, result: RuleResult) -> dict[str, str]:
        """Every label an instance carries: run, rule, instance, alertname and severity."""
        return {
            **self._base,
            **dict(result.labels),
            "alertname": rule.name,
            "severity": rule.severity,
        }

    def evaluate(self, inputs: RuleInputs) -> list[AlertTransition]:
        """Judge every rule on ``inputs`` and return the state changes, oldest rule first."""
        transitions: list[AlertTransition] = []
        seen: set[_Key] = set()
        results: list[RuleResult] = []
        for rule in self._rules:
            try:
                rule_results = evaluate_rule(rule, inputs)
            except Exception:  # one broken rule must not silence the others
                log.exception("rule_failed", rule=rule.name)
                seen.update(k for k in self._alerts if k[0] == rule.name)
                continue
            results.extend(rule_results)
            for result in rule_results:
                labels = self.labels_for(rule, result)
                key = alert_key(rule.name, labels)
                seen.add(key)
                t = self._step(rule, key, labels, result, inputs.now)
                if t is not None:
                    transitions.append(t)
        transitions.extend(self._clear_unseen(seen, inputs.now))
        self.last_results = tuple(results)
        return transitions

    def current(self) -> list[Alert]:
        """Every known instance's state (inactive and resolved ones included)."""
        return list(self._alerts.values())

    def _step(
        self,
        rule: AlertRuleSpec,
        key: _Key,
        labels: Mapping[str, str],
        result: RuleResult,
        now: float,
    ) -> AlertTransition | None:
        prev = self._alerts.get(key)
        old = prev.state if prev is not None else AlertState.INACTIVE
        held = old is AlertState.FIRING and not result.judged
        if held:
            # Too little data to judge is not "over": resolving here and firing
            # again at the next full window paged on-call once per gap.
            assert prev is not None
            result = RuleResult(
                result.rule,
                result.labels,
                True,
                prev.value,
                f"{prev.summary} (held: {result.summary})",
                result.detail,
            )
        new = _next_state(old, result.active, prev, rule.for_s, now)
        since = now if new is not old or prev is None else prev.since
        # the rule's own summary/description win; what was measured is always in "observed"
        annotations = {**dict(rule.annotations), "observed": result.summary}
        annotations.setdefault("summary", result.summary)
        self._alerts[key] = Alert(
            rule=rule.name,
            labels=dict(labels),
            state=new,
            since=since,
            value=result.value,
            summary=result.summary,
            severity=rule.severity,
            annotations=annotations,
        )
        if new is old:
            return None
        return AlertTransition(now, rule.name, dict(labels), old, new, result.value, result.summary)

    def _clear_unseen(self, seen: set[_Key], now: float) -> list[AlertTransition]:
        """Instances no rule reported this time (e.g. an operation gone) count as inactive."""
        out: list[AlertTransition] = []
        names = {r.name for r in self._rules}
        for key, alert in list(self._alerts.items()):
            if key in seen or alert.rule not in names:
                continue
            new = _next_state(alert.state, False, alert, 0.0, now)
            if new is alert.state:
                continue
            self._alerts[key] = Alert(
                alert.rule,
                alert.labels,
                new,
                now,
                alert.value,
                "no longer reported",
                alert.severity,
                alert.annotations,
            )
            out.append(
                AlertTransition(
                    now, alert.rule, alert.labels, alert.state, new, alert.value, alert.summary
                )
            )
        return out


def _next_state(
    old: AlertState, active: bool, prev: Alert | None, for_s: float, now: float
) -> AlertState:
    if not active:
        if old is AlertState.FIRING:
            return AlertState.RESOLVED
        if old is AlertState.PENDING:
            return AlertState.INACTIVE
        return old
    if old is AlertState.FIRING:
        return old
    if old is AlertState.PENDING:
        assert prev is not None
        return AlertState.FIRING if now - prev.since >= for_s else old
    return AlertState.FIRING if for_s <= 0 else AlertState.PENDING
