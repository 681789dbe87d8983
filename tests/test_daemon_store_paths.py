"""A run's paths into the run store (issue 18): one writer, fresh seed IDs, bounded retries."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import sqlite3
import threading
import time
from pathlib import Path

from soakd.alerting import Dispatcher
from soakd.clock import SystemClock
from soakd.driver import SEED_K_BASE, seed_k
from soakd.flusher import Flusher, storage_hint
from soakd.judge import MAX_UNCOMMITTED_ALERTS, Judge, bounded_uncommitted
from soakd.model import AlertState, AlertTransition, Event, EventKind, RunInfo
from soakd.rules import AlertEngine, RuleInputs
from soakd.spec import load_spec_text
from soakd.spec.model import AlertKind, AlertRuleSpec
from soakd.store import Batch, RunStore
from soakd.testing import async_wait_for

CRASH = AlertRuleSpec("crash", AlertKind.CRASH, 0.0)
SPEC = "duration: 1m\nworkload:\n  - {operation: store, rate: 10}\n"


class GatedStore(RunStore):
    """A real run store whose first write is held (up to 1 s) until a second write starts.

    That is the interleaving two unserialised flushes can take: the older batch
    reaches SQLite last.
    """

    entered = threading.Event()
    gate = threading.Event()
    calls = 0

    def write(self, batch: Batch) -> None:
        type(self).calls += 1
        if type(self).calls == 1:
            self.entered.set()
            self.gate.wait(1.0)
        else:
            self.gate.set()
        super().write(batch)


def _info() -> RunInfo:
    return RunInfo(
        run_id="r1",
        spec_fingerprint="fp",
        spec_text=SPEC,
        started_at=1000.0,
        planned_duration_s=60.0,
        target_url="http://127.0.0.1:1",
    )


async def test_overlapping_flushes_never_write_older_counters_last(tmp_path: Path) -> None:
    """Two flushes at once (the flush loop and an evaluation): the last counters win.

    Issue 18: the flush ran from several tasks without a lock and writes
    absolute counters, so the older of two overlapping flushes could land last
    and move a counter (the next k of a schedule, integrity totals) backwards.
    """
    RunStore.create(tmp_path, _info()).close()
    conn = RunStore.open(tmp_path)._conn
    store = GatedStore(tmp_path, conn)
    counter = itertools.count(1)

    async def no_room_needed() -> None:
        raise AssertionError("the writes succeed")

    flusher = Flusher(
        store,
        clock=SystemClock(),
        state_dir=tmp_path,
        counters=lambda: {"next_k_store": next(counter)},
        pending=lambda *_: None,
        status=lambda: {},
        emit=lambda _: None,
        on_failing=no_room_needed,
    )
    first = asyncio.create_task(flusher.flush())
    await async_wait_for(store.entered.is_set, what="the first flush inside its write")
    second = asyncio.create_task(flusher.flush())
    assert all(await asyncio.gather(first, second))
    assert store.counters()["next_k_store"] == 2
    store.close()


def test_seed_stores_of_every_segment_get_fresh_ids_in_every_space() -> None:
    """Each resume (segment) seeds with new ks, one per space, never a measured k's range.

    Issue 18: the seed stores used SEED_K_BASE + i on every resume, so the
    same memory IDs were stored again, against the rule that an ID is never reused.
    """
    spaces = 3
    seen: set[int] = set()
    for segment in range(50):
        ks = [seed_k(segment, i, spaces) for i in range(spaces)]
        assert {k % spaces for k in ks} == set(range(spaces))
        assert not seen & set(ks)
        seen.update(ks)
    assert min(seen) == SEED_K_BASE


def _t(i: int, old: AlertState, new: AlertState) -> AlertTransition:
    return AlertTransition(float(i), "r", {"i": str(i)}, old, new, None, "")


def test_uncommitted_alert_transitions_stay_bounded_and_keep_the_pages() -> None:
    """A disk full for long: what is never notified goes first; no page is dropped for it."""
    quiet = [_t(i, AlertState.INACTIVE, AlertState.PENDING) for i in range(MAX_UNCOMMITTED_ALERTS)]
    pages = [_t(-1, AlertState.PENDING, AlertState.FIRING)]
    kept = bounded_uncommitted([*pages, *quiet, *pages])
    assert len(kept) == MAX_UNCOMMITTED_ALERTS
    assert kept[0] is pages[0] and kept[-1] is pages[0]
    assert bounded_uncommitted(pages) == pages


def test_only_a_full_disk_is_blamed_on_the_disk() -> None:
    """A failed write names the disk only when SQLite or the OS says it is full (issue 18)."""
    assert "disk full" in storage_hint(sqlite3.OperationalError("database or disk is full"))
    assert "disk full" in storage_hint(OSError(errno.ENOSPC, "No space left on device"))
    wrong = storage_hint(sqlite3.OperationalError("table samples has 16 columns but 20 values"))
    assert "disk" not in wrong and "bug" in wrong
    assert "I/O" in storage_hint(sqlite3.OperationalError("disk I/O error"))


class HeldEngine(AlertEngine):
    """A real engine whose evaluation waits (in its thread) until the test lets it go on."""

    entered = threading.Event()
    proceed = threading.Event()

    def evaluate(self, inputs: RuleInputs) -> list[AlertTransition]:
        self.entered.set()
        self.proceed.wait(5.0)
        return super().evaluate(inputs)


async def test_an_evaluation_cancelled_mid_way_still_commits_its_transitions(
    tmp_path: Path,
) -> None:
    """The rules loop cancelled at shutdown while the engine steps: the page is not lost.

    The engine's step runs in a thread and completes anyway; before, the
    transitions it returned to a cancelled caller were dropped, and the final
    evaluation saw firing -> firing (no transition): the page never went out.
    """
    spec = load_spec_text(SPEC)
    store = RunStore.create(tmp_path, _info())
    store.write(Batch(events=[Event(time.time(), EventKind.TARGET_CRASH, "exit -9")]))
    clock = SystemClock()
    dispatcher = Dispatcher(
        [], db_path=store.db_path, base_labels={}, generator_url="", clock=clock
    )

    async def no_flush() -> bool:
        return True

    judge = Judge(
        spec,
        store=store,
        engine=HeldEngine([CRASH], base_labels={"run_id": "r1"}),
        dispatcher=dispatcher,
        clock=clock,
        flush=no_flush,
        integrity=lambda: (0, 0),
        on_alerts=lambda _: None,
    )
    cancelled = asyncio.create_task(judge.evaluate())
    await async_wait_for(HeldEngine.entered.is_set, what="the engine stepping")
    cancelled.cancel()
    HeldEngine.proceed.set()
    with contextlib.suppress(asyncio.CancelledError):
        await cancelled
    await judge.evaluate()  # the final evaluation
    firing = [t for t in store.alert_history() if t.new is AlertState.FIRING]
    assert [t.rule for t in firing] == ["crash"]
    assert [a.state for a in store.alert_states() if a.rule == "crash"] == [AlertState.FIRING]
    dispatcher.close()
    store.close()


async def test_the_memory_leak_rules_fit_reaches_the_exporters_growth_gauges(
    tmp_path: Path,
) -> None:
    """Anonymous memory grows 2 MB a minute: the exporter's growth gauges show the rule's fit.

    Before, nothing called ``Exporter.set_leak_trend`` and the Grafana panel stayed empty.
    """
    from soakd.clock import FakeClock
    from soakd.exporter import Exporter
    from soakd.model import Sample

    spec = load_spec_text(
        "duration: 20m\nworkload:\n  - {operation: store, rate: 10}\n"
        'alerts:\n  - memory_leak: "RSS increases >10% per day"\n'
    )
    info = _info()
    store = RunStore.create(tmp_path, info)
    t0 = info.started_at
    growth_per_s = 2e6 / 60
    store.write(
        Batch(
            samples=[
                Sample(
                    t=t0 + s,
                    pid=7,
                    rss_bytes=int(1e8 + growth_per_s * s),
                    rss_anon_bytes=int(1e8 + growth_per_s * s),
                    rss_file_bytes=0,
                )
                for s in range(0, 1200, 5)
            ]
        )
    )
    clock = FakeClock(wall_start=t0 + 1200)
    dispatcher = Dispatcher(
        [], db_path=store.db_path, base_labels={}, generator_url="", clock=clock
    )
    exporter = Exporter(run_id="r1", target=info.target_url, status=dict)

    async def no_flush() -> bool:
        return True

    engine = AlertEngine(spec.alerts, base_labels={"run_id": "r1"})
    judge = Judge(
        spec,
        store=store,
        engine=engine,
        dispatcher=dispatcher,
        clock=clock,
        flush=no_flush,
        integrity=lambda: (0, 0),
        on_alerts=exporter.set_alerts,
        on_leak_trend=exporter.set_leak_trend,
    )
    await judge.evaluate()
    fit = next(r for r in engine.last_results if r.rule == "memory_leak").detail
    ratio = exporter.registry.get_sample_value("soakd_target_memory_growth_ratio_per_day")
    per_s = exporter.registry.get_sample_value("soakd_target_memory_growth_bytes_per_second")
    assert isinstance(fit["judged_pct_per_day"], float) and fit["judged_pct_per_day"] > 10
    assert ratio == fit["judged_pct_per_day"] / 100
    assert per_s is not None and abs(per_s - growth_per_s) < 0.01 * growth_per_s
    dispatcher.close()
    store.close()
