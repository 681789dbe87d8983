"""Tests for soakd.http1: the keep-alive HTTP/1.1 client under the measured path.

Real TCP servers on 127.0.0.1 speak the exact bytes each test needs; the
parser's framing is also checked byte-split by hypothesis against a
stand-in transport (the one fake: it only records writes and aborts).
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soakd.clock import SystemClock
from soakd.http1 import HttpPool, HttpProtocolError, _Connection
from soakd.model import Outcome
from soakd.testing import async_wait_for

Answer = Callable[[int, bytes], Awaitable[bytes | None]]
Answered = tuple[int, bytes | None, BaseException | None]

OK_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"


@dataclass
class RawServer:
    """A TCP server whose per-request answer a test writes as raw bytes."""

    answer: Answer
    url: str = ""
    connections: int = 0
    open_now: int = 0
    heads: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                self.heads.append(head)
                out = await self.answer(len(self.heads) - 1, head)
                if out is None:
                    return  # hang up
                writer.write(out)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_now -= 1
            writer.close()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def fixed(raw: bytes) -> Answer:
    async def answer(n: int, head: bytes) -> bytes | None:
        return raw

    return answer


def gated(release: asyncio.Event, *, first_only: bool = False) -> Answer:
    """Answer OK once ``release`` is set (only the first request waits if ``first_only``)."""

    async def answer(n: int, head: bytes) -> bytes | None:
        if n == 0 or not first_only:
            await asyncio.wait_for(release.wait(), timeout=10)
        return OK_ANSWER

    return answer


def pool(url: str, **kwargs: object) -> HttpPool:
    return HttpPool(url, clock=SystemClock(), **kwargs)  # type: ignore[arg-type]


async def test_keep_alive_reuses_one_connection() -> None:
    """Sequential requests share one kept-alive connection; the request is well formed."""
    async with RawServer(fixed(OK_ANSWER)) as srv:
        p = pool(srv.url + "/engram/", default_headers={"Authorization": "Bearer k"})
        results = [
            await p.request("POST", "/api/v1/x?a=1", body=b"{}", timeout_s=5) for _ in range(5)
        ]
        await p.close()
    assert [(r.status, r.body, r.failure) for r in results] == [(200, b"{}", None)] * 5
    assert srv.connections == 1
    lines = srv.heads[0].split(b"\r\n")
    assert lines[0] == b"POST /engram/api/v1/x?a=1 HTTP/1.1"
    assert b"Authorization: Bearer k" in lines
    assert b"Content-Length: 2" in lines
    assert f"Host: {srv.url.removeprefix('http://')}".encode() in lines


async def test_pool_limit_queues_and_queueing_is_not_service_time() -> None:
    """Beyond max_connections requests wait; sent_ns starts when a connection is theirs."""
    release = asyncio.Event()
    async with RawServer(gated(release)) as srv:
        p = pool(srv.url, max_connections=2)
        tasks = [asyncio.create_task(p.request("GET", "/", timeout_s=10)) for _ in range(6)]
        await async_wait_for(lambda: len(srv.heads) == 2, what="two requests in flight")
        assert p.open_connections == 2 and srv.connections == 2
        release.set()
        results = await asyncio.gather(*tasks)
        await p.close()
    assert all(r.status == 200 for r in results)
    assert srv.connections == 2
    first_done = min(r.done_ns for r in results[:2])
    assert all(r.sent_ns >= first_done for r in results[2:])


async def test_timeout_while_queued_frees_the_waiter() -> None:
    """A request that never gets a connection times out; the pool keeps working after."""
    release = asyncio.Event()
    async with RawServer(gated(release, first_only=True)) as srv:
        p = pool(srv.url, max_connections=1)
        busy = asyncio.create_task(p.request("GET", "/", timeout_s=10))
        await async_wait_for(lambda: len(srv.heads) == 1, what="first request in flight")
        queued = await p.request("GET", "/", timeout_s=0.2)
        release.set()
        assert (await busy).status == 200
        after = await p.request("GET", "/", timeout_s=5)
        await p.close()
    assert queued.failure is Outcome.TIMEOUT
    assert after.status == 200 and srv.connections == 1
    assert not p._waiters


async def test_connection_close_and_server_hangup_open_a_new_connection() -> None:
    """``Connection: close`` is honoured; a connection the server closed is not reused."""
    close_answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    async with RawServer(fixed(close_answer)) as srv:
        p = pool(srv.url)
        first = await p.request("GET", "/", timeout_s=5)
        await async_wait_for(lambda: p.open_connections == 0, what="closed connection dropped")
        second = await p.request("GET", "/", timeout_s=5)
        await p.close()
    assert (first.status, second.status) == (200, 200) and first.body == b""
    assert srv.connections == 2


async def test_a_connection_reset_after_its_hand_over_is_not_sent_on() -> None:
    """A queued request handed a connection that is reset before it runs takes a new one.

    Issue 18: ``_release`` gave the connection to the oldest waiter; a reset
    landing before that waiter ran (a target going down) made its request fail
    (or wait out its timeout) on a connection nothing had been sent on.
    """
    release = asyncio.Event()
    async with RawServer(gated(release, first_only=True)) as srv:
        p = pool(srv.url, max_connections=1)

        def reset_after_answer(ex: object) -> None:
            # Runs after the answer handed the connection to the waiter below.
            for conn in list(p._all):
                assert conn.transport is not None
                conn.transport.abort()

        first = p.start("GET", "/", then=reset_after_answer, timeout_s=5)
        await async_wait_for(lambda: len(srv.heads) == 1, what="first request in flight")
        queued = asyncio.create_task(p.request("GET", "/", timeout_s=5))
        await async_wait_for(lambda: len(p._waiters) == 1, what="second request queued")
        release.set()
        await first
        second = await queued
        await p.close()
    assert (second.status, second.failure) == (200, None)
    assert srv.connections == 2 and len(srv.heads) == 2  # sent once, on the new connection


async def test_idle_connections_past_the_idle_timeout_are_dropped() -> None:
    """A connection idle longer than idle_timeout_s is closed, not reused."""
    async with RawServer(fixed(OK_ANSWER)) as srv:
        p = pool(srv.url, idle_timeout_s=0.05)
        await p.request("GET", "/", timeout_s=5)
        loop = asyncio.get_running_loop()
        idle_since = loop.time()
        await async_wait_for(lambda: loop.time() - idle_since > 0.1, what="idle past timeout")
        await p.request("GET", "/", timeout_s=5)
        await p.close()
    assert srv.connections == 2


@pytest.mark.parametrize(
    ("raw", "body"),
    [
        (b"HTTP/1.1 200 OK\r\n\r\nuntil close", b"until close"),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc", b"abc"),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx", b"x"),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 99\r\n\r\n", b""),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n"
            b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n",
            b"abcde",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw bytes", b"raw bytes"),
    ],
    ids=["until-close", "http10", "interim-100", "204", "chunked-trailer", "coding-until-close"],
)
async def test_answer_framings(raw: bytes, body: bytes) -> None:
    """Every way an HTTP/1.x answer can be delimited yields the exact body."""

    async def once(n: int, head: bytes) -> bytes | None:
        return raw if n == 0 else None

    async def answer_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(raw)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_then_close, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        p = pool(url)
        r = await p.request("GET", "/", timeout_s=5)
        await p.close()
    assert (r.failure, r.body) == (None, body)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * 70_000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * 5000,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: " + b"t" * 80_000,
    ],
    ids=[
        "two-lengths", "repeated-length", "negative-length", "no-colon", "obs-fold", "http2",
        "bad-code", "upgrade", "chunk-no-crlf", "huge-head", "huge-chunk-line", "huge-trailer",
    ],
)  # fmt: skip
async def test_malformed_answers_are_connection_errors(raw: bytes) -> None:
    """Answers that are not well-formed HTTP/1.x fail with CONNECTION, reported as expected."""
    seen: list[tuple[BaseException, bool]] = []
    async with RawServer(fixed(raw)) as srv:
        p = HttpPool(
            srv.url, clock=SystemClock(), on_error=lambda e, expected: seen.append((e, expected))
        )
        r = await p.request("GET", "/", timeout_s=5)
        await p.close()
    assert r.failure is Outcome.CONNECTION and r.status is None
    assert len(seen) == 1 and seen[0][1] is True


@pytest.mark.parametrize("leftover", [b"junk", b"HTTP/1", b"\r\nHTTP/1.1 200 OK\r\n"])
async def test_leftover_bytes_make_a_connection_unusable(leftover: bytes) -> None:
    """Bytes after a complete answer mean the stream is out of step: not reused.

    A partial next answer is no parse error to httptools: only the start of a
    second message in the same bytes shows it.
    """
    async with RawServer(fixed(OK_ANSWER + leftover)) as srv:
        p = pool(srv.url)
        first = await p.request("GET", "/", timeout_s=5)
        second = await p.request("GET", "/", timeout_s=5)
        await p.close()
    assert (first.status, second.status) == (200, 200)
    assert srv.connections == 2


async def test_oversized_sized_body_closes_instead_of_draining() -> None:
    """A Content-Length over the limit gives body=None at once and the connection is closed."""
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000
    async with RawServer(fixed(big)) as srv:
        p = pool(srv.url, max_body_bytes=1000)
        r = await p.request("GET", "/", timeout_s=5)
        await async_wait_for(lambda: p.open_connections == 0, what="connection closed")
        await p.close()
    assert (r.status, r.body, r.failure) == (200, None, None)


async def test_until_close_body_over_the_limit_is_not_kept() -> None:
    """A close-delimited body over the limit is cut off, not accumulated."""

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        try:
            for _ in range(1000):  # ~1 MB unless the client hangs up first
                writer.write(b"y" * 1000)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(stream, "127.0.0.1", 0)
    async with server:
        p = pool(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", max_body_bytes=5000)
        r = await p.request("GET", "/", timeout_s=5)
        await p.close()
    assert (r.status, r.body) == (200, None)


async def test_cancelled_request_frees_its_connection() -> None:
    """Cancelling a request mid-answer aborts its connection and frees the slot."""
    async with RawServer(gated(asyncio.Event())) as srv:
        p = pool(srv.url, max_connections=1)
        task = asyncio.create_task(p.request("GET", "/", timeout_s=10))
        await async_wait_for(lambda: len(srv.heads) == 1, what="request in flight")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await async_wait_for(lambda: p.open_connections == 0, what="slot freed")
        await p.close()


async def test_close_fails_queued_requests() -> None:
    """Requests waiting for a connection when the pool closes end as CONNECTION."""
    async with RawServer(gated(asyncio.Event())) as srv:
        p = pool(srv.url, max_connections=1)
        tasks = [asyncio.create_task(p.request("GET", "/", timeout_s=10)) for _ in range(3)]
        await async_wait_for(lambda: len(srv.heads) == 1 and len(p._waiters) == 2)
        await p.close()
        results = await asyncio.gather(*tasks)
    assert [r.failure for r in results] == [Outcome.CONNECTION] * 3


async def test_bad_request_target_is_refused_before_sending() -> None:
    """A target with whitespace (header injection) is never written to the wire."""
    async with RawServer(fixed(OK_ANSWER)) as srv:
        p = pool(srv.url)
        r = await p.request("GET", "/x HTTP/1.1\r\nEvil: 1", timeout_s=5)
        await p.close()
    assert r.failure is Outcome.CONNECTION and srv.heads == []
    with pytest.raises(ValueError):
        pool(srv.url, default_headers={"X": "a\r\nEvil: 1"})


# -- TLS, against a real certificate made by openssl ------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return crt, key


async def test_https_verifies_the_server(cert: tuple[Path, Path]) -> None:
    """https:// works with a trusted certificate and fails (CONNECTION) with an untrusted one."""
    crt, key = cert
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(crt, key)
    srv = RawServer(fixed(OK_ANSWER))
    server = await asyncio.start_server(srv.handle, "127.0.0.1", 0, ssl=server_ctx)
    url = f"https://localhost:{server.sockets[0].getsockname()[1]}"
    async with server:
        trusting = pool(url, ssl_context=ssl.create_default_context(cafile=str(crt)))
        ok = [await trusting.request("GET", "/", timeout_s=5) for _ in range(2)]
        await trusting.close()
        default = pool(url)
        refused = await default.request("GET", "/", timeout_s=5)
        await default.close()
    assert [r.status for r in ok] == [200, 200] and srv.connections >= 1
    assert refused.failure is Outcome.CONNECTION


