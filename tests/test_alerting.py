"""Delivery tests: real aiohttp receivers on 127.0.0.1, the durable outbox, retries and restarts."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web

from soakd.alerting import (
    ZERO_TIME,
    AlertSnapshot,
    Backoff,
    Dispatcher,
    fingerprint,
    format_test_results,
    rfc3339,
    slack_body,
)
from soakd.alerting.receivers import parse_retry_after
from soakd.clock import FakeClock, SystemClock
from soakd.model import Alert, AlertState, AlertTransition, Clock
from soakd.spec.model import ReceiverSpec, ReceiverType, Secret
from soakd.testing import async_wait_for, free_port

BASE = {"run_id": "run-1", "target": "http://127.0.0.1:7432", "job": "soakd"}
FAST = Backoff(base_s=0.05, cap_s=0.2)


@dataclass
class Received:
    path: str
    body: Any
    headers: dict[str, str]


@dataclass
class Sink:
    """A receiver under test: records every request and answers from a script (default 200)."""

    requests: list[Received] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    gate: asyncio.Event | None = None
    port: int = 0
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(Received(request.path, await request.json(), dict(request.headers)))
        if self.gate is not None:
            gate, self.gate = self.gate, None
            await asyncio.wait_for(gate.wait(), 10.0)
        status, headers = self.script.pop(0) if self.script else (200, {})
        return web.Response(status=status, headers=headers)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def keys(self) -> list[str]:
        return [r.headers.get("Idempotency-Key", "") for r in self.requests]


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = Sink()
    await s.start()
    yield s
    await s.stop()


def _alert(name: str, t: float, state: AlertState, **labels: str) -> tuple[AlertTransition, Alert]:
    full = {**BASE, "alertname": name, "severity": "page", **labels}
    old = AlertState.FIRING if state is AlertState.RESOLVED else AlertState.PENDING
    tr = AlertTransition(t, name, full, old, state, 1.0, f"{name} is {state}")
    alert = Alert(
        name,
        full,
        state,
        t,
        1.0,
        f"{name} is {state}",
        "page",
        {"summary": f"{name} summary", "runbook_url": "https://runbooks/x"},
    )
    return tr, alert


def _dispatcher(
    tmp_path: Path,
    receivers: list[ReceiverSpec],
    clock: Clock | None = None,
    backoff: Backoff = FAST,
) -> Dispatcher:
    return Dispatcher(
        receivers,
        db_path=tmp_path / "run.sqlite",
        base_labels=BASE,
        generator_url="http://127.0.0.1:9464/status",
        clock=clock or SystemClock(),
        backoff=backoff,
        seed=1,
    )


def _webhook(url: str, **kw: float) -> ReceiverSpec:
    return ReceiverSpec("hook", ReceiverType.WEBHOOK, url=url, **kw)  # type: ignore[arg-type]


async def _running(d: Dispatcher) -> asyncio.Task[None]:
    return asyncio.create_task(d.run())


async def _stop(task: asyncio.Task[None], d: Dispatcher) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    d.close()


def _submit(d: Dispatcher, *pairs: tuple[AlertTransition, Alert]) -> None:
    d.submit([p[0] for p in pairs], [p[1] for p in pairs])


async def test_webhook_payload_is_alertmanager_v4(tmp_path: Path, sink: Sink) -> None:
    """Firing then resolved arrive as Alertmanager webhook v4 payloads with stable fingerprints."""
    d = _dispatcher(tmp_path, [_webhook(sink.url)])
    task = await _running(d)
    fire = _alert("memory_leak", 1000.0, AlertState.FIRING)
    _submit(d, fire)
    await async_wait_for(lambda: len(sink.requests) == 1, what="firing delivered")
    _submit(d, _alert("memory_leak", 1060.0, AlertState.RESOLVED))
    await async_wait_for(lambda: len(sink.requests) == 2, what="resolved delivered")
    await _stop(task, d)
    first, second = (r.body for r in sink.requests)
    assert isinstance(first, dict) and isinstance(second, dict)
    assert first["version"] == "4" and first["status"] == "firing" and first["receiver"] == "hook"
    for key in ("groupKey", "groupLabels", "commonLabels", "commonAnnotations", "externalURL"):
        assert key in first
    (a,) = first["alerts"]
    assert a["endsAt"] == ZERO_TIME
    assert a["labels"]["alertname"] == "memory_leak" and a["labels"]["run_id"] == "run-1"
    assert a["labels"]["severity"] == "page" and a["labels"]["target"] == BASE["target"]
    assert a["annotations"]["runbook_url"] == "https://runbooks/x"
    assert a["fingerprint"] == fingerprint(a["labels"])
    (b,) = second["alerts"]
    assert second["status"] == "resolved" and b["endsAt"] != ZERO_TIME
    assert b["startsAt"] == a["startsAt"] and b["fingerprint"] == a["fingerprint"]


async def test_receiver_down_then_up_gets_everything_once_in_order(tmp_path: Path) -> None:
    """A webhook that is down gets every queued notification once back, in order, once each."""
    sink = Sink()
    await sink.start()
    await sink.stop()  # keep the port, refuse connections
    d = _dispatcher(tmp_path, [_webhook(sink.url)])
    task = await _running(d)
    pairs = [
        _alert("crash", 1000.0, AlertState.FIRING),
        _alert("integrity", 1001.0, AlertState.FIRING),
        _alert("crash", 1002.0, AlertState.RESOLVED),
    ]
    for p in pairs:
        _submit(d, p)
    await async_wait_for(lambda: d.status()[0].failures >= 3, what="failed attempts")
    assert "Connect" in d.status()[0].last_detail
    await sink.start()
    try:
        await async_wait_for(lambda: d.status()[0].pending == 0, timeout_s=15, what="delivery")
    finally:
        await _stop(task, d)
        await sink.stop()
    got = [(r.body["alerts"][0]["labels"]["alertname"], r.body["status"]) for r in sink.requests]
    assert got == [("crash", "firing"), ("integrity", "firing"), ("crash", "resolved")]
    assert len(set(sink.keys())) == 3


async def test_500_is_retried_with_the_same_idempotency_key(tmp_path: Path, sink: Sink) -> None:
    """Two 500s then a 200: the notification is retried and delivered, same key each time."""
    sink.script = [(500, {}), (503, {})]
    d = _dispatcher(tmp_path, [_webhook(sink.url)])
    task = await _running(d)
    _submit(d, _alert("crash", 1000.0, AlertState.FIRING))
    await async_wait_for(lambda: d.status()[0].pending == 0, what="delivered after retries")
    await _stop(task, d)
    assert len(sink.requests) == 3
    assert len(set(sink.keys())) == 1


async def test_slow_receiver_past_timeout_is_retried(tmp_path: Path, sink: Sink) -> None:
    """A receiver slower than the timeout counts as a failure and the row is re-sent."""
    sink.gate = asyncio.Event()
    gate = sink.gate
    d = _dispatcher(tmp_path, [_webhook(sink.url, timeout_s=0.3)])
    task = await _running(d)
    _submit(d, _alert("crash", 1000.0, AlertState.FIRING))
    await async_wait_for(lambda: d.status()[0].pending == 0, timeout_s=10, what="re-sent")
    assert "timed out" in d.status()[0].last_detail or len(sink.requests) >= 2
    gate.set()
    await _stop(task, d)
    assert len(sink.requests) >= 2
    assert len(set(sink.keys())) == 1  # the receiver can tell the duplicate by its key


async def test_429_retry_after_is_honoured(tmp_path: Path, sink: Sink) -> None:
    """After a 429 with Retry-After: 30 the next attempt waits 30 s of (fake) clock time."""
    sink.script = [(429, {"Retry-After": "30"})]
    clock = FakeClock()
    d = _dispatcher(tmp_path, [_webhook(sink.url)], clock=clock, backoff=Backoff(1.0, 300.0))
    task = await _running(d)
    _submit(d, _alert("crash", 1000.0, AlertState.FIRING))
    await async_wait_for(lambda: d.status()[0].failures == 1, what="first attempt refused")
    assert d.status()[0].next_attempt_in_s == pytest.approx(30.0)
    await async_wait_for(lambda: clock.sleepers >= 1, what="delivery loop parked")
    clock.advance(29_000_000_000)
    # the loop wakes, finds the backoff not over, and parks again without sending
    await async_wait_for(lambda: clock.sleepers >= 1, what="delivery loop parked again")
    assert d.status()[0].pending == 1 and len(sink.requests) == 1
    clock.advance(2_000_000_000)
    await async_wait_for(lambda: d.status()[0].pending == 0, what="delivered after Retry-After")
    await _stop(task, d)
    assert len(sink.requests) == 2


async def test_permanent_refusal_is_not_retried(tmp_path: Path, sink: Sink) -> None:
    """A 400 marks that notification failed for good; the next one is still delivered."""
    sink.script = [(400, {})]
    d = _dispatcher(tmp_path, [_webhook(sink.url)])
    task = await _running(d)
    _submit(
        d,
        _alert("crash", 1000.0, AlertState.FIRING),
        _alert("integrity", 1000.0, AlertState.FIRING),
    )
    await async_wait_for(lambda: len(sink.requests) == 2 and d.status()[0].pending == 0)
    await _stop(task, d)
    assert len(sink.requests) == 2


async def test_prune_forgets_finished_rows_and_keeps_undelivered(
    tmp_path: Path, sink: Sink
) -> None:
    """Delivered and refused rows older than the cut go; an undelivered row never does."""
    sink.script = [(400, {})]
    dead = ReceiverSpec("dead", ReceiverType.WEBHOOK, url=f"http://127.0.0.1:{free_port()}/")
    d = _dispatcher(tmp_path, [_webhook(sink.url), dead])
    task = await _running(d)
    _submit(
        d,
        _alert("crash", 1000.0, AlertState.FIRING),
        _alert("integrity", 1000.0, AlertState.FIRING),
    )
    hook = lambda: next(s for s in d.status() if s.name == "hook")  # noqa: E731
    await async_wait_for(lambda: len(sink.requests) == 2 and hook().pending == 0)
    cut = time.time()
    try:
        assert d.prune(cut - 3600) == 0  # finished, but not older than the cut
        assert d.prune(cut + 1) == 2  # one refused (400), one delivered
        assert d.prune(cut + 1) == 0
        assert {s.name: s.pending for s in d.status()} == {"hook": 0, "dead": 2}
    finally:
        await _stop(task, d)


async def test_restart_mid_way_sends_no_delivered_row_twice(tmp_path: Path, sink: Sink) -> None:
    """A new Dispatcher on the same store sends what was left and nothing already delivered."""
    pairs = [_alert(f"a{i}", 1000.0 + i, AlertState.FIRING) for i in range(4)]
    ok: list[tuple[int, dict[str, str]]] = [(200, {}), (200, {})]
    sink.script = ok + [(500, {})] * 50
    first = _dispatcher(tmp_path, [_webhook(sink.url)])
    task = await _running(first)
    for p in pairs:
        _submit(first, p)
    await async_wait_for(lambda: first.status()[0].failures >= 1, what="two delivered, then 500s")
    await _stop(task, first)
    before = [r.body["alerts"][0]["labels"]["alertname"] for r in sink.requests]
    sink.script = []
    sink.requests.clear()
    second = _dispatcher(tmp_path, [_webhook(sink.url)])
    for p in pairs:  # the daemon re-submitting the same transitions adds nothing
        _submit(second, p)
    task = await _running(second)
    await async_wait_for(lambda: second.status()[0].pending == 0, what="rest delivered")
    await _stop(task, second)
    names = [r.body["alerts"][0]["labels"]["alertname"] for r in sink.requests]
    assert names == ["a2", "a3"]
    assert before[:2] == ["a0", "a1"] and set(before) == {"a0", "a1", "a2"}  # a2 got the 500s


async def test_alertmanager_resends_firing_with_ends_at_ahead(tmp_path: Path, sink: Sink) -> None:
    """Alertmanager gets firing alerts re-sent with endsAt ahead, then the resolve, re-sent too."""
    rx = ReceiverSpec(
        "am", ReceiverType.ALERTMANAGER, url=f"http://127.0.0.1:{sink.port}", resend_interval_s=0.2
    )
    d = _dispatcher(tmp_path, [rx])
    task = await _running(d)
    t0 = time.time()
    _submit(d, _alert("crash", t0, AlertState.FIRING))
    await async_wait_for(lambda: len(sink.requests) >= 3, what="resends")
    _submit(d, _alert("crash", t0 + 1, AlertState.RESOLVED))
    resolved_at = rfc3339(t0 + 1)
    await async_wait_for(
        lambda: sum(1 for r in sink.requests if r.body[0]["endsAt"] == resolved_at) >= 2,
        what="resolve re-sent",
    )
    await _stop(task, d)
    assert all(r.path == "/api/v2/alerts" for r in sink.requests)
    firing = sink.requests[0].body[0]
    assert set(firing) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert firing["endsAt"] > firing["startsAt"] and firing["labels"]["alertname"] == "crash"
    last = sink.requests[-1].body[0]
    assert last["endsAt"] == resolved_at
    ahead = [r.body[0]["endsAt"] for r in sink.requests[:3]]
    assert all(e > rfc3339(t0 + 0.5) for e in ahead)  # endsAt = send time + 4 x 0.2 s


async def test_pagerduty_trigger_resolve_and_secret_hygiene(
    tmp_path: Path, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PagerDuty gets trigger, then resolve, under one dedup_key; the routing key stays secret."""
    secret = "R0UT1NGKEY" + str(random.Random(3).random())
    monkeypatch.setenv("SOAKD_TEST_PD_KEY", secret)
    sink.script = [(500, {})]
    rx = ReceiverSpec(
        "pd",
        ReceiverType.PAGERDUTY,
        url=f"http://127.0.0.1:{sink.port}",
        routing_key=Secret(env="SOAKD_TEST_PD_KEY"),
    )
    d = _dispatcher(tmp_path, [rx])
    with structlog.testing.capture_logs() as logs:
        task = await _running(d)
        _submit(d, _alert("crash", 1000.0, AlertState.FIRING))
        _submit(d, _alert("crash", 1010.0, AlertState.RESOLVED))
        await async_wait_for(lambda: d.status()[0].pending == 0, what="delivered")
        rows = d._outbox.dump()
        await _stop(task, d)
    bodies = [r.body for r in sink.requests]
    assert [b["event_action"] for b in bodies] == ["trigger", "trigger", "resolve"]
    assert len({b["dedup_key"] for b in bodies}) == 1
    assert all(
        r.path == "/v2/enqueue" and b["routing_key"] == secret
        for r, b in zip(sink.requests, bodies, strict=True)
    )
    assert secret not in repr(logs) and secret not in repr(rows)


