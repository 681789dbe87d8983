"""Tests for soakd.integrity: sampled read-back finds lost writes and corrupted reads."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from soakd.clock import FakeClock, SystemClock
from soakd.engram import EngramClient
from soakd.integrity import IntegrityChecker
from soakd.model import Clock, Event, Op, OpResult, Outcome
from soakd.reference.harness import start_reference_async
from soakd.spec.model import RecallOptions, SpreadOptions
from soakd.testing import async_wait_for, stops_when_cancelled
from soakd.workload import Workload, space_names


@dataclass
class MemoryServer:
    """A tiny remember/get server with knobs to lose, corrupt or fail memories."""

    url: str = ""
    memories: dict[str, str] = field(default_factory=dict)
    lose: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    fail: set[str] = field(default_factory=set)
    not_a_memory: set[str] = field(default_factory=set)
    hang: set[str] = field(default_factory=set)  # answered only once `release` is set
    release: asyncio.Event = field(default_factory=asyncio.Event)
    gets: list[str] = field(default_factory=list)

    async def remember(self, request: web.Request) -> web.Response:
        doc = await request.json()
        if doc["id"] not in self.lose:  # silent loss: still a 201 with the ID
            self.memories[doc["id"]] = doc["content"]
        return web.json_response({"memory_id": doc["id"]}, status=201)

    async def get(self, request: web.Request) -> web.Response:
        memory_id = request.match_info["id"]
        self.gets.append(memory_id)
        if memory_id in self.hang:
            await asyncio.wait_for(self.release.wait(), timeout=30)
        if memory_id in self.fail:
            return web.json_response({"error": {"code": "MEMORY_SYSTEM_ERROR"}}, status=500)
        if memory_id in self.not_a_memory:
            return web.json_response({"id": memory_id})
        if memory_id not in self.memories:
            return web.json_response({"error": {"code": "MEMORY_NOT_FOUND"}}, status=404)
        content = self.memories[memory_id]
        if memory_id in self.corrupt:
            content = content.replace("soak", "sOak", 1)
        return web.json_response({"id": memory_id, "content": content, "confidence": 0.7})


@pytest.fixture
async def server() -> AsyncIterator[MemoryServer]:
    srv = MemoryServer()
    app = web.Application()
    app.router.add_post("/api/v1/memories/remember", srv.remember)
    app.router.add_get("/api/v1/memories/{id}", srv.get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield srv
    await runner.cleanup()


@dataclass
class Rig:
    """A checker wired to a client, with everything it reports collected."""

    checker: IntegrityChecker
    client: EngramClient
    workload: Workload
    sunk: list[OpResult]
    events: list[Event]
    clock: Clock


@contextlib.asynccontextmanager
async def rig(url: str, clock: Clock, **kw: float) -> AsyncIterator[Rig]:
    workload = Workload(5, "it", space_names(3), RecallOptions(), SpreadOptions())
    sunk: list[OpResult] = []
    events: list[Event] = []
    options: dict[str, float] = {"sample_fraction": 1.0, "delay_s": 0.05, "max_pending": 1000}
    options.update(kw)
    async with EngramClient(url, clock=clock, timeout_s=5) as client:
        checker = IntegrityChecker(
            client,
            workload,
            clock,
            sample_fraction=options["sample_fraction"],
            delay_s=options["delay_s"],
            max_pending=int(options["max_pending"]),
            sink=sunk.append,
            on_event=events.append,
        )
        task = asyncio.create_task(checker.run())
        try:
            yield Rig(checker, client, workload, sunk, events, clock)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def store_all(r: Rig, ks: range) -> list[str]:
    """Store each k, feed the result to the checker, return the IDs."""
    ids = []
    for k in ks:
        result = await r.client.store(r.workload.store(k), r.clock.monotonic_ns())
        assert result.outcome is Outcome.OK
        r.checker.on_result(result)
        ids.append(r.workload.memory_id(k))
    return ids


async def test_intact_writes_are_checked(server: MemoryServer) -> None:
    """Every sampled write reads back intact: checked, nothing lost or corrupted."""
    async with rig(server.url, SystemClock()) as r:
        ids = await store_all(r, range(20))
        await async_wait_for(lambda: r.checker.checked == 20, what="20 read-backs")
        assert (r.checker.lost, r.checker.corrupted, r.checker.errors) == (0, 0, 0)
        assert sorted(server.gets) == sorted(ids)
        assert {x.op for x in r.sunk} == {Op.READBACK}
        assert all(x.outcome is Outcome.OK for x in r.sunk) and len(r.sunk) == 20
        assert r.events == [] and r.checker.pending == 0


async def test_lost_corrupted_and_failed_are_told_apart(server: MemoryServer) -> None:
    """A 404 after a 201 is lost, changed content is corrupted, a 500 is only an error."""
    w = Workload(5, "it", space_names(3), RecallOptions(), SpreadOptions())
    server.lose = {w.memory_id(k) for k in (1, 2, 3)}
    server.corrupt = {w.memory_id(4)}
    server.not_a_memory = {w.memory_id(5)}
    server.fail = {w.memory_id(6), w.memory_id(7)}
    async with rig(server.url, SystemClock()) as r:
        await store_all(r, range(10))
        await async_wait_for(lambda: len(r.sunk) == 10, what="10 read-backs")
        c = r.checker
        assert (c.checked, c.lost, c.corrupted, c.errors) == (8, 3, 2, 2)
        assert sorted(c.lost_ids) == sorted(server.lose)
        assert sorted(c.corrupted_ids) == [w.memory_id(4), w.memory_id(5)]
        kinds = sorted(e.kind for e in r.events)
        assert kinds == ["integrity_corrupted_read"] * 2 + ["integrity_lost_write"] * 3
        lost = [x for x in r.sunk if x.error_key == "http_404"]
        assert len(lost) == 3 and all(x.error_code == "MEMORY_NOT_FOUND" for x in lost)


async def test_unreachable_server_is_an_error_not_a_loss() -> None:
    """Read-backs that cannot connect count as errors, never as lost writes."""
    probe = await asyncio.start_server(lambda a, b: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with rig(f"http://127.0.0.1:{port}", SystemClock()) as r:
        for k in range(3):
            now = SystemClock().monotonic_ns()
            r.checker.on_result(
                OpResult(Op.STORE, "space_01", now, now, now, Outcome.OK, 201, None, f"soak_it_{k}")
            )
        await async_wait_for(lambda: r.checker.errors == 3, what="3 errors")
        assert (r.checker.checked, r.checker.lost) == (0, 0)
        assert [x.outcome for x in r.sunk] == [Outcome.CONNECTION] * 3


async def test_read_back_waits_for_the_delay(server: MemoryServer) -> None:
    """Nothing is read back before delay_s has passed on the checker's clock."""
    clock = FakeClock(start_ns=10**12)
    async with rig(server.url, clock, delay_s=3.0) as r:
        result = await r.client.store(r.workload.store(0), clock.monotonic_ns())
        r.checker.on_result(result)
        await async_wait_for(lambda: clock.sleepers == 1, what="checker parked on the delay")
        clock.advance(2_900_000_000)
        assert clock.sleepers == 1  # still parked: 2.9 s is not the 3 s delay
        assert server.gets == []
        clock.advance(200_000_000)
        await async_wait_for(lambda: r.checker.checked == 1, what="read-back after the delay")
        assert r.sunk[0].intended_ns == result.done_ns + 3_000_000_000


