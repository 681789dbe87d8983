"""Tests for soakd.engram: the HTTP driver classifies every answer and never raises.

Small aiohttp servers (and raw TCP servers, for broken HTTP) on 127.0.0.1:0
fake the exact shapes of engram-api.md; the real reference target is used
at the end.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import pytest
from aiohttp import web

from soakd.clock import SystemClock
from soakd.engram import EngramClient, engram_error_code
from soakd.model import Op, Outcome
from soakd.reference.harness import ReferenceProcess, reference, start_reference_async
from soakd.spec.model import RecallOptions, SpreadOptions
from soakd.workload import Workload, space_names

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def envelope(code: str, message: str = "boom") -> dict[str, object]:
    """Engram's JSON error envelope."""
    return {
        "error": {
            "code": code,
            "message": message,
            "educational_context": "",
            "cognitive_guidance": "",
        },
        "documentation": {},
    }


@dataclass
class Seen:
    """What the fake server received."""

    method: str
    path: str
    query_string: str  # raw, as sent
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeEngram:
    """A catch-all aiohttp server whose answer each test sets."""

    url: str = ""
    handler: Handler | None = None
    seen: list[Seen] = field(default_factory=list)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path,
                request.rel_url.raw_query_string,
                dict(request.headers),
                body,
            )
        )
        assert self.handler is not None
        return await self.handler(request)


@pytest.fixture
async def fake() -> AsyncIterator[FakeEngram]:
    srv = FakeEngram()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.dispatch)
    # Long recall URLs: raise aiohttp's 8190-byte request-line limit as Engram's hyper does.
    runner = web.AppRunner(app, max_line_size=65536, max_field_size=65536)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    srv.url = f"http://127.0.0.1:{port}"
    yield srv
    await runner.cleanup()


@pytest.fixture
def workload() -> Workload:
    return Workload(3, "t", space_names(2), RecallOptions(), SpreadOptions(max_hops=4))


Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def raw_server(reply: Reply) -> tuple[asyncio.Server, str]:
    """A TCP server speaking whatever ``reply`` writes (for broken HTTP)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await reply(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def stored(memory_id: str) -> web.Response:
    return web.json_response(
        {
            "memory_id": memory_id,
            "storage_confidence": {"value": 0.7, "category": "High", "reasoning": ""},
            "consolidation_state": "Recent",
        },
        status=201,
    )


# -- store ----------------------------------------------------------------------


async def test_store_ok_sends_engram_request(fake: FakeEngram, workload: Workload) -> None:
    """A 201 echoing our ID is OK; the request carries body, space header and bearer key."""

    async def handler(request: web.Request) -> web.Response:
        doc = await request.json()
        return stored(doc["id"])

    fake.handler = handler
    req = workload.store(1)
    async with EngramClient(fake.url, clock=SystemClock(), api_key="engram_key_a_b") as client:
        r = await client.store(req, intended_ns=SystemClock().monotonic_ns())
    assert r.outcome is Outcome.OK and r.status == 201 and r.op is Op.STORE
    assert r.memory_id == req.memory_id and r.space == req.space
    assert r.intended_ns <= r.sent_ns <= r.done_ns
    seen = fake.seen[0]
    assert (seen.method, seen.path) == ("POST", "/api/v1/memories/remember")
    assert seen.headers["X-Memory-Space"] == req.space
    assert seen.headers["Authorization"] == "Bearer engram_key_a_b"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.body == req.body


async def test_no_authorization_without_key(fake: FakeEngram, workload: Workload) -> None:
    """Without an API key no Authorization header is sent."""

    async def handler(request: web.Request) -> web.Response:
        return stored((await request.json())["id"])

    fake.handler = handler
    async with EngramClient(fake.url, clock=SystemClock()) as client:
        await client.store(workload.store(0), 0)
    assert "Authorization" not in fake.seen[0].headers


@dataclass(frozen=True)
class Answer:
    """One canned answer and how the driver must classify it."""

    status: int
    body: str
    outcome: Outcome
    code: str | None = None
    content_type: str = "application/json"


def engram_error(status: int, code: str) -> Answer:
    return Answer(status, json.dumps(envelope(code)), Outcome.HTTP_ERROR, code)


def plain_error(status: int, text: str) -> Answer:
    return Answer(status, text, Outcome.HTTP_ERROR, None, "text/plain")


ANSWERS = [
    engram_error(500, "MEMORY_SYSTEM_ERROR"),
    engram_error(503, "MEMORY_CLUSTER_UNAVAILABLE"),
    engram_error(400, "INVALID_MEMORY_INPUT"),
    plain_error(415, "Expected `Content-Type: application/json`"),
    plain_error(422, "Failed to deserialize: missing field `content`"),
    Answer(400, "{not json", Outcome.HTTP_ERROR),
    Answer(201, "garbage", Outcome.INVALID, None, "text/plain"),
    Answer(201, "[1, 2]", Outcome.INVALID),
    Answer(201, json.dumps({"memory_id": "someone_else"}), Outcome.INVALID),
    Answer(201, "", Outcome.INVALID),
    Answer(200, b"\xff\xfe".decode("latin-1"), Outcome.INVALID),
]


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: f"{a.status}-{a.outcome}-{a.code}")
async def test_store_answers_are_classified(
    fake: FakeEngram, workload: Workload, answer: Answer
) -> None:
    """Error statuses, envelopes, plain-text rejections and bad 2xx bodies get their outcome."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            status=answer.status, text=answer.body, content_type=answer.content_type
        )

    fake.handler = handler
    async with EngramClient(fake.url, clock=SystemClock()) as client:
        r = await client.store(workload.store(2), 0)
    assert r.outcome is answer.outcome
    assert r.status == answer.status
    assert r.error_code == answer.code
    assert r.memory_id is None
    if answer.outcome is Outcome.HTTP_ERROR:
        assert r.error_key == f"http_{answer.status}"