async def test_tokenised_url_never_reaches_logs_or_outbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook URL from a secret is not in any log line or outbox row, even on errors."""
    sink = Sink()
    await sink.start()
    await sink.stop()
    token = "T0KEN" + str(random.Random(5).random())[2:]
    monkeypatch.setenv("SOAKD_TEST_HOOK", f"http://127.0.0.1:{sink.port}/hook/{token}")
    rx = ReceiverSpec("hook", ReceiverType.WEBHOOK, url_secret=Secret(env="SOAKD_TEST_HOOK"))
    d = _dispatcher(tmp_path, [rx])
    with structlog.testing.capture_logs() as logs:
        task = await _running(d)
        _submit(d, _alert("crash", 1000.0, AlertState.FIRING))
        await async_wait_for(lambda: d.status()[0].failures >= 2, what="failures logged")
        await sink.start()
        await async_wait_for(lambda: d.status()[0].pending == 0, timeout_s=15, what="delivered")
        rows = d._outbox.dump()
        await _stop(task, d)
    await sink.stop()
    assert sink.requests[0].path.endswith(token)
    assert any(e["event"] == "alert_delivery_failed" for e in logs)
    assert token not in repr(logs) and token not in repr(rows)
    assert token not in repr(rx)


async def test_flush_delivers_without_run_and_reports_remaining(tmp_path: Path, sink: Sink) -> None:
    """flush() delivers what is pending; with the receiver gone it returns what is left."""
    d = _dispatcher(tmp_path, [_webhook(sink.url)])
    _submit(d, _alert("crash", 1000.0, AlertState.FIRING))
    assert await d.flush(5.0) == 0
    assert len(sink.requests) == 1
    await sink.stop()
    _submit(d, _alert("crash", 1001.0, AlertState.RESOLVED))
    assert await d.flush(0.5) == 1
    d.close()


async def test_send_test_reports_each_receiver(tmp_path: Path, sink: Sink) -> None:
    """send_test sends one test alert per receiver and says which worked and why not."""
    good = _webhook(sink.url)
    missing = ReceiverSpec("slack", ReceiverType.SLACK, url_secret=Secret(env="SOAKD_NOT_SET_X"))
    d = _dispatcher(tmp_path, [good, missing])
    results = await d.send_test()
    d.close()
    assert results[0] == ("hook", True, "HTTP 200")
    assert results[1][0] == "slack" and not results[1][1] and "SOAKD_NOT_SET_X" in results[1][2]
    assert sink.requests[0].body["alerts"][0]["labels"]["alertname"] == "SoakdTestAlert"
    text = format_test_results(results)
    assert "hook" in text and "FAILED" in text


def test_slack_body_is_one_line_of_text() -> None:
    """The Slack body is {"text": ...} naming status, alert, summary and runbook."""
    snap = AlertSnapshot(
        "firing",
        (("alertname", "crash"), ("severity", "page")),
        (("runbook_url", "https://rb"), ("summary", "target died")),
        1.0,
        None,
        "u",
    )
    body = slack_body(snap)
    assert set(body) == {"text"}
    assert "[FIRING] crash" in str(body["text"]) and "https://rb" in str(body["text"])


def test_backoff_grows_is_capped_jittered_and_respects_retry_after() -> None:
    """Delays double up to the cap, stay within the jitter band and never undercut Retry-After."""
    b = Backoff(base_s=1.0, cap_s=60.0, jitter=0.5)
    rng = random.Random(0)
    for failures, full in ((1, 1.0), (2, 2.0), (5, 16.0), (20, 60.0)):
        d = b.delay_s(failures, rng, None)
        assert full * 0.5 <= d <= full
    assert b.delay_s(1, rng, 42.0) == 42.0


def test_retry_after_parses_seconds_and_http_dates() -> None:
    """Retry-After takes delta-seconds or an HTTP date, and is capped."""
    assert parse_retry_after("7", 0.0) == 7.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == pytest.approx(60.0)
    assert parse_retry_after("999999", 0.0) == 3600.0
    assert parse_retry_after("soon", 0.0) is None


def test_fingerprint_is_stable_and_order_free() -> None:
    """The fingerprint depends on the label set only, not on insertion order."""
    a = fingerprint({"alertname": "x", "severity": "page"})
    assert a == fingerprint({"severity": "page", "alertname": "x"})
    assert a != fingerprint({"alertname": "x", "severity": "info"})
    assert len(a) == 16
