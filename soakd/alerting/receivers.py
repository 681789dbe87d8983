"""How each receiver type is reached, and how its answer is read.

Secrets (tokenised URLs, PagerDuty routing keys) are resolved from their env
var or file at each send, never stored in the outbox, and scrubbed from every
error text (:func:`redact`): logs and outbox rows name the receiver, never
its URL. Answers are classified once, here: 2xx delivered; 408, 425, 429 and
5xx (and network errors, timeouts) retried, honouring ``Retry-After``; any
other 4xx is a permanent refusal (PagerDuty's 400 "never retry") and is not
retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from soakd.alerting.payloads import (
    AlertSnapshot,
    alertmanager_body,
    pagerduty_body,
    slack_body,
    webhook_body,
)
from soakd.spec.model import ReceiverSpec, ReceiverType, Secret

PAGERDUTY_DEFAULT_URL = "https://events.pagerduty.com"
_RETRY_STATUSES = frozenset({408, 425, 429})
#: Longest Retry-After honoured as given (a server asking for a day is capped).
RETRY_AFTER_MAX_S = 3600.0


class SecretError(Exception):
    """A secret could not be resolved; the message names where it was looked for, not its value."""


def resolve_secret(secret: Secret) -> str:
    """The secret's value, from its environment variable or file (stripped)."""
    if secret.env:
        value = os.environ.get(secret.env, "")
        if not value:
            raise SecretError(f"environment variable {secret.env} is not set")
        return value.strip()
    if secret.file:
        try:
            value = Path(secret.file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"cannot read secret file {secret.file}: {exc.strerror}") from None
        if not value:
            raise SecretError(f"secret file {secret.file} is empty")
        return value
    raise SecretError("secret has neither env nor file")


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret (and longer strings holding one) replaced by <redacted>."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "<redacted>")
    return text


@dataclass(frozen=True)
class Attempt:
    """How one send ended."""

    ok: bool
    retry: bool  # worth retrying (False with ok=False: a permanent refusal)
    status: int | None
    retry_after_s: float | None
    detail: str  # for logs and the outbox: never holds a secret


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = when.timestamp() - now
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def classify(status: int, headers: Mapping[str, str], now: float) -> Attempt:
    """Turn an HTTP answer into an :class:`Attempt`."""
    if 200 <= status < 300:
        return Attempt(True, False, status, None, f"HTTP {status}")
    retry = status in _RETRY_STATUSES or status >= 500 or status < 400
    after = parse_retry_after(headers.get("Retry-After"), now) if retry else None
    return Attempt(False, retry, status, after, f"HTTP {status}")


class Receiver:
    """One configured receiver: its URL (resolved at send time) and payload shape."""

    def __init__(self, spec: ReceiverSpec, *, external_url: str) -> None:
        self.spec = spec
        self.name = spec.name
        self.type = spec.type
        self._external_url = external_url

    def secrets(self) -> list[str]:
        """The secret values this receiver uses now (for redaction); unresolvable ones skipped."""
        out: list[str] = []
        for secret in (self.spec.url_secret, self.spec.routing_key):
            if secret is not None:
                with contextlib.suppress(SecretError):
                    out.append(resolve_secret(secret))
        return out

    def _base_url(self) -> str:
        if self.spec.url_secret is not None:
            return resolve_secret(self.spec.url_secret)
        if self.spec.url:
            return self.spec.url
        if self.type is ReceiverType.PAGERDUTY:
            return PAGERDUTY_DEFAULT_URL
        raise SecretError(f"receiver {self.name} has no url")

    def _requests(self, alerts: Sequence[AlertSnapshot], now: float) -> list[tuple[str, object]]:
        """(url, JSON body) pairs this send consists of, in order."""
        base = self._base_url()
        if self.type is ReceiverType.ALERTMANAGER:
            url = base.rstrip("/") + "/api/v2/alerts"
            return [(url, alertmanager_body(alerts, now, self.spec.resend_interval_s))]
        if self.type is ReceiverType.WEBHOOK:
            body = webhook_body(alerts, receiver=self.name, external_url=self._external_url)
            return [(base, body)]
        if self.type is ReceiverType.SLACK:
            return [(base, slack_body(a)) for a in alerts]
        assert self.spec.routing_key is not None, "validated by the spec loader"
        key = resolve_secret(self.spec.routing_key)
        url = base.rstrip("/") + "/v2/enqueue"
        return [(url, pagerduty_body(a, key)) for a in alerts]

    async def send(
        self,
        session: aiohttp.ClientSession,
        alerts: Sequence[AlertSnapshot],
        *,
        now: float,
        idempotency_key: str | None = None,
    ) -> Attempt:
        """POST ``alerts``; never raises (every failure becomes an Attempt)."""
        try:
            requests = self._requests(alerts, now)
        except SecretError as exc:
            return Attempt(False, True, None, None, str(exc))
        headers = {"User-Agent": "soakd"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        attempt = Attempt(True, False, None, None, "nothing to send")
        for url, body in requests:
            attempt = await self._post(session, url, body, headers=headers, now=now)
            if not attempt.ok:
                break
        return attempt

    async def _post(
        self,
        session: aiohttp.ClientSession,
        url: str,
        body: object,
        *,
        headers: Mapping[str, str],
        now: float,
    ) -> Attempt:
        timeout = aiohttp.ClientTimeout(total=self.spec.timeout_s)
        try:
            async with session.post(url, json=body, headers=headers, timeout=timeout) as resp:
                await resp.read()
                return classify(resp.status, resp.headers, now)
        except TimeoutError:
            return Attempt(False, True, None, None, f"timed out after {self.spec.timeout_s:g} s")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            text = redact(f"{type(exc).__name__}: {exc}", [url, *self.secrets()])
            return Attempt(False, True, None, None, text)
        except asyncio.CancelledError:
            raise