async def test_timeout_is_classified(fake: FakeEngram, workload: Workload) -> None:
    """An answer slower than timeout_s is a TIMEOUT, not an exception."""
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), timeout=10)
        return stored("x")

    fake.handler = handler
    async with EngramClient(fake.url, clock=SystemClock(), timeout_s=0.3) as client:
        r = await client.store(workload.store(0), 0)
        release.set()
    assert r.outcome is Outcome.TIMEOUT and r.status is None
    assert r.error_key == "timeout"


async def test_slow_body_past_timeout_is_a_timeout(workload: Workload) -> None:
    """Headers in time but the body too late is still a TIMEOUT (the whole answer is timed)."""
    done = asyncio.Event()

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        await asyncio.wait_for(done.wait(), timeout=10)

    server, url = await raw_server(reply)
    async with server, EngramClient(url, clock=SystemClock(), timeout_s=0.3) as client:
        r = await client.store(workload.store(0), 0)
        done.set()
    assert r.outcome is Outcome.TIMEOUT


async def test_connection_refused_is_classified(workload: Workload) -> None:
    """Nothing listening is a CONNECTION error."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with EngramClient(f"http://127.0.0.1:{port}", clock=SystemClock()) as client:
        results = [
            await client.store(workload.store(0), 0),
            await client.recall(workload.recall(0), 0),
            (await client.read_back("space_01", "soak_t_0", 0))[0],
        ]
        assert await client.alive(timeout_s=1) is False
        assert await client.create_space("space_01") == 0
        assert await client.consolidation_generated_at("space_01") == (None, None)
        assert await client.memory_counts() is None
    assert [r.outcome for r in results] == [Outcome.CONNECTION] * 3
    assert all(r.error_key == "connection_error" for r in results)


@pytest.mark.parametrize(
    "raw",
    [
        b"",  # closed without a word
        b'HTTP/1.1 201 Created\r\nContent-Length: 500\r\n\r\n{"memory_id":',  # truncated body
        b"this is not http at all\r\n\r\n",  # garbage status line
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n",  # bad chunking
    ],
)
async def test_broken_http_is_a_connection_error(workload: Workload, raw: bytes) -> None:
    """Resets, truncated bodies and non-HTTP answers are CONNECTION errors."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()

    server, url = await raw_server(reply)
    async with server, EngramClient(url, clock=SystemClock(), timeout_s=5) as client:
        r = await client.store(workload.store(0), 0)
    assert r.outcome is Outcome.CONNECTION


