"""Alert delivery: a durable outbox in the run store and one sender per receiver type.

:class:`Dispatcher` is what the daemon uses (submit transitions, run the
delivery loop, flush at the end, send a test alert); payload builders and the
Alertmanager-compatible fingerprint live in :mod:`soakd.alerting.payloads`.
See docs/alerting.md for the guarantees.
"""

from soakd.alerting.dispatcher import (
    KEEP_RESOLVED_S,
    TEST_ALERTNAME,
    Backoff,
    Dispatcher,
    ReceiverStatus,
)
from soakd.alerting.outbox import Outbox, OutboxItem
from soakd.alerting.payloads import (
    ZERO_TIME,
    AlertSnapshot,
    alertmanager_body,
    fingerprint,
    pagerduty_body,
    rfc3339,
    slack_body,
    webhook_body,
)
from soakd.alerting.receivers import Attempt, Receiver, SecretError, redact, resolve_secret

__all__ = [
    "KEEP_RESOLVED_S",
    "TEST_ALERTNAME",
    "ZERO_TIME",
    "AlertSnapshot",
    "Attempt",
    "Backoff",
    "Dispatcher",
    "Outbox",
    "OutboxItem",
    "Receiver",
    "ReceiverStatus",
    "SecretError",
    "alertmanager_body",
    "fingerprint",
    "format_test_results",
    "pagerduty_body",
    "redact",
    "resolve_secret",
    "rfc3339",
    "slack_body",
    "webhook_body",
]


def format_test_results(results: list[tuple[str, bool, str]]) -> str:
    """The lines ``soakd alerts test SPEC`` prints: one per receiver, OK or FAILED with why."""
    if not results:
        return "no receivers configured"
    width = max(len(name) for name, _, _ in results)
    return "\n".join(
        f"{name:<{width}}  {'OK' if ok else 'FAILED'}  {detail}" for name, ok, detail in results
    )
