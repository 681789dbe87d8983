"""Bringing the spaces up against a slow server (issue 17): a real reference target.

The reference target's ``--space-create-time`` knob makes a new space take
seconds, as Engram does (engram-api.md §7); existing ones answer at once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import structlog
from aiohttp import web

from soakd.clock import SystemClock
from soakd.engram import EngramClient
from soakd.errors import ExitCode, StartupError
from soakd.reference.harness import ReferenceProcess, start_reference_async
from soakd.spaces import ensure_spaces
from soakd.testing import free_port


@pytest.fixture
async def slow_ref() -> AsyncIterator[ReferenceProcess]:
    """A reference target taking 1.5 s per new space, two at a time."""
    ref = await start_reference_async("--space-create-time", "1.5s")
    try:
        yield ref
    finally:
        ref.stop()


async def test_missing_spaces_are_created_concurrently_and_existing_ones_not_waited_for(
    slow_ref: ReferenceProcess,
) -> None:
    """Four new spaces at 1.5 s each, two at a time, are up in ~3 s (not 6 s one by one);
    each logs how long it took; a second pass lists them and creates nothing."""
    spaces = ["space_01", "space_02", "space_03", "space_04"]
    async with EngramClient(slow_ref.url, clock=SystemClock()) as client:
        with structlog.testing.capture_logs() as logs:
            started = time.monotonic()
            await ensure_spaces(client, spaces, timeout_s=30.0, url=slow_ref.url)
            first = time.monotonic() - started
        ready = [e for e in logs if e["event"] == "space_ready"]
        assert sorted(e["space"] for e in ready) == spaces
        assert all(e["how"].startswith("created in ") for e in ready)
        assert [e["ready"] for e in logs if e["event"] == "spaces_progress"] == [1, 2, 3, 4]
        assert 2.9 <= first < 5.5
        with structlog.testing.capture_logs() as logs:
            started = time.monotonic()
            await ensure_spaces(client, spaces, timeout_s=30.0, url=slow_ref.url)
            second = time.monotonic() - started
        assert second < 1.0
        assert [e["how"] for e in logs if e["event"] == "space_ready"] == ["already there"] * 4


async def test_a_creation_past_its_timeout_names_the_call_and_the_time(
    slow_ref: ReferenceProcess,
) -> None:
    """1.5 s per space against a 0.5 s set-up timeout: StartupError (exit 3) saying which
    call timed out after how long, never "answered 0"."""
    async with EngramClient(slow_ref.url, clock=SystemClock()) as client:
        with pytest.raises(StartupError) as info:
            await ensure_spaces(client, ["space_01"], timeout_s=0.5, url=slow_ref.url)
    message = str(info.value)
    assert "POST /api/v1/spaces timed out after 0.5 s" in message
    assert "space_01" in message and "answered 0" not in message
    assert info.value.exit_code is ExitCode.STARTUP


async def test_refused_connection_says_so() -> None:
    """Nobody listening: the first set-up call fails with "connection refused"."""
    url = f"http://127.0.0.1:{free_port()}"
    async with EngramClient(url, clock=SystemClock()) as client:
        with pytest.raises(StartupError) as info:
            await ensure_spaces(client, ["space_01"], timeout_s=5.0, url=url)
        assert await client.alive() is False
        assert client.last_alive_problem == "GET /health/alive: connection refused"
    assert "GET /api/v1/spaces: connection refused" in str(info.value)
    assert "answered 0" not in str(info.value)


async def test_runtime_polls_log_their_failure_once_in_words() -> None:
    """/api/v1/system/health against nobody: one engram_call_failed naming the call and
    "connection refused", however often it is polled."""
    refused = f"http://127.0.0.1:{free_port()}"
    async with EngramClient(refused, clock=SystemClock()) as down:
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                assert await down.memory_counts() is None
    failed = [e for e in logs if e["event"] == "engram_call_failed"]
    assert [e["problem"] for e in failed] == ["GET /api/v1/system/health: connection refused"]


async def test_an_error_answer_names_the_call_status_and_code() -> None:
    """No space list (404) then a 503 to the creation: the warning says the list was
    missing, and the start fails naming the call, the status and Engram's error code."""

    async def listing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="Not Found")

    async def creating(request: web.Request) -> web.Response:
        body = {"error": {"code": "SERVICE_UNAVAILABLE", "message": "busy"}}
        return web.json_response(body, status=503)

    app = web.Application()
    app.router.add_get("/api/v1/spaces", listing)
    app.router.add_post("/api/v1/spaces", creating)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}"
    try:
        async with EngramClient(url, clock=SystemClock()) as client:
            with structlog.testing.capture_logs() as logs, pytest.raises(StartupError) as info:
                await ensure_spaces(client, ["space_01"], timeout_s=5.0, url=url)
    finally:
        await runner.cleanup()
    assert [e["problem"] for e in logs if e["event"] == "spaces_not_listed"] == [
        "GET /api/v1/spaces answered HTTP 404"
    ]
    assert str(info.value).startswith(
        "POST /api/v1/spaces answered HTTP 503 (SERVICE_UNAVAILABLE) (creating space 'space_01')"
    )
    assert f"is {url} an Engram server?" in str(info.value)