async def test_oversized_bodies_are_invalid(fake: FakeEngram, workload: Workload) -> None:
    """A 2xx body over max_body_bytes is not read and counts as INVALID (sized or chunked)."""
    big = json.dumps({"memory_id": workload.memory_id(0), "pad": "x" * 5000}).encode()

    async def sized(request: web.Request) -> web.Response:
        return web.Response(status=201, body=big, content_type="application/json")

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=201)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(big), 1000):
            await resp.write(big[i : i + 1000])
        await resp.write_eof()
        return resp

    async with EngramClient(fake.url, clock=SystemClock(), max_body_bytes=4096) as client:
        fake.handler = sized
        r1 = await client.store(workload.store(0), 0)
        fake.handler = chunked
        r2 = await client.store(workload.store(0), 0)
    assert r1.outcome is Outcome.INVALID and r2.outcome is Outcome.INVALID


async def test_chunked_body_within_limit_is_read(fake: FakeEngram, workload: Workload) -> None:
    """A chunked answer under the limit is read whole and classified on its content."""

    async def chunked(request: web.Request) -> web.StreamResponse:
        body = json.dumps({"memory_id": (await request.json())["id"]}).encode()
        resp = web.StreamResponse(status=201)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(body[:5])
        await resp.write(body[5:])
        await resp.write_eof()
        return resp

    fake.handler = chunked
    async with EngramClient(fake.url, clock=SystemClock()) as client:
        r = await client.store(workload.store(0), 0)
    assert r.outcome is Outcome.OK


async def test_unexpected_exception_never_escapes(
    fake: FakeEngram, workload: Workload, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception type nobody planned for becomes a CONNECTION outcome."""

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug somewhere below us")

    async with EngramClient(fake.url, clock=SystemClock()) as client:
        monkeypatch.setattr(client._pool, "_take_idle", explode)
        r = await client.store(workload.store(0), 0)
        r2 = await client.store(workload.store(1), 0)
    assert r.outcome is Outcome.CONNECTION and r2.outcome is Outcome.CONNECTION


# -- recall, spread, read-back ------------------------------------------------------


async def test_recall_sends_the_long_url_intact(fake: FakeEngram, workload: Workload) -> None:
    """The ~9 KB embedding query reaches the server whole, and Engram's shape is OK."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "memories": {"vivid": [], "associated": [], "reconstructed": []},
                "recall_confidence": {},
                "query_analysis": {},
                "system_message": "",
            }
        )

    fake.handler = handler
    req = workload.recall(3)
    async with EngramClient(fake.url, clock=SystemClock()) as client:
        r = await client.recall(req, 0)
    assert r.outcome is Outcome.OK and r.op is Op.RECALL and r.space == req.space
    seen = fake.seen[0]
    assert seen.path == "/api/v1/memories/recall"
    assert seen.query_string == req.query_string
    assert seen.headers["X-Memory-Space"] == req.space
    assert len(json.loads(parse_qs(seen.query_string)["embedding"][0])) == 768