def test_sample_is_deterministic_and_proportional() -> None:
    """Selection by hash of the ID takes about the configured fraction, the same each time."""
    w = Workload(5, "it", ["space_01"], RecallOptions(), SpreadOptions())
    ids = [w.memory_id(k) for k in range(4000)]

    def chosen(fraction: float, seed: int = 0) -> set[str]:
        c = IntegrityChecker(
            None,  # type: ignore[arg-type]  # selection never touches the client
            w,
            FakeClock(),
            sample_fraction=fraction,
            delay_s=1,
            max_pending=10,
            sink=lambda r: None,
            seed=seed,
        )
        return {i for i in ids if c.selected(i)}

    quarter = chosen(0.25)
    assert 850 < len(quarter) < 1150
    assert chosen(0.25) == quarter
    assert chosen(0.25, seed=1) != quarter
    assert chosen(0.0) == set() and chosen(1.0) == set(ids)


def test_queue_is_bounded_and_only_ok_stores_enter() -> None:
    """Past max_pending writes are skipped; failed stores and other ops are ignored."""
    w = Workload(5, "it", ["space_01"], RecallOptions(), SpreadOptions())
    c = IntegrityChecker(
        None,  # type: ignore[arg-type]  # on_result never touches the client
        w,
        FakeClock(),
        sample_fraction=1.0,
        delay_s=1,
        max_pending=3,
        sink=lambda r: None,
    )
    for k in range(10):
        c.on_result(OpResult(Op.STORE, "space_01", 0, 0, 0, Outcome.OK, 201, None, f"soak_it_{k}"))
    c.on_result(OpResult(Op.STORE, "space_01", 0, 0, 0, Outcome.TIMEOUT))
    c.on_result(OpResult(Op.STORE, "space_01", 0, 0, 0, Outcome.HTTP_ERROR, 500))
    c.on_result(OpResult(Op.RECALL, "space_01", 0, 0, 0, Outcome.OK, 200, None, "soak_it_99"))
    assert (c.pending, c.skipped) == (3, 7)
    c.restore(checked=10, lost=2, corrupted=1)
    assert (c.checked, c.lost, c.corrupted, c.skipped) == (10, 2, 1, 0)


