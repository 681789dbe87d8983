"""Judging a run: evaluate the alert rules, commit what changed, in that order.

A transition is committed (its alert states, its history and its outbox rows,
one transaction) before anyone is paged for it: the dispatcher sends from the
outbox, and a resumed soakd restores exactly the committed states.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Awaitable, Callable, Sequence

import structlog

from soakd.alerting import Dispatcher
from soakd.baseline.soakfile import read_p99_file
from soakd.errors import StartupError
from soakd.model import Alert, AlertState, AlertTransition, Clock, Op
from soakd.rules import AlertEngine, RuleInputs, gather_inputs
from soakd.spec.model import AlertKind, Spec
from soakd.store import RunStore, write_alerts

log = structlog.get_logger(__name__)

#: Alert transitions kept while their commit keeps failing (a few per state change).
MAX_UNCOMMITTED_ALERTS = 10_000


def bounded_uncommitted(transitions: list[AlertTransition]) -> list[AlertTransition]:
    """At most MAX_UNCOMMITTED_ALERTS transitions; the ones that notify are kept first.

    Only a disk full for a long time with flapping rules gets here: the
    pending/inactive steps (never notified) go first, oldest first, and a
    firing or resolved one only when nothing else is left to drop.
    """
    excess = len(transitions) - MAX_UNCOMMITTED_ALERTS
    if excess <= 0:
        return transitions
    notifying = [t.new is AlertState.FIRING or t.old is AlertState.FIRING for t in transitions]
    drop: set[int] = set()
    for i, notifies in enumerate(notifying):
        if len(drop) >= excess:
            break
        if not notifies:
            drop.add(i)
    kept = [t for i, t in enumerate(transitions) if i not in drop]
    return kept[len(kept) - MAX_UNCOMMITTED_ALERTS :]


def file_baseline_p99(spec: Spec) -> dict[Op, float]:
    """P99 per operation from the first performance_degradation rule's baseline_file."""
    path = next((r.baseline_file for r in spec.alerts if r.baseline_file), None)
    if path is None:
        return {}
    # Read when the spec was validated; a file gone since is a start-up failure.
    try:
        figures = read_p99_file(path)
    except ValueError as exc:
        raise StartupError(f"alerts: baseline_file: {exc}") from None
    return {Op(op): ms for op, ms in figures.items()}


class Judge:
    """Evaluates the rules against the run store and commits their transitions.

    ``flush`` gives the rules the newest data first; ``integrity`` is the
    checker's (lost, corrupted) totals; ``on_alerts`` receives the current
    alerts after every evaluation (the exporter); ``baseline_p99_ms`` is what
    a baseline file says (``file_baseline_p99``), read once at construction.
    """

    def __init__(
        self,
        spec: Spec,
        *,
        store: RunStore,
        engine: AlertEngine,
        dispatcher: Dispatcher,
        clock: Clock,
        flush: Callable[[], Awaitable[bool]],
        integrity: Callable[[], tuple[int, int]],
        on_alerts: Callable[[Sequence[Alert]], None],
        on_leak_trend: Callable[[float | None, float | None], None] | None = None,
        baseline_p99_ms: dict[Op, float] | None = None,
    ) -> None:
        self._spec = spec
        self._store = store
        self._engine = engine
        self._dispatcher = dispatcher
        self._clock = clock
        self._flush = flush
        self._integrity = integrity
        self._on_alerts = on_alerts
        self._on_leak_trend = on_leak_trend
        # The first memory_leak rule's fit is the trend the exporter shows.
        self._leak_rule = next(
            (r.name for r in spec.alerts if r.kind is AlertKind.MEMORY_LEAK), None
        )
        self._baseline_p99_ms = baseline_p99_ms or {}
        self.alerts: list[Alert] = engine.current()
        # Transitions whose commit failed: kept, in order, and committed before any newer one.
        self._uncommitted: list[AlertTransition] = []
        self._lock = asyncio.Lock()
        self._failing = False  # the last alert commit failed: retrying
        self._judging: asyncio.Future[None] | None = None  # the last evaluation's step + commit

    async def evaluate(self) -> None:
        await self._flush()  # rules read the store: give them the newest data
        c = self._spec.consolidation
        lost, corrupted = self._integrity()
        inputs = await asyncio.to_thread(
            gather_inputs,
            self._store,
            self._clock.wall(),
            expected_interval_s=c.interval_s if c else None,
            tolerance_s=c.tolerance_s if c else 5.0,
            integrity_lost=lost,
            integrity_corrupted=corrupted,
            baseline_p99_ms=self._baseline_p99_ms,
            rules=self._spec.alerts,
        )
        # Judging and committing run as a task of their own, shielded: the rules
        # loop is cancelled at shutdown, and a cancel between the engine's step
        # (in a thread, it completes anyway) and the commit would drop the
        # transitions it made, or leave a commit done but not known. The next
        # evaluation (the final one) waits for it first.
        async with self._lock:
            if self._judging is not None and not self._judging.done():
                await asyncio.wait((self._judging,))
            self._judging = asyncio.ensure_future(self._judge(inputs))
            await asyncio.shield(self._judging)

    async def _judge(self, inputs: RuleInputs) -> None:
        # ~70 ms of histogram decoding on a 7-day window: off the loop.
        transitions = await asyncio.to_thread(self._engine.evaluate, inputs)
        self.alerts = self._engine.current()
        self._on_alerts(self.alerts)
        self._report_leak_trend()
        for t in transitions:
            log.warning("alert", rule=t.rule, state=t.new.value, summary=t.summary)
        self._uncommitted = bounded_uncommitted([*self._uncommitted, *transitions])
        if self._uncommitted:
            await self._commit()

    def _report_leak_trend(self) -> None:
        if self._on_leak_trend is None or self._leak_rule is None:
            return
        result = next((r for r in self._engine.last_results if r.rule == self._leak_rule), None)
        if result is None:
            return
        pct, mb_per_h = (
            result.detail.get("judged_pct_per_day"),
            result.detail.get("judged_mb_per_h"),
        )
        self._on_leak_trend(
            pct if isinstance(pct, float) else None,
            mb_per_h * 1e6 / 3600.0 if isinstance(mb_per_h, float) else None,
        )

    async def _commit(self) -> None:
        """Commit the alert states, their history and their outbox rows in one transaction.

        Only a committed transition is ever notified (the dispatcher sends from
        the outbox) and a resumed soakd restores exactly the committed states.
        A failed commit (disk full) keeps the transitions for the next
        evaluation: the outbox ignores a row it already holds, so a retry
        never queues a page twice, and a page is never dropped.
        """
        pending, states = list(self._uncommitted), list(self.alerts)
        try:
            await asyncio.to_thread(
                self._dispatcher.submit,
                pending,
                states,
                record=functools.partial(write_alerts, transitions=pending, states=states),
            )
        except (sqlite3.Error, OSError) as exc:
            # Said once per failing streak, whatever else the full disk logged:
            # these are pages on hold, on-call must be able to see it.
            if not self._failing:
                self._failing = True
                log.error("alert_commit_failed", error=str(exc), kept=len(pending))
            return
        del self._uncommitted[: len(pending)]
        if self._failing:
            self._failing = False
            log.info("alert_commit_recovered", committed=len(pending))