async def test_recall_wrong_shape_is_invalid(fake: FakeEngram, workload: Workload) -> None:
    """A 200 recall without the memories object is INVALID."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"memories": []})

    fake.handler = handler
    async with EngramClient(fake.url, clock=SystemClock()) as client:
        r = await client.recall(workload.recall(0), 0)
    assert r.outcome is Outcome.INVALID


async def test_spread_ok_and_stock_500(fake: FakeEngram, workload: Workload) -> None:
    """SPREAD posts the query with the space in body and header; stock Engram's 500 is http_500."""
    answer = {"status": 200}

    async def handler(request: web.Request) -> web.Response:
        if answer["status"] == 500:
            return web.json_response(envelope("MEMORY_SYSTEM_ERROR"), status=500)
        return web.json_response(
            {"episodes": [], "aggregate_confidence": {}, "total_count": 0, "execution_time_ms": 1}
        )

    fake.handler = handler
    workload.confirm_stored("space_02", "soak_t_1")
    req = workload.spread(0)
    assert req is not None
    async with EngramClient(fake.url, clock=SystemClock()) as client:
        ok = await client.spread(req, 0)
        answer["status"] = 500
        failed = await client.spread(req, 0)
    assert ok.outcome is Outcome.OK and ok.op is Op.SPREAD
    assert failed.outcome is Outcome.HTTP_ERROR and failed.error_key == "http_500"
    assert failed.error_code == "MEMORY_SYSTEM_ERROR"
    seen = fake.seen[0]
    assert (seen.method, seen.path) == ("POST", "/api/v1/query")
    assert seen.headers["X-Memory-Space"] == "space_02"
    assert json.loads(seen.body) == {
        "query_text": "SPREAD FROM soak_t_1 MAX_HOPS 4 DECAY 0.1 THRESHOLD 0.01",
        "memory_space_id": "space_02",
    }


async def test_read_back_found_and_missing(fake: FakeEngram, workload: Workload) -> None:
    """A 200 memory yields its content; a 404 envelope is HTTP_ERROR 404 MEMORY_NOT_FOUND."""
    req = workload.store(4)

    async def handler(request: web.Request) -> web.Response:
        if request.match_info["tail"].endswith(req.memory_id):
            return web.json_response(
                {
                    "id": req.memory_id,
                    "content": req.content,
                    "confidence": 0.7,
                    "timestamp": "2025-11-21T10:00:00Z",
                    "memory_type": "Episodic",
                }
            )
        return web.json_response(envelope("MEMORY_NOT_FOUND"), status=404)

    fake.handler = handler
    async with EngramClient(fake.url, clock=SystemClock()) as client:
        ok, content = await client.read_back(req.space, req.memory_id, 0)
        missing, none = await client.read_back(req.space, "soak_t_999", 0)
    assert ok.op is Op.READBACK and ok.outcome is Outcome.OK and content == req.content
    assert missing.outcome is Outcome.HTTP_ERROR and missing.status == 404
    assert missing.error_code == "MEMORY_NOT_FOUND" and none is None
    assert fake.seen[0].path == f"/api/v1/memories/{req.memory_id}"
    assert fake.seen[0].headers["X-Memory-Space"] == req.space


# -- unmeasured calls -----------------------------------------------------------------