# -- against the reference target (a real child process) ---------------------------


async def test_reference_write_loss_is_counted_as_lost() -> None:
    """The reference's silent write-loss knob shows up as lost writes, not corruption."""
    proc = await start_reference_async("--write-loss", "0.5", "--seed", "3")
    try:
        async with rig(proc.url, SystemClock()) as r:
            for space in r.workload.spaces:
                assert await r.client.create_space(space) == 201
            await store_all(r, range(40))
            await async_wait_for(lambda: r.checker.checked == 40, what="40 read-backs")
            c = r.checker
            assert 5 < c.lost < 35 and c.corrupted == 0 and c.errors == 0
            assert len(c.lost_ids) == c.lost
            assert sum(1 for x in r.sunk if x.outcome is Outcome.OK) == 40 - c.lost
    finally:
        await asyncio.to_thread(proc.stop)


async def test_reference_deduplicated_write_is_lost() -> None:
    """A store whose embedding duplicates an earlier one is de-duplicated by the target: lost."""
    proc = await start_reference_async()
    try:
        async with rig(proc.url, SystemClock()) as r:
            w = r.workload
            first, second = w.store(0), w.store(3)  # both go to space_01
            twin = json.loads(first.body)
            twin.update(id=second.memory_id, content=second.content)
            clone = dataclasses.replace(second, body=json.dumps(twin).encode())
            for req in (first, clone):
                result = await r.client.store(req, r.clock.monotonic_ns())
                assert result.outcome is Outcome.OK and result.status == 201
                r.checker.on_result(result)
            await async_wait_for(lambda: r.checker.checked == 2, what="2 read-backs")
            assert r.checker.lost == 1 and r.checker.lost_ids == [second.memory_id]
    finally:
        await asyncio.to_thread(proc.stop)


