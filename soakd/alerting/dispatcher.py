"""Delivery of alert transitions to every receiver, through the durable outbox.

:meth:`Dispatcher.submit` (blocking, quick) writes one outbox row per receiver
per firing or resolved transition; :meth:`Dispatcher.run` delivers them, one
task per receiver so a slow receiver delays nobody else:

* rows go out oldest first; the first failure stops that receiver's pass and
  sets its backoff (capped exponential, with jitter, never shorter than the
  receiver's ``Retry-After``), so order is kept and a receiver that is down
  gets everything, in order, once it is back;
* a permanent refusal (4xx other than 408/425/429) marks that row failed and
  the next one is tried;
* Alertmanager receivers also get every firing alert re-sent each
  ``resend_interval_s`` with ``endsAt = now + 4 x resend_interval_s``, and
  resolved ones re-sent for ``KEEP_RESOLVED_S`` (Alertmanager forgets
  notification state when it restarts).

Nothing here raises into the caller or waits on the workload: delivery runs in
its own tasks, SQLite calls in threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import structlog

from soakd.alerting.outbox import Enqueue, Outbox
from soakd.alerting.payloads import AlertSnapshot, fingerprint
from soakd.alerting.receivers import Attempt, Receiver
from soakd.model import Alert, AlertState, AlertTransition, Clock
from soakd.spec.model import ReceiverSpec, ReceiverType

log = structlog.get_logger()

#: Resolved alerts are re-sent to Alertmanager this long after they resolved.
KEEP_RESOLVED_S = 15 * 60.0
#: An idle receiver task looks at the outbox at least this often (clock seconds).
IDLE_POLL_S = 5.0
_BATCH = 100
TEST_ALERTNAME = "SoakdTestAlert"


@dataclass(frozen=True)
class Backoff:
    """Retry timing: delay = min(cap, base x 2^(failures-1)), times a jitter in [1-jitter, 1]."""

    base_s: float = 1.0
    cap_s: float = 300.0
    jitter: float = 0.5

    def delay_s(self, failures: int, rng: random.Random, retry_after_s: float | None) -> float:
        raw = min(self.cap_s, self.base_s * 2.0 ** max(0, failures - 1))
        delay = raw * (1.0 - self.jitter * rng.random())
        return max(delay, retry_after_s or 0.0)


@dataclass
class _ReceiverState:
    receiver: Receiver
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    failures: int = 0
    next_ns: int = 0  # monotonic: no attempt before this
    next_resend_ns: int = 0
    pending: bool = True
    last_detail: str = ""


@dataclass(frozen=True)
class ReceiverStatus:
    """What ``soakd status`` and the tests see of one receiver."""

    name: str
    pending: int
    failures: int
    next_attempt_in_s: float
    last_detail: str


class Dispatcher:
    """The outbox writer and the delivery loop for every configured receiver."""

    def __init__(
        self,
        receivers: Sequence[ReceiverSpec],
        *,
        db_path: Path,
        base_labels: Mapping[str, str],
        generator_url: str,
        clock: Clock,
        backoff: Backoff | None = None,
        seed: int | None = None,
    ) -> None:
        self._outbox = Outbox(db_path)
        self._base = dict(base_labels)
        self._generator_url = generator_url
        self._clock = clock
        self._backoff = backoff or Backoff()
        self._rng = random.Random(seed)
        self._states = [
            _ReceiverState(Receiver(spec, external_url=generator_url)) for spec in receivers
        ]
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- submitting (blocking) -------------------------------------------------------

    def submit(
        self,
        transitions: Sequence[AlertTransition],
        current: Sequence[Alert],
        *,
        record: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """Queue a notification per receiver for each firing/resolved transition (BLOCKING).

        ``record`` runs in the same transaction (the alert states and history):
        a notification is never durable without the state change it reports,
        nor the state change without its notification. Raises the SQLite or OS
        error when that transaction cannot commit; then nothing was written.
        """
        now = self._clock.wall()
        by_fp = {fingerprint(self._labels(a.rule, a.labels, a.severity)): a for a in current}
        items: list[Enqueue] = []
        active: list[AlertSnapshot] = []
        for t in transitions:
            snap = self._snapshot(t, by_fp)
            if snap is None:
                continue
            active.append(snap)
            key = f"{snap.fingerprint}|{snap.status}|{t.t!r}"
            items.extend(
                Enqueue(s.receiver.name, f"{s.receiver.name}|{key}", snap) for s in self._states
            )
        if not active and record is None:
            return
        added = self._outbox.submit(items, active, now, also=record)
        if not active:
            return
        log.info("alerts_queued", notifications=added, alerts=len(active))
        self._wake_all()

    def _labels(self, rule: str, labels: Mapping[str, str], severity: str) -> dict[str, str]:
        merged = {**self._base, **dict(labels)}
        merged.setdefault("alertname", rule)
        merged.setdefault("severity", severity)
        return merged

    def _snapshot(self, t: AlertTransition, current: Mapping[str, Alert]) -> AlertSnapshot | None:
        if t.new is AlertState.FIRING:
            status = "firing"
        elif t.old is AlertState.FIRING:
            status = "resolved"
        else:
            return None  # pending and inactive are not notified
        guess = _severity_of(t.labels)
        labels = self._labels(t.rule, t.labels, guess)
        fp = fingerprint(labels)
        alert = current.get(fp)
        if alert is not None:
            labels = self._labels(t.rule, t.labels, alert.severity)
            fp = fingerprint(labels)
        notes = dict(alert.annotations) if alert is not None else {}
        notes.setdefault("summary", t.summary)
        starts = t.t if status == "firing" else (self._outbox.starts_at(fp) or t.t)
        return AlertSnapshot(
            status=status,
            labels=tuple(sorted(labels.items())),
            annotations=tuple(sorted(notes.items())),
            starts_at=starts,
            ends_at=None if status == "firing" else t.t,
            generator_url=self._generator_url,
        )

    def _wake_all(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for s in self._states:
            s.pending = True
            loop.call_soon_threadsafe(s.wake.set)

    # -- delivering ----------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until cancelled: one task per receiver. Never raises (but cancellation)."""
        self._loop = asyncio.get_running_loop()
        if not self._states:
            return
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(self._receiver_loop(s, session)) for s in self._states]
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _receiver_loop(self, st: _ReceiverState, session: aiohttp.ClientSession) -> None:
        while True:
            try:
                await self._pass(st, session)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop alerting for the rest of the run
                log.exception("alert_delivery_error", receiver=st.receiver.name)
                self._set_backoff(st, None)
            await self._idle(st)

    async def _idle(self, st: _ReceiverState) -> None:
        now = self._clock.monotonic_ns()
        deadline = now + int(IDLE_POLL_S * 1e9)
        if st.pending:
            deadline = min(deadline, st.next_ns)
        if st.receiver.type is ReceiverType.ALERTMANAGER:
            deadline = min(deadline, max(st.next_resend_ns, st.next_ns))
        if deadline <= now:
            return
        waiter = asyncio.ensure_future(st.wake.wait())
        sleeper = asyncio.ensure_future(self._clock.sleep_until(deadline))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()
            st.wake.clear()

    def _set_backoff(self, st: _ReceiverState, retry_after_s: float | None) -> None:
        st.failures += 1
        delay = self._backoff.delay_s(st.failures, self._rng, retry_after_s)
        st.next_ns = self._clock.monotonic_ns() + int(delay * 1e9)

    async def _pass(
        self, st: _ReceiverState, session: aiohttp.ClientSession, *, force: bool = False
    ) -> None:
        """Send what is due for one receiver, in order; stop at the first retryable failure."""
        async with st.lock:
            if not force and self._clock.monotonic_ns() < st.next_ns:
                return
            if not await self._deliver_pending(st, session):
                return
            if st.receiver.type is ReceiverType.ALERTMANAGER:
                await self._resend(st, session, force=force)

    async def _deliver_pending(self, st: _ReceiverState, session: aiohttp.ClientSession) -> bool:
        name = st.receiver.name
        while True:
            items = await asyncio.to_thread(self._outbox.due, name, _BATCH)
            st.pending = bool(items)
            if not items:
                return True
            for item in items:
                attempt = await self._send(
                    st, session, [item.alert], f"{item.fingerprint}-{item.id}"
                )
                now = self._clock.wall()
                if attempt.ok:
                    await asyncio.to_thread(self._outbox.mark_delivered, item.id, now)
                    log.info(
                        "alert_delivered",
                        receiver=name,
                        alert=_alertname(item.alert),
                        status=item.status,
                        attempts=item.attempts + 1,
                    )
                elif not attempt.retry:
                    await asyncio.to_thread(self._outbox.mark_failed, item.id, now, attempt.detail)
                    log.error(
                        "alert_refused",
                        receiver=name,
                        alert=_alertname(item.alert),
                        detail=attempt.detail,
                    )
                else:
                    await asyncio.to_thread(self._outbox.mark_attempt, item.id, now, attempt.detail)
                    self._set_backoff(st, attempt.retry_after_s)
                    log.warning(
                        "alert_delivery_failed",
                        receiver=name,
                        detail=attempt.detail,
                        failures=st.failures,
                        retry_after_s=attempt.retry_after_s,
                    )
                    return False

    async def _resend(
        self, st: _ReceiverState, session: aiohttp.ClientSession, *, force: bool
    ) -> None:
        now_ns = self._clock.monotonic_ns()
        if not force and now_ns < st.next_resend_ns:
            return
        active = await asyncio.to_thread(self._outbox.active, self._clock.wall(), KEEP_RESOLVED_S)
        if active:
            attempt = await self._send(st, session, active, None)
            if not attempt.ok and attempt.retry:
                self._set_backoff(st, attempt.retry_after_s)
                log.warning("alert_resend_failed", receiver=st.receiver.name, detail=attempt.detail)
                return
        st.next_resend_ns = now_ns + int(st.receiver.spec.resend_interval_s * 1e9)

    async def _send(
        self,
        st: _ReceiverState,
        session: aiohttp.ClientSession,
        alerts: Sequence[AlertSnapshot],
        key: str | None,
    ) -> Attempt:
        attempt = await st.receiver.send(
            session, alerts, now=self._clock.wall(), idempotency_key=key
        )
        st.last_detail = attempt.detail
        if attempt.ok:
            st.failures = 0
            st.next_ns = 0
        return attempt

    # -- end of run, status, test ----------------------------------------------------

    def prune(self, before: float) -> int:
        """Forget finished outbox rows older than ``before`` (BLOCKING: writes the outbox)."""
        return self._outbox.prune(before)

    async def flush(self, timeout_s: float) -> int:
        """Try to deliver everything pending within ``timeout_s``; returns how many remain."""
        deadline = time.monotonic() + timeout_s
        try:
            async with aiohttp.ClientSession() as session:
                async with asyncio.timeout(timeout_s):
                    await self._flush(session, deadline)
        except TimeoutError:
            pass
        except Exception:
            log.exception("alert_flush_error")
        remaining = await asyncio.to_thread(self._outbox.pending)
        if remaining:
            log.warning("alerts_undelivered", remaining=remaining)
        return remaining

    async def _flush(self, session: aiohttp.ClientSession, deadline: float) -> None:
        first = True
        while time.monotonic() < deadline:
            for st in self._states:
                await self._pass(st, session, force=first)
            first = False
            if not await asyncio.to_thread(self._outbox.pending):
                return
            waiting = [s.next_ns for s in self._states if s.pending]
            # at least a few ms: rows submitted meanwhile must not turn this into a busy loop
            soonest = self._clock.monotonic_ns() + 20_000_000
            await self._clock.sleep_until(max(min(waiting, default=soonest), soonest))

    async def send_test(self) -> list[tuple[str, bool, str]]:
        """Send a test alert to every receiver now (not through the outbox); one result each."""
        now = self._clock.wall()
        labels = {**self._base, "alertname": TEST_ALERTNAME, "severity": "info"}
        firing = AlertSnapshot(
            status="firing",
            labels=tuple(sorted(labels.items())),
            annotations=(("summary", "soakd test alert: this receiver is reachable"),),
            starts_at=now,
            ends_at=None,
            generator_url=self._generator_url,
        )
        resolved = dataclasses.replace(firing, status="resolved", ends_at=now)
        out: list[tuple[str, bool, str]] = []
        async with aiohttp.ClientSession() as session:
            for st in self._states:
                rx = st.receiver
                attempt = await rx.send(session, [firing], now=now, idempotency_key=f"test-{now}")
                if (
                    attempt.ok and rx.type is ReceiverType.PAGERDUTY
                ):  # do not leave an incident open
                    attempt = await rx.send(session, [resolved], now=now)
                out.append((rx.name, attempt.ok, attempt.detail))
        return out

    def status(self) -> list[ReceiverStatus]:
        """Each receiver's backlog and backoff (BLOCKING: reads the outbox)."""
        now = self._clock.monotonic_ns()
        return [
            ReceiverStatus(
                s.receiver.name,
                self._outbox.pending(s.receiver.name),
                s.failures,
                max(0.0, (s.next_ns - now) / 1e9),
                s.last_detail,
            )
            for s in self._states
        ]

    def close(self) -> None:
        """Close the outbox connection (BLOCKING)."""
        self._outbox.close()


def _alertname(a: AlertSnapshot) -> str:
    return a.label_map.get("alertname", "?")


def _severity_of(labels: Mapping[str, str]) -> str:
    return labels.get("severity", "page")