async def test_unmeasured_calls(fake: FakeEngram) -> None:
    """alive, create_space, consolidation_generated_at and memory_counts read Engram's shapes."""

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/health/alive":
            return web.Response(status=200)
        if request.path == "/api/v1/spaces":
            return web.json_response({"id": "space_01"}, status=201)
        if request.path == "/api/v1/consolidations":
            if request.query.get("space") == "space_01":
                return web.json_response(
                    {"generated_at": "2025-11-21T10:00:00.5Z", "beliefs": [], "stats": {}}
                )
            return web.json_response(envelope("CONSOLIDATION_NOT_FOUND"), status=404)
        if request.path == "/api/v1/system/health":
            return web.json_response(
                {
                    "spaces": [
                        {"space": "space_01", "memories": 12},
                        {"space": "space_02", "memories": 0},
                        {"space": "bad", "memories": "x"},
                        "junk",
                    ]
                }
            )
        return web.Response(status=404)

    fake.handler = handler
    async with EngramClient(fake.url, clock=SystemClock()) as client:
        assert await client.alive() is True
        assert await client.create_space("space_01") == 201
        assert await client.consolidation_generated_at("space_01") == (
            "2025-11-21T10:00:00.5Z",
            200,
        )
        assert await client.consolidation_generated_at("space_02") == (None, 404)
        assert await client.memory_counts() == {"space_01": 12, "space_02": 0}
    create = next(s for s in fake.seen if s.path == "/api/v1/spaces")
    assert create.method == "POST" and json.loads(create.body) == {"id": "space_01"}
    poll = next(s for s in fake.seen if s.path == "/api/v1/consolidations")
    assert poll.query_string == "space=space_01"
    assert poll.headers["X-Memory-Space"] == "space_01"


def test_engram_error_code_only_reads_the_envelope() -> None:
    """error.code is taken only from Engram's envelope shape."""
    assert engram_error_code(json.dumps(envelope("X")).encode()) == "X"
    assert engram_error_code(b'{"error": "flat"}') is None
    assert engram_error_code(b'{"error": {"code": 5}}') is None
    assert engram_error_code(b"Bad Request") is None
    assert engram_error_code(None) is None


# -- against the reference target (a real child process) ---------------------------


@pytest.fixture(scope="module")
def ref() -> Iterator[ReferenceProcess]:
    with reference("--seed", "1") as proc:
        yield proc


@pytest.fixture(scope="module")
def stock_ref() -> Iterator[ReferenceProcess]:
    with reference("--stock") as proc:
        yield proc


async def test_reference_store_read_back_recall_spread(ref: ReferenceProcess) -> None:
    """Against the reference: spaces, 201 stores that read back intact, recall and SPREAD OK."""
    w = Workload(11, "ref-flow", space_names(2), RecallOptions(), SpreadOptions(max_hops=5))
    clock = SystemClock()
    async with EngramClient(ref.url, clock=clock) as client:
        assert await client.alive()
        assert [await client.create_space(s) for s in w.spaces] == [201, 201]
        for k in range(6):
            r = await client.store(w.store(k), clock.monotonic_ns())
            assert (r.outcome, r.status, r.memory_id) == (Outcome.OK, 201, w.memory_id(k))
            w.confirm_stored(r.space, w.memory_id(k))
        for k in range(6):
            back, content = await client.read_back(w.store(k).space, w.memory_id(k), 0)
            assert back.outcome is Outcome.OK and content is not None
            assert w.verify(w.memory_id(k), content)
        by_text = Workload(11, "ref-flow", w.spaces, RecallOptions(by="text"), SpreadOptions())
        recalls = [await client.recall(w.recall(0), 0), await client.recall(by_text.recall(1), 0)]
        assert [r.outcome for r in recalls] == [Outcome.OK, Outcome.OK]
        spread = w.spread(0)
        assert spread is not None
        r = await client.spread(spread, 0)
        assert r.outcome is Outcome.OK and r.status == 200
        counts = await client.memory_counts()
        assert counts is not None and counts["space_01"] == 3 and counts["space_02"] == 3
        generated_at, status = await client.consolidation_generated_at("space_01")
        assert status == 200 and generated_at is not None


async def test_reference_stock_spread_is_http_500(stock_ref: ReferenceProcess) -> None:
    """In stock mode every SPREAD is counted as http_500 MEMORY_SYSTEM_ERROR, never raised."""
    w = Workload(12, "stock", space_names(1), RecallOptions(), SpreadOptions())
    async with EngramClient(stock_ref.url, clock=SystemClock()) as client:
        assert await client.create_space("space_01") == 201
        r = await client.store(w.store(0), 0)
        assert r.outcome is Outcome.OK
        w.confirm_stored("space_01", w.memory_id(0))
        spread = w.spread(0)
        assert spread is not None
        results = [await client.spread(spread, 0) for _ in range(3)]
    assert {(x.outcome, x.error_key, x.error_code) for x in results} == {
        (Outcome.HTTP_ERROR, "http_500", "MEMORY_SYSTEM_ERROR")
    }


