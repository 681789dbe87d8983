"""Tests for soakd.consolidation: cadence, drift and stalls from polled ``generated_at``.

A small aiohttp server plays Engram's consolidation route; a FakeClock drives
the watcher's polling so minutes of cadence pass in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from aiohttp import web

from soakd.clock import FakeClock, SystemClock
from soakd.consolidation import ConsolidationWatcher, parse_rfc3339
from soakd.engram import EngramClient
from soakd.model import ConsolidationRun, Event, Outcome
from soakd.reference.harness import start_reference_async
from soakd.spec.model import RecallOptions, SpreadOptions
from soakd.testing import async_wait_for
from soakd.workload import Workload

WALL0 = 1_700_000_000.0
S = 1_000_000_000


def rfc3339(wall: float) -> str:
    """Engram-style timestamp with nanoseconds and Z."""
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


@dataclass
class SnapshotServer:
    """Answers GET /api/v1/consolidations?space=S from a per-space table."""

    url: str = ""
    generated: dict[str, str] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)
    polled: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        space = request.query.get("space", "default")
        self.polled.append(space)
        if space in self.broken:
            return web.Response(status=200, text="<html>not json</html>")
        if space not in self.generated:
            return web.json_response({"error": {"code": "CONSOLIDATION_NOT_FOUND"}}, status=404)
        return web.json_response(
            {"generated_at": self.generated[space], "beliefs": [], "stats": {"total_replays": 0}}
        )


@pytest.fixture
async def server() -> AsyncIterator[SnapshotServer]:
    srv = SnapshotServer()
    app = web.Application()
    app.router.add_get("/api/v1/consolidations", srv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield srv
    await runner.cleanup()


@dataclass
class Rig:
    """A running watcher on a fake clock, with what it reported."""

    watcher: ConsolidationWatcher
    clock: FakeClock
    runs: list[ConsolidationRun]
    events: list[Event]
    slot_ns: int

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    async def step(self, slots: int = 1) -> None:
        """Advance one poll slot at a time, waiting for each slot's poll to finish."""
        for _ in range(slots):
            before = self.watcher.polls
            self.clock.advance(self.slot_ns)
            await async_wait_for(
                lambda b=before: self.watcher.polls > b,  # type: ignore[misc]
                interval_s=0.001,
                what="a poll",
            )
            await self.parked()

    async def idle(self, slots: int) -> None:
        """Advance slots in which no poll is due (no space open yet)."""
        for _ in range(slots):
            self.clock.advance(self.slot_ns)
            await self.parked()

    async def parked(self) -> None:
        await async_wait_for(lambda: self.clock.sleepers == 1, interval_s=0.001, what="parked")

    def at(self, seconds: float) -> float:
        """Wall time ``seconds`` after the fake clock's start."""
        return WALL0 + seconds