async def test_unjudged_read_backs_survive_a_restart(server: MemoryServer) -> None:
    """Queued and on-the-wire read-backs go into the snapshot; a new checker judges them."""
    w = Workload(5, "it", space_names(3), RecallOptions(), SpreadOptions())
    server.lose = {w.memory_id(2)}
    server.hang = {w.memory_id(0)}
    clock = FakeClock(start_ns=10**12)
    async with rig(server.url, clock, delay_s=3.0) as first:
        await store_all(first, range(1))
        clock.advance(3 * 10**9)  # k=0 is due: it goes on the wire and hangs there
        await async_wait_for(lambda: server.gets == [w.memory_id(0)], what="k=0 on the wire")
        await store_all(first, range(1, 4))  # queued, due in 3 s
        rows = first.checker.snapshot(clock.monotonic_ns(), clock.wall())
        assert (first.checker.checked, first.checker.pending, first.checker.in_flight) == (0, 3, 1)
        server.release.set()
    assert [r[1] for r in rows] == [w.memory_id(k) for k in range(4)]
    assert rows[0][2] == clock.wall() and [r[2] for r in rows[1:]] == [clock.wall() + 3.0] * 3
    server.hang, server.gets = set(), []
    async with rig(server.url, SystemClock()) as second:
        later = clock.wall() + 10.0  # restarted after every one of them fell due
        second.checker.restore_pending(rows, second.clock.monotonic_ns(), later)
        assert second.checker.restored == 4
        await async_wait_for(lambda: len(second.sunk) == 4, what="restored read-backs")
        c = second.checker
        assert (c.checked, c.lost, c.corrupted, c.errors) == (4, 1, 0, 0)
        assert c.lost_ids == [w.memory_id(2)]
        assert sorted(server.gets) == sorted(r[1] for r in rows)
    async with rig(server.url, SystemClock(), max_pending=2) as small:
        small.checker.restore_pending(rows, small.clock.monotonic_ns(), later)
        assert (small.checker.restored, small.checker.skipped) == (2, 2)
        assert small.checker.pending + small.checker.in_flight == 2


async def test_restored_read_backs_keep_their_due_time(server: MemoryServer) -> None:
    """A read-back restored before it falls due waits for its time, on the new clock."""
    w = Workload(5, "it", space_names(3), RecallOptions(), SpreadOptions())
    async with rig(server.url, SystemClock()) as writer:
        await store_all(writer, range(2))  # the memories exist on the server
        await async_wait_for(lambda: writer.checker.checked == 2, what="first read-backs")
    server.gets = []
    clock = FakeClock(start_ns=5 * 10**12, wall_start=1_800_000_000.0)
    now_wall = clock.wall()
    rows = [
        ("space_01", w.memory_id(0), now_wall - 1.0),
        ("space_02", w.memory_id(1), now_wall + 3.0),
    ]
    async with rig(server.url, clock) as r:
        r.checker.restore_pending(rows, clock.monotonic_ns(), now_wall)
        await async_wait_for(lambda: r.checker.checked == 1, what="the overdue read-back")
        assert server.gets == [w.memory_id(0)] and r.checker.pending == 1
        clock.advance(2_900_000_000)  # not yet due: the checker stays parked on the clock
        await async_wait_for(lambda: clock.sleepers == 1, what="the checker asleep")
        assert r.checker.pending == 1 and r.checker.checked == 1
        assert server.gets == [w.memory_id(0)]
        clock.advance(100_000_000)
        await async_wait_for(lambda: r.checker.checked == 2, what="the second at its due time")
        assert server.gets == [w.memory_id(0), w.memory_id(1)]


async def test_run_stops_when_cancelled_as_a_write_wakes_it() -> None:
    """Cancelling run() ends it even when the cancel lands as a new write wakes its idle wait.

    The cancel comes 0, 1, 2, ... loop steps after the write. Python 3.11's ``wait_for``
    returned normally when both landed in one loop pass, and the loop went on waiting for
    the write to come due, cancelled or not (issue 19).
    """
    w = Workload(5, "it", ["space_01"], RecallOptions(), SpreadOptions())
    kept_running: list[int] = []
    for steps in range(12):
        c = IntegrityChecker(
            None,  # type: ignore[arg-type]  # nothing comes due: the client is never used
            w,
            FakeClock(),
            sample_fraction=1.0,
            delay_s=60,
            max_pending=10,
            sink=lambda r: None,
        )
        task = asyncio.create_task(c.run())
        for _ in range(5):  # into the idle wait
            await asyncio.sleep(0)
        c.on_result(OpResult(Op.STORE, "space_01", 0, 0, 0, Outcome.OK, 201, None, "soak_it_1"))
        for _ in range(steps):
            await asyncio.sleep(0)
        if not await stops_when_cancelled(task):
            kept_running.append(steps)
    assert kept_running == [], f"run() went on after a cancel {kept_running} steps after a write"