async def test_reference_api_key() -> None:
    """With auth on, requests without the key are http_401 and with it OK."""
    key = "engram_key_soak_secret"
    w = Workload(13, "auth", space_names(1), RecallOptions(), SpreadOptions())
    proc = await start_reference_async("--api-key", key)
    try:
        async with EngramClient(proc.url, clock=SystemClock()) as anonymous:
            denied = await anonymous.store(w.store(0), 0)
        async with EngramClient(proc.url, clock=SystemClock(), api_key=key) as client:
            assert await client.alive()
            allowed = await client.store(w.store(0), 0)
    finally:
        await asyncio.to_thread(proc.stop)
    assert denied.error_key == "http_401" and denied.error_code == "UNAUTHORIZED"
    assert allowed.outcome is Outcome.OK


async def test_dropped_get_on_a_kept_alive_connection_is_not_retried() -> None:
    """A GET the server drops on a reused connection is a CONNECTION error, never re-sent."""
    requests: list[int] = []
    answer = json.dumps({"id": "soak_t_0", "content": "x"}).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for n in itertools.count():
                await reader.readuntil(b"\r\n\r\n")
                requests.append(n)
                if n == 1:
                    return  # the second request on this connection: hang up
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(answer)}\r\n"
                writer.write(head.encode() + b"Content-Type: application/json\r\n\r\n" + answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server, EngramClient(url, clock=SystemClock(), timeout_s=5) as client:
        first, _ = await client.read_back("space_01", "soak_t_0", 0)
        second, _ = await client.read_back("space_01", "soak_t_0", 0)
    assert first.outcome is Outcome.OK
    assert second.outcome is Outcome.CONNECTION
    assert requests == [0, 1]  # no third request: nothing was re-sent


async def test_counts_are_read_while_the_reference_reports_itself_unhealthy() -> None:
    """Engram answers /api/v1/system/health 503 with its whole report under load: the
    memory counts in it are still read (the leak rule needs them most then)."""
    w = Workload(13, "unhealthy", space_names(1), RecallOptions(), SpreadOptions())
    with reference("--unhealthy-after", "0.001") as sick:
        async with EngramClient(sick.url, clock=SystemClock()) as client:
            assert await client.create_space("space_01") == 201
            for k in range(3):
                r = await client.store(w.store(k), 0)
                assert r.outcome is Outcome.OK
            health = await client.exchange("GET", "/health", timeout_s=5.0)
            assert health.status == 503
            assert json.loads(health.body or b"{}")["status"] == "unhealthy"
            assert await client.memory_counts() == {"default": 0, "space_01": 3}


async def test_unmeasured_calls_do_not_queue_behind_a_saturated_measured_pool(
    fake: FakeEngram, workload: Workload
) -> None:
    """Seen against the real Engram: with every measured connection busy (the target
    saturated), the memory-count poll waited in the same queue and timed out for the whole
    run. Unmeasured calls have their own connections: the poll answers while every measured
    connection is held."""
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/api/v1/system/health":
            return web.json_response({"spaces": [{"space": "space_01", "memories": 7}]})
        await release.wait()  # every store hangs until the test lets go
        return stored("m")

    fake.handler = handler
    async with EngramClient(fake.url, clock=SystemClock(), max_connections=2) as client:
        held = [client.begin_store(workload.store(k), 0, lambda r: None) for k in range(4)]
        counts = await asyncio.wait_for(client.memory_counts(timeout_s=2.0), 5.0)
        assert counts == {"space_01": 7}
        release.set()
        await asyncio.gather(*held)