# -- the parser, byte-split ----------------------------------------------------------------


class RecordingTransport(asyncio.Transport):
    """Stands in for a socket: keeps what is written, notes an abort."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True


bodies = st.binary(min_size=0, max_size=300)


def sized(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def chunked(body: bytes, cuts: list[int], trailer: bool = False) -> bytes:
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    for a, b in itertools.pairwise(points):
        out += b"%x;ext=1\r\n" % (b - a) + body[a:b] + b"\r\n"
    return out + (b"0\r\nX-Trailer: t\r\n\r\n" if trailer else b"0\r\n\r\n")


INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass
class Fed:
    conn: _Connection
    transport: RecordingTransport
    answers: list[Answered]
    pieces: int
    first: int  # the piece after which the first answer was reported (-1: none)


def feed(raw: bytes, split_points: list[int]) -> Fed:
    """Feed ``raw`` split at ``split_points`` to a connection waiting for an answer."""
    cuts = sorted({0, len(raw), *(p % (len(raw) + 1) for p in split_points)})
    answers: list[Answered] = []
    conn = _Connection(pool("http://127.0.0.1:1"), max_body=10_000)
    transport = RecordingTransport()
    conn.connection_made(transport)
    conn.send(b"GET / HTTP/1.1\r\n\r\n", lambda *answer: answers.append(answer))
    first = -1
    for i, (a, b) in enumerate(itertools.pairwise(cuts)):
        if transport.aborted:
            break
        conn.data_received(raw[a:b])
        if answers and first < 0:
            first = i
    return Fed(conn, transport, answers, len(cuts) - 1, first)


@settings(max_examples=300, deadline=None)
@given(
    body=bodies,
    chunk_cuts=st.lists(st.integers(min_value=0), max_size=5),
    split_points=st.lists(st.integers(min_value=0), max_size=8),
    use_chunked=st.booleans(),
    trailer=st.booleans(),
    interim=st.booleans(),
)
def test_any_byte_split_of_an_answer_parses_to_its_body(
    *,
    body: bytes,
    chunk_cuts: list[int],
    split_points: list[int],
    use_chunked: bool,
    trailer: bool,
    interim: bool,
) -> None:
    """However the bytes arrive, a framed answer yields exactly its body, once, at its end.

    Chunked answers carry chunk extensions and maybe a trailer; an interim
    ``100 Continue`` may come first.
    """
    raw = chunked(body, chunk_cuts, trailer) if use_chunked else sized(body)
    fed = feed(INTERIM + raw if interim else raw, split_points)
    assert fed.answers == [(200, body, None)]
    assert fed.first == fed.pieces - 1  # nothing is reported before the answer's last byte
    assert fed.conn.reusable and not fed.transport.aborted


@settings(max_examples=100, deadline=None)
@given(split_points=st.lists(st.integers(min_value=0), max_size=8))
@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * 70_000 + b"\r\n\r\n", "answer head too large"),
        (b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * 70_000, "answer head too large"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * 5000,
            "chunk-size line too long",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: " + b"t" * 80_000,
            "trailer section too long",
        ),
    ],
    ids=["huge-head", "huge-head-unended", "huge-chunk-line", "huge-trailer"],
)
def test_the_bounds_hold_at_any_byte_split(raw: bytes, why: str, split_points: list[int]) -> None:
    """httptools keeps reading a head, a chunk-size line or a trailer as long as it goes
    on: however the bytes arrive, soakd fails the answer and closes the connection."""
    fed = feed(raw, split_points)
    assert [(status, body) for status, body, _ in fed.answers] == [(0, None)]
    assert isinstance(fed.answers[0][2], HttpProtocolError)
    assert str(fed.answers[0][2]) == why
    assert fed.transport.aborted


@settings(max_examples=100, deadline=None)
@given(body=st.binary(min_size=1, max_size=300), split_points=st.lists(st.integers(min_value=0)))
def test_a_close_delimited_body_ends_at_end_of_stream_at_any_split(
    body: bytes, split_points: list[int]
) -> None:
    """httptools has no end-of-stream call: soakd ends a close-delimited body itself."""
    fed = feed(b"HTTP/1.1 200 OK\r\n\r\n" + body, split_points)
    assert fed.answers == []
    fed.conn.eof_received()
    assert fed.answers == [(200, body, None)] and not fed.conn.reusable


def test_end_of_stream_inside_a_sized_body_is_a_failure() -> None:
    """A Content-Length body cut short by the server closing is not an answer."""
    fed = feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", [])
    fed.conn.eof_received()
    assert [(status, body) for status, body, _ in fed.answers] == [(0, None)]
    assert isinstance(fed.answers[0][2], ConnectionResetError)
