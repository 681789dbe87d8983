"""What soakd sends: alert snapshots and the JSON bodies of each receiver type.

* Alertmanager API v2: ``POST {url}/api/v2/alerts`` with a JSON array of
  ``{labels, annotations, startsAt, endsAt, generatorURL}``.
* webhook: Alertmanager's own webhook payload, version "4", so anything that
  takes Alertmanager's webhooks takes soakd's.
* Slack incoming webhook: ``{"text": ...}``.
* PagerDuty Events v2: ``{routing_key, event_action, dedup_key, payload}``.

The fingerprint is Alertmanager's (FNV-1a 64 over the sorted label names and
values, 0xff-separated), so the ``fingerprint`` a webhook consumer sees from
soakd directly and from Alertmanager is the same, and PagerDuty's ``dedup_key``
is stable across soakd restarts.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: How Alertmanager writes "no end" in its webhook payload.
ZERO_TIME = "0001-01-01T00:00:00Z"

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK = (1 << 64) - 1


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's label-set fingerprint, as 16 hex digits."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode("utf-8"):
                h = ((h ^ byte) * _FNV_PRIME) & _MASK
            h = ((h ^ 0xFF) * _FNV_PRIME) & _MASK
    return f"{h:016x}"


def rfc3339(t: float) -> str:
    """Wall seconds as RFC 3339 UTC with milliseconds (``2026-01-01T00:00:00.000Z``)."""
    stamp = dt.datetime.fromtimestamp(t, tz=dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class AlertSnapshot:
    """One alert as it is sent: firing or resolved, with its times. Holds no secret."""

    status: str  # "firing" | "resolved"
    labels: tuple[tuple[str, str], ...]  # sorted
    annotations: tuple[tuple[str, str], ...]
    starts_at: float
    ends_at: float | None  # the resolution time; None while firing
    generator_url: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(dict(self.labels))

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def to_json(self) -> str:
        return json.dumps(
            {
                "status": self.status,
                "labels": dict(self.labels),
                "annotations": dict(self.annotations),
                "starts_at": self.starts_at,
                "ends_at": self.ends_at,
                "generator_url": self.generator_url,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> AlertSnapshot:
        d = json.loads(text)
        return cls(
            status=str(d["status"]),
            labels=tuple(sorted((str(k), str(v)) for k, v in d["labels"].items())),
            annotations=tuple(sorted((str(k), str(v)) for k, v in d["annotations"].items())),
            starts_at=float(d["starts_at"]),
            ends_at=None if d["ends_at"] is None else float(d["ends_at"]),
            generator_url=str(d["generator_url"]),
        )


def alertmanager_body(
    alerts: Sequence[AlertSnapshot], now: float, resend_interval_s: float
) -> list[dict[str, object]]:
    """The API v2 body: a firing alert ends 4 resend intervals ahead (Prometheus' rule)."""
    out: list[dict[str, object]] = []
    for a in alerts:
        ends = a.ends_at if a.ends_at is not None else now + 4.0 * resend_interval_s
        out.append(
            {
                "labels": a.label_map,
                "annotations": dict(a.annotations),
                "startsAt": rfc3339(a.starts_at),
                "endsAt": rfc3339(ends),
                "generatorURL": a.generator_url,
            }
        )
    return out


def webhook_body(
    alerts: Sequence[AlertSnapshot], *, receiver: str, external_url: str
) -> dict[str, object]:
    """Alertmanager's webhook payload (version 4) for one notification."""
    items = [
        {
            "status": a.status,
            "labels": a.label_map,
            "annotations": dict(a.annotations),
            "startsAt": rfc3339(a.starts_at),
            "endsAt": rfc3339(a.ends_at) if a.ends_at is not None else ZERO_TIME,
            "generatorURL": a.generator_url,
            "fingerprint": a.fingerprint,
        }
        for a in alerts
    ]
    maps = [a.label_map for a in alerts]
    common = _common(maps)
    group = {"alertname": common["alertname"]} if "alertname" in common else {}
    group_key = "{}:{" + ",".join(f'{k}="{v}"' for k, v in sorted(group.items())) + "}"
    status = "firing" if any(a.status == "firing" for a in alerts) else "resolved"
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": common,
        "commonAnnotations": _common([dict(a.annotations) for a in alerts]),
        "externalURL": external_url,
        "alerts": items,
    }


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def slack_body(alert: AlertSnapshot) -> dict[str, object]:
    """A one-line Slack message: status, name, summary and where it comes from."""
    labels = alert.label_map
    notes = dict(alert.annotations)
    head = "RESOLVED" if alert.status == "resolved" else "FIRING"
    parts = [f"[{head}] {labels.get('alertname', '?')} ({labels.get('severity', '?')})"]
    if notes.get("summary"):
        parts.append(notes["summary"])
    scope = ", ".join(f"{k}={labels[k]}" for k in ("op", "failure", "run_id") if k in labels)
    if scope:
        parts.append(scope)
    if notes.get("runbook_url"):
        parts.append(f"runbook: {notes['runbook_url']}")
    return {"text": " — ".join(parts)}


_PD_SEVERITIES = {"critical", "error", "warning", "info"}


def pagerduty_body(alert: AlertSnapshot, routing_key: str) -> dict[str, object]:
    """A PagerDuty Events v2 trigger or resolve, deduplicated by the fingerprint."""
    labels = alert.label_map
    body: dict[str, object] = {
        "routing_key": routing_key,
        "event_action": "resolve" if alert.status == "resolved" else "trigger",
        "dedup_key": alert.fingerprint,
    }
    if alert.status != "resolved":
        severity = labels.get("severity", "critical")
        body["payload"] = {
            "summary": (dict(alert.annotations).get("summary") or labels.get("alertname", "soakd"))[
                :1024
            ],
            "source": labels.get("target", "soakd"),
            "severity": severity if severity in _PD_SEVERITIES else "critical",
            "component": labels.get("op", "engram"),
            "group": labels.get("run_id", ""),
            "class": labels.get("alertname", ""),
            "custom_details": {"labels": labels, "annotations": dict(alert.annotations)},
        }
        body["client"] = "soakd"
        body["client_url"] = alert.generator_url
    return body