@contextlib.asynccontextmanager
async def rig(
    url: str,
    spaces: tuple[str, ...] = ("space_01",),
    *,
    interval_s: float = 60.0,
    tolerance_s: float = 5.0,
    poll_interval_s: float = 1.0,
    restore: list[ConsolidationRun] | None = None,
) -> AsyncIterator[Rig]:
    clock = FakeClock(start_ns=0, wall_start=WALL0)
    runs: list[ConsolidationRun] = []
    events: list[Event] = []
    async with EngramClient(url, clock=clock, timeout_s=5) as client:
        watcher = ConsolidationWatcher(
            client,
            spaces,
            interval_s=interval_s,
            poll_interval_s=poll_interval_s,
            tolerance_s=tolerance_s,
            clock=clock,
            on_run=runs.append,
            on_event=events.append,
        )
        if restore:
            watcher.restore(restore)
        task = asyncio.create_task(watcher.run())
        await async_wait_for(lambda: clock.sleepers == 1, what="watcher parked")
        try:
            yield Rig(watcher, clock, runs, events, int(poll_interval_s * S) // len(spaces))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def test_parse_rfc3339_forms() -> None:
    """Z, offsets, nanosecond fractions and naive UTC parse; junk does not."""
    assert parse_rfc3339("2023-11-14T22:13:20Z") == WALL0
    assert parse_rfc3339("2023-11-14T22:13:20.250000000Z") == WALL0 + 0.25
    assert parse_rfc3339("2023-11-15T00:13:20.5+02:00") == WALL0 + 0.5
    assert parse_rfc3339("2023-11-14t22:13:20z") == WALL0
    assert parse_rfc3339("2023-11-14T22:13:20") == WALL0
    assert parse_rfc3339("yesterday") is None
    assert parse_rfc3339("") is None


async def test_no_poll_before_the_first_store(server: SnapshotServer) -> None:
    """A space is never polled before its first store, and is polled after it."""
    server.generated["space_01"] = rfc3339(WALL0)
    async with rig(server.url) as r:
        await r.idle(5)
        assert server.polled == [] and r.watcher.polls == 0
        r.watcher.note_store("space_01")
        await r.step()
        assert server.polled == ["space_01"]


async def test_baseline_runs_intervals_and_drift(server: SnapshotServer) -> None:
    """The first snapshot is a baseline; later ones are runs timed by Engram's timestamps."""
    server.generated["space_01"] = rfc3339(WALL0)
    async with rig(server.url) as r:
        r.watcher.note_store("space_01")
        await r.step()
        assert len(r.runs) == 1 and r.runs[0].interval_s is None
        await r.step(59)
        server.generated["space_01"] = rfc3339(WALL0 + 61.5)
        await r.step(3)
        assert r.runs[-1].interval_s == pytest.approx(61.5)
        assert r.kinds() == []  # 1.5 s off is within the 5 s tolerance
        server.generated["space_01"] = rfc3339(WALL0 + 61.5 + 70)
        await r.step(63)
        assert r.runs[-1].interval_s == pytest.approx(70)
        assert r.kinds() == ["consolidation_drift"]
        drift = r.events[0]
        assert drift.detail["drift_s"] == pytest.approx(10) and drift.detail["space"] == "space_01"
        w = r.watcher
        assert (w.runs_observed, w.baselines, w.stalls) == (2, 1, 0)
        assert w.max_drift_s == pytest.approx(10)
        summary = w.interval_summary()
        assert summary.count == 2 and summary.within_tolerance == 1
        assert summary.min_s == pytest.approx(61.5) and summary.max_s == pytest.approx(70)
        assert w.last_interval_s == pytest.approx(70) and w.intervals == pytest.approx([61.5, 70])


async def test_stall_is_flagged_once_then_recovers(server: SnapshotServer) -> None:
    """No new run past interval + tolerance is one stall event; the next run recovers it."""
    server.generated["space_01"] = rfc3339(WALL0)
    async with rig(server.url) as r:
        r.watcher.note_store("space_01")
        await r.step()  # baseline at t=1
        await r.step(64)  # t=65: exactly interval + tolerance since the baseline
        assert r.kinds() == []
        await r.step(2)  # t=67
        assert r.kinds() == ["consolidation_stalled"]
        assert "no consolidation run observed since the first snapshot" in r.events[0].message
        await r.step(30)  # still stalled: not flagged again
        assert r.kinds() == ["consolidation_stalled"] and r.watcher.stalls == 1
        assert r.watcher.stalled_spaces == ["space_01"]
        server.generated["space_01"] = rfc3339(WALL0 + 90)
        await r.step()
        assert r.kinds() == [
            "consolidation_stalled",
            "consolidation_drift",
            "consolidation_recovered",
        ]
        assert r.watcher.stalled_spaces == []


async def test_no_consolidation_observed_at_all(server: SnapshotServer) -> None:
    """When the route never answers a snapshot, the stall counts from the first store."""
    async with rig(server.url) as r:
        await r.idle(10)  # no store yet: nothing is polled
        r.watcher.note_store("space_01")  # first store at t=10
        await r.step(65)  # t=75: 65 s after the store, not more
        assert r.kinds() == []
        await r.step(2)
        assert r.kinds() == ["consolidation_stalled"]
        assert "no consolidation observed" in r.events[0].message
        assert r.events[0].detail["ever_observed"] is False
        assert r.watcher.poll_errors > 0 and r.runs == []


async def test_polls_are_spread_over_the_interval(server: SnapshotServer) -> None:
    """Each space is polled once per poll interval, one slot after another."""
    spaces = ("space_01", "space_02", "space_03", "space_04")
    for s in spaces:
        server.generated[s] = rfc3339(WALL0)
    async with rig(server.url, spaces, poll_interval_s=2.0) as r:
        for s in spaces:
            r.watcher.note_store(s)
        await r.step(8)  # 8 slots of 0.5 s: two rounds
        assert server.polled == ["space_02", "space_03", "space_04", "space_01"] * 2
        assert len(r.runs) == 4 and all(run.interval_s is None for run in r.runs)


async def test_bad_answers_never_stop_the_watcher(server: SnapshotServer) -> None:
    """A non-JSON 200 or a junk timestamp is a poll error, and watching goes on."""
    server.broken.add("space_01")
    server.generated["space_02"] = "not a time"
    async with rig(server.url, ("space_01", "space_02")) as r:
        r.watcher.note_store("space_01")
        r.watcher.note_store("space_02")
        await r.step(4)
        assert r.watcher.poll_errors == 4 and r.runs == []
        server.broken.clear()
        server.generated["space_01"] = rfc3339(WALL0)
        await r.step(2)
        assert [run.space for run in r.runs] == ["space_01"]


async def test_restore_continues_the_cadence(server: SnapshotServer) -> None:
    """After a resume the last generated_at per space is known: no new baseline, intervals go on."""
    prior = [
        ConsolidationRun("space_01", WALL0 - 100, rfc3339(WALL0 - 120), WALL0 - 120, None),
        ConsolidationRun("space_01", WALL0 - 50, rfc3339(WALL0 - 60), WALL0 - 60, 60.0),
    ]
    server.generated["space_01"] = prior[-1].generated_at
    async with rig(server.url, restore=prior) as r:
        assert r.watcher.runs_observed == 1 and r.watcher.baselines == 1
        await r.step(2)  # polled without a note_store: the space had stores before
        assert r.runs == []
        server.generated["space_01"] = rfc3339(WALL0 + 1)
        await r.step()
        assert r.runs[-1].interval_s == pytest.approx(61)
        assert r.watcher.runs_observed == 2 and r.kinds() == []


# -- against the reference target (a real child process, real time) -----------------


@contextlib.asynccontextmanager
async def live_watcher(
    *args: str, interval_s: float = 0.5, tolerance_s: float = 0.3
) -> AsyncIterator[tuple[ConsolidationWatcher, list[ConsolidationRun], list[Event]]]:
    """A reference target with one stored-into space and a watcher on the system clock."""
    proc = await start_reference_async("--consolidation-interval", f"{interval_s}s", *args)
    runs: list[ConsolidationRun] = []
    events: list[Event] = []
    clock = SystemClock()
    w = Workload(4, "cons", ["space_01"], RecallOptions(), SpreadOptions())
    try:
        async with EngramClient(proc.url, clock=clock, timeout_s=5) as client:
            watcher = ConsolidationWatcher(
                client,
                ["space_01"],
                interval_s=interval_s,
                poll_interval_s=0.05,
                tolerance_s=tolerance_s,
                clock=clock,
                on_run=runs.append,
                on_event=events.append,
            )
            assert await client.create_space("space_01") == 201
            for k in range(3):
                assert (await client.store(w.store(k), 0)).outcome is Outcome.OK
            watcher.note_store("space_01")
            task = asyncio.create_task(watcher.run())
            try:
                yield watcher, runs, events
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await asyncio.to_thread(proc.stop)


@pytest.mark.timing  # a measured median interval
async def test_reference_runs_are_seen_at_its_cadence() -> None:
    """The reference's short consolidation interval is measured from its generated_at."""
    # A wide tolerance: this machine is shared, and the test is about measuring, not judging.
    async with live_watcher(tolerance_s=2.0) as (watcher, runs, events):
        await async_wait_for(lambda: watcher.runs_observed >= 3, what="3 consolidation runs")
        summary = watcher.interval_summary()
        assert summary.p50_s is not None and abs(summary.p50_s - 0.5) < 0.25
        assert runs[0].interval_s is None  # the first snapshot is the baseline
        assert all(run.space == "space_01" for run in runs)
        assert "consolidation_stalled" not in [e.kind for e in events]


@pytest.mark.timing  # a stall is judged against a 0.3 s tolerance in real time
async def test_reference_consolidation_stall_is_flagged() -> None:
    """The reference's consolidation-stall knob is reported as a stall, once."""
    async with live_watcher("--consolidation-stall-after", "1200ms") as (watcher, _, events):
        await async_wait_for(lambda: watcher.stalls == 1, what="a stall")
        stalled = [e for e in events if e.kind == "consolidation_stalled"]
        assert len(stalled) == 1 and stalled[0].detail["space"] == "space_01"


async def test_reference_stock_snapshot_never_changes() -> None:
    """In stock mode generated_at is frozen: a baseline, then 'no run observed since'."""
    async with live_watcher("--stock") as (watcher, runs, events):
        await async_wait_for(lambda: watcher.stalls == 1, what="a stall")
        assert watcher.runs_observed == 0 and len(runs) == 1
        assert "since the first snapshot" in events[-1].message
