"""A small keep-alive HTTP/1.1 client for the measured path.

Why not aiohttp here: aiohttp's request machinery (URL objects, header
multidicts, tracing, the response object, the stream reader) costs several
times what this client does per request, and that margin is what lets one
soakd process hold 10,000 ops/s and stay cheaper than the tools it is
compared with (figures in docs/performance.md). It speaks only what soakd
needs from one origin: requests with a known body, answers delimited by
``Content-Length``, ``chunked`` coding or connection close, and keep-alive
reuse. The answer's framing is httptools' (llhttp, the parser uvicorn
uses); the pool, the deadlines, the bounds and the measurement points are
this module's.

What it guarantees, because measurement depends on it:

- ``sent_ns`` is taken when the request's bytes are handed to the socket on
  a connected transport, so waiting for a free connection (or for a new one
  to connect) is client-side queueing, counted as schedule lag by the
  caller, never as service time;
- a request is never re-sent: a kept-alive connection that turns out to be
  dead fails that request (``CONNECTION``), as a soak must see it;
- one deadline covers waiting for a connection, connecting, sending and
  reading the whole answer (``TIMEOUT``);
- memory is bounded: a head larger than ``max_head_bytes`` is a protocol
  error, a body larger than ``max_body_bytes`` is not kept (``body=None``)
  and its connection is closed instead of drained;
- anything unexpected becomes a ``CONNECTION`` outcome through
  ``on_error``; only cancellation propagates.

Why callbacks, not a task per request: at the plan's rates soakd is idle
between arrivals, so every request runs with cold caches and the Python it
runs is what it costs. ``HttpPool.start`` writes the request at once on an
idle kept-alive connection and hands the answer to the caller's ``then``
from ``data_received``: no task, no coroutine frames, no extra passes of the
event loop (a task per request cost measurably more at low rates,
docs/perf-compare.md). Only a request that must wait for a connection, or
open one, runs as a task. ``request`` is ``start`` awaited.

Idle connections are dropped after ``idle_timeout_s`` (15 s, aiohttp's
default) so a server's own keep-alive timeout rarely closes one under us.

Why one module of more than 600 lines: the connection, the pool and the
request share one lifecycle (hand-over, ``sent_ns``, deadline, release or
abort) through each other's private state; split, each half would only
make sense read beside the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from soakd import __version__
from soakd.model import Clock, Outcome

#: Answer heads larger than this are refused (Engram's are a few hundred bytes).
DEFAULT_MAX_HEAD_BYTES = 64 * 1024
#: Chunk-size lines (hex size plus extensions) longer than this on average are malformed.
_MAX_CHUNK_LINE = 4096

#: ``on_error(exc, expected)``: told about each failed request's exception.
ErrorHook = Callable[[BaseException, bool], None]
#: ``then(exchange)``: told once how a request ended (never if it was cancelled).
ThenHook = Callable[["Exchange"], None]
#: A connection's report of its answer: ``(status, body, None)`` or ``(0, None, exc)``.
_AnswerHook = Callable[[int, "bytes | None", "BaseException | None"], None]


class HttpProtocolError(ConnectionError):
    """The server's bytes are not a well-formed HTTP/1.x answer."""


@dataclass(frozen=True, slots=True)
class Exchange:
    """What came back from one HTTP request, before any route-specific check."""

    sent_ns: int
    done_ns: int
    status: int | None = None
    body: bytes | None = None  # None: not kept (too large) or no answer
    failure: Outcome | None = None  # set when there was no usable answer
    error: str | None = None  # why, in words, when there was no answer ("connection refused")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: address, ``Host`` header and path prefix, from a base URL."""

    host: str
    port: int
    host_header: str
    path_prefix: str
    tls: bool

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an absolute http(s) URL: {base_url!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        return cls(parts.hostname, port, parts.netloc, parts.path.rstrip("/"), tls)


def failure_words(exc: BaseException) -> str:
    """What went wrong with a request that got no answer, in a user's words."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


# A connection's states: no request on it, or a request waiting for its answer.
_IDLE, _WAITING = 0, 1


class _Connection(asyncio.Protocol):
    """One TCP connection: writes a request, frames its answer with httptools, reports it.

    httptools (llhttp) does the framing; this class keeps what soakd adds to
    it: the bounds on what a server may make us hold or wait for, the rule
    that an answer is reported once and only after its last byte, and the end
    of a close-delimited body (httptools has no ``feed_eof``, so the framing
    seen in the head says whether end of stream ends the body). Callbacks
    only record; the answer is reported after ``feed_data`` returns, so the
    hook may write the next request on this connection without re-entering
    the parser.
    """

    __slots__ = (
        "_accounted",
        "_chunk_line",
        "_chunked",
        "_chunks",
        "_coded",
        "_done",
        "_extra",
        "_fed",
        "_head_done",
        "_headers",
        "_keep_alive",
        "_length",
        "_max_body",
        "_on_answer",
        "_oversized",
        "_parser",
        "_parts",
        "_pool",
        "_size",
        "_state",
        "_status",
        "_until_close",
        "closed",
        "idle_since",
        "transport",
    )  # fmt: skip

    def __init__(self, pool: HttpPool, max_body: int) -> None:
        self._pool = pool
        self._max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._on_answer: _AnswerHook | None = None
        self._state = _IDLE
        self._keep_alive = False
        self._parser = httptools.HttpResponseParser(self)
        # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length. llhttp
        # refuses the pair by default (a smuggling guard for proxies); a
        # client of one origin reads it as the RFC says, as it always did.
        self._parser.set_dangerous_leniencies(lenient_chunked_length=True)
        self._reset()

    def _reset(self) -> None:
        """Forget the answer (or interim answer) in progress."""
        self._status = 0
        self._parts: list[bytes] = []
        self._size = 0
        self._length: int | None = None
        self._coded = False  # Transfer-Encoding seen
        self._until_close = False
        self._head_done = False
        self._done = False
        self._extra = False  # bytes past the answer's end
        self._oversized = False
        self._headers = 0
        self._chunked = False  # the final coding is chunked
        self._chunks = 0
        self._chunk_line = False  # reading a chunk-size line
        self._fed = 0  # bytes fed since this answer began
        self._accounted = 0  # of which status line, headers and body, as seen in callbacks

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._state == _IDLE:
            # Bytes nobody asked for: the stream is out of step, never reuse it.
            self.abort()
            return
        self._fed += len(data)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self._done:  # junk after a whole answer: answered, but out of step
                self._extra = True
            elif not self._oversized:
                self._fail(_protocol_error(exc))
                return
        except Exception as exc:  # a bug in a callback; on_error is told it is unexpected
            self._fail(exc)
            return
        if self._done:
            self._keep_alive = self._keep_alive and not self._extra
            self._finish(None if self._oversized else self._body())
        elif self._oversized:
            self._finish(None)
            self.abort()
        elif not self._head_done:
            if self._fed > self._pool.max_head_bytes:
                self._fail(HttpProtocolError("answer head too large"))
        elif self._chunked:
            # llhttp reads a chunk-size line or a trailer for as long as it goes
            # on (and httptools keeps a trailer field until it ends): bound the
            # bytes that no callback has accounted for. Chunk data is accounted;
            # what is left is the size lines, the CRLFs and the trailer section.
            # Callbacks carry no offsets, so the bound is on the size lines
            # together (_MAX_CHUNK_LINE each on average), not on each one.
            slack = (self._chunks + 1) * (_MAX_CHUNK_LINE + 4) + 2 * self._headers
            if not self._chunk_line:  # in chunk data, or in the trailer section
                slack += self._pool.max_head_bytes
            if self._fed - self._accounted > slack:
                what = "chunk-size line" if self._chunk_line else "trailer section"
                self._fail(HttpProtocolError(f"{what} too long"))

    def eof_received(self) -> bool | None:
        if self._state != _IDLE:
            self._end_of_stream(ConnectionResetError("the server closed the connection mid-answer"))
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._state != _IDLE:
            if exc is None:
                self._end_of_stream(ConnectionResetError("the connection closed mid-answer"))
            else:
                self._fail(exc)
        self._pool._connection_lost(self)

    def _end_of_stream(self, exc: BaseException) -> None:
        if self._until_close and not self._done:
            self._keep_alive = False
            self._finish(self._body())
        else:
            self._fail(exc)

    # -- httptools callbacks --------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._done:  # a second answer in the same bytes: stop reading it
            raise _PastTheEnd

    def on_status(self, reason: bytes) -> None:
        self._accounted += 15 + len(reason)  # "HTTP/1.1 200 " + reason + CRLF

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:  # a trailer field: bounded in data_received, not kept
            return
        self._accounted += len(name) + len(value) + 3  # ":" and CRLF; spaces not seen
        self._headers += 1
        key = name.lower()
        if key == b"content-length":
            self._length = int(value)  # llhttp has checked it: digits, one value
        elif key == b"transfer-encoding":
            self._coded = True
            self._chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"

    def on_headers_complete(self) -> None:
        self._accounted += 2
        if self._accounted + self._headers > self._pool.max_head_bytes:
            raise HttpProtocolError("answer head too large")
        parser = self._parser
        status = parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:
                raise HttpProtocolError("unexpected protocol switch (101)")
            return  # an interim answer: llhttp ends it here and reads the real one next
        self._status = status
        self._head_done = True
        self._keep_alive = parser.should_keep_alive()
        if status in (204, 304):
            return
        if self._coded:
            # A final coding other than chunked is delimited by close (RFC 9112 §6.3);
            # llhttp frames it so, and end of stream must end it here.
            self._until_close = not self._chunked
            self._chunk_line = self._chunked
        elif self._length is None:
            self._until_close = True
        elif self._length > self._max_body:
            self._oversized = True  # closed, not drained: data_received stops here

    def on_body(self, body: bytes) -> None:
        self._accounted += len(body)
        if self._oversized:
            return
        self._size += len(body)
        if self._size > self._max_body:
            self._oversized = True
            self._parts = []
        else:
            self._parts.append(body)

    def on_chunk_header(self) -> None:
        self._chunks += 1
        self._chunk_line = False

    def on_chunk_complete(self) -> None:
        self._chunk_line = True

    def on_message_complete(self) -> None:
        if not self._head_done:  # the end of an interim (1xx) answer
            fed, accounted = self._fed, self._accounted
            self._reset()
            self._fed = fed - accounted
            return
        self._done = True

    # -- the request side ---------------------------------------------------------

    def send(self, data: bytes, on_answer: _AnswerHook) -> None:
        """Write one request; ``on_answer`` gets its answer or failure, once, unless aborted."""
        assert self.transport is not None and self._state == _IDLE
        self._on_answer = on_answer
        self._state = _WAITING
        self._keep_alive = False
        self.transport.write(data)

    @property
    def reusable(self) -> bool:
        return self._keep_alive and not self.closed and self._state == _IDLE

    @property
    def usable(self) -> bool:
        """Still open, as far as this side knows, and idle: a request may be written on it."""
        transport = self.transport
        return (
            not self.closed
            and transport is not None
            and not transport.is_closing()
            and self._state == _IDLE
        )

    def abort(self) -> None:
        """Close at once; whoever waits on this connection is not told (they gave up)."""
        self._state = _IDLE
        self._on_answer = None
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()

    # -- reporting ----------------------------------------------------------------------

    def _body(self) -> bytes:
        parts = self._parts
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _finish(self, body: bytes | None) -> None:
        # State first, hook last: the hook may release this connection and a
        # new request may be written on it before the hook returns.
        on_answer, self._on_answer = self._on_answer, None
        status = self._status
        self._state = _IDLE
        if body is None:  # not read to the end: the stream cannot be reused
            self._keep_alive = False
        self._reset()
        if on_answer is not None:
            on_answer(status, body, None)

    def _fail(self, exc: BaseException) -> None:
        on_answer, self._on_answer = self._on_answer, None
        self._state = _IDLE
        self._keep_alive = False
        self._reset()
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()
        if on_answer is not None:
            on_answer(0, None, exc)


class _PastTheEnd(Exception):
    """Raised from a callback to stop httptools at bytes past the answer's end."""


def _protocol_error(exc: Exception) -> BaseException:
    """What a parse failure is, told as soakd tells it (a callback's own error as is)."""
    cause = exc.__context__
    if isinstance(exc, httptools.HttpParserUpgrade):
        return HttpProtocolError("unexpected protocol switch (101)")
    if cause is None or isinstance(cause, HttpProtocolError):
        return cause or HttpProtocolError(f"malformed answer: {exc}")
    return cause  # a bug in a callback: on_error is told it is unexpected


class HttpPool:
    """Keep-alive connections to one origin, at most ``max_connections`` open.

    Requests beyond the limit wait for a connection in arrival order; a
    released connection is handed straight to the oldest waiter.
    """

    def __init__(
        self,
        base_url: str,
        *,
        clock: Clock,
        default_headers: dict[str, str] | None = None,
        max_connections: int = 64,
        max_body_bytes: int = 4 * 1024 * 1024,
        max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
        idle_timeout_s: float = 15.0,
        ssl_context: ssl_module.SSLContext | None = None,
        on_error: ErrorHook | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.origin = Origin.parse(base_url)
        self.max_head_bytes = max_head_bytes
        self._clock = clock
        self._max_connections = max_connections
        self._max_body = max_body_bytes
        self._idle_timeout = idle_timeout_s
        self._ssl: ssl_module.SSLContext | None = None
        if self.origin.tls:
            self._ssl = ssl_context or ssl_module.create_default_context()
        self._on_error = on_error
        fixed = {"Host": self.origin.host_header, "User-Agent": f"soakd/{__version__}"}
        fixed.update(default_headers or {})
        for name, value in fixed.items():
            _check_header(name, value)
        self._fixed_headers = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._idle: deque[_Connection] = deque()
        self._all: set[_Connection] = set()
        self._slots = 0  # connections open or being opened
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False
        self._loop_ref: asyncio.AbstractEventLoop | None = None

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._loop_ref is None:
            self._loop_ref = asyncio.get_running_loop()
        return self._loop_ref

    @property
    def open_connections(self) -> int:
        return self._slots

    async def close(self) -> None:
        """Close every connection; requests still in flight fail with ``CONNECTION``."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError("the client is closed"))
        for conn in list(self._all):
            conn._fail(ConnectionAbortedError("the client is closed"))
        # Let the transports run connection_lost before the loop may close.
        for _ in range(2):
            await asyncio.sleep(0)

    # -- requests ---------------------------------------------------------------------

    def start(
        self,
        method: str,
        target: str,
        *,
        then: ThenHook,
        headers: str = "",
        body: bytes | None = None,
        timeout_s: float,
    ) -> asyncio.Future[None]:
        """Send ``method target``; ``then`` gets the whole answer as an :class:`Exchange`.

        Returns at once. The future is done once ``then`` has run (with ``then``'s
        exception, if it raised); cancelling it aborts the request and ``then`` is
        never called. ``target`` is the already-encoded path and query (the
        origin's path prefix is put in front); ``headers`` are extra
        ``Name: value\\r\\n`` lines. Every failure reaches ``then`` as an outcome.
        """
        loop = self._loop
        sent_ns = self._clock.monotonic_ns()
        pending = _Pending(loop=loop)
        try:
            data = self._encode(method, target, headers, body)
            now = loop.time()
            conn = self._take_idle(now)
            if conn is not None:
                self._send(conn, data, now + timeout_s, pending, then)
            else:
                task = loop.create_task(
                    self._send_when_connected(data, now + timeout_s, sent_ns, pending, then)
                )
                pending.on_cancel = task.cancel
        except Exception as exc:  # a bug below us must not stop the run: CONNECTION
            self._deliver(pending, then, self._failed(sent_ns, exc))  # once: no-op if told
        return pending

    def _encode(self, method: str, target: str, headers: str, body: bytes | None) -> bytes:
        if "\n" in target or "\r" in target or " " in target:
            raise ValueError(f"request target contains whitespace: {target[:80]!r}")
        head = f"{method} {self.origin.path_prefix}{target} HTTP/1.1\r\n{self._fixed_headers}"
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
        data = (head + headers + "\r\n").encode("latin-1")
        return data + body if body else data

    def fail(self, exc: BaseException, then: ThenHook) -> asyncio.Future[None]:
        """A request refused before sending (``exc`` says why): ``then`` gets its outcome now."""
        pending = _Pending(loop=self._loop)
        now = self._clock.monotonic_ns()
        self._deliver(pending, then, self._failed(now, exc))
        return pending

    async def request(
        self,
        method: str,
        target: str,
        *,
        headers: str = "",
        body: bytes | None = None,
        timeout_s: float,
    ) -> Exchange:
        """:meth:`start` awaited: the whole answer; never raises (bar cancellation)."""
        got: list[Exchange] = []
        await self.start(
            method, target, then=got.append, headers=headers, body=body, timeout_s=timeout_s
        )
        return got[0]

    def _send(
        self,
        conn: _Connection,
        data: bytes,
        deadline: float,
        pending: _Pending,
        then: ThenHook,
    ) -> None:
        req = _Request(self, conn, pending, then)
        try:
            conn.send(data, req.answered)
        except Exception as exc:  # a transport that refuses the write: never re-sent
            conn.abort()
            self._deliver(pending, then, self._failed(self._clock.monotonic_ns(), exc))
            return
        # The request is on a connected socket now: service time starts here.
        req.sent_ns = self._clock.monotonic_ns()
        req.timer = self._loop.call_at(deadline, req.expire)
        pending.on_cancel = req.abort

    async def _send_when_connected(
        self, data: bytes, deadline: float, sent_ns: int, pending: _Pending, then: ThenHook
    ) -> None:
        """The slow path: wait for a pooled connection (or open one), then send."""
        while True:
            try:
                conn = await self._acquire(deadline)
            except Exception as exc:
                self._deliver(pending, then, self._failed(sent_ns, exc))
                return
            if conn.usable:
                break
            # Handed over open, closed (a reset, the target going down) before
            # this task ran: nothing was sent on it, so take another one. Its
            # slot is freed by connection_lost (now, or when the close lands).
        if pending.done():  # cancelled as the connection arrived: pass it on
            self._release(conn)
            return
        self._send(conn, data, deadline, pending, then)

    def _failed(self, sent_ns: int, exc: BaseException) -> Exchange:
        """The outcome of a request that got no usable answer (``exc`` says why)."""
        done_ns = self._clock.monotonic_ns()
        if isinstance(exc, TimeoutError):  # before OSError: TimeoutError is one
            return Exchange(sent_ns, done_ns, failure=Outcome.TIMEOUT, error="timed out")
        # Anything else, expected or not, must not stop the run: CONNECTION.
        expected = isinstance(exc, ConnectionError | OSError | ssl_module.SSLError)
        self._report(exc, expected=expected)
        return Exchange(sent_ns, done_ns, failure=Outcome.CONNECTION, error=failure_words(exc))

    @staticmethod
    def _deliver(pending: _Pending, then: ThenHook, exchange: Exchange) -> None:
        """Hand ``exchange`` to ``then`` (unless the caller gave up) and settle ``pending``."""
        if pending.done():  # cancelled: the caller is gone
            return
        pending.on_cancel = None
        try:
            then(exchange)
        except Exception as exc:
            pending.set_exception(exc)
        else:
            pending.set_result(None)

    def _report(self, exc: BaseException, *, expected: bool) -> None:
        if self._on_error is not None:
            self._on_error(exc, expected)

    # -- the pool ---------------------------------------------------------------------

    def _take_idle(self, now: float) -> _Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()  # most recently used first: its peer surely still has it open
            if not conn.usable:
                continue
            if now - conn.idle_since > self._idle_timeout:
                conn.abort()
                continue
            return conn
        return None

    async def _acquire(self, deadline: float) -> _Connection:
        if self._closed:
            raise ConnectionError("the client is closed")
        if self._slots < self._max_connections:
            self._slots += 1
            return await self._connect(deadline)
        waiter: asyncio.Future[_Connection | None] = self._loop.create_future()
        self._waiters.append(waiter)
        timer = self._loop.call_at(deadline, _expire, waiter)
        try:
            conn = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed a connection (or a slot) just as we gave up: pass it on.
                given = waiter.result()
                if given is None:
                    self._slot_freed()
                else:
                    self._release(given)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        finally:
            timer.cancel()
        if conn is None:  # a slot was freed for us
            return await self._connect(deadline)
        return conn

    async def _connect(self, deadline: float) -> _Connection:
        """Open a connection in a slot already counted for it."""
        origin = self.origin
        try:
            async with asyncio.timeout_at(deadline):
                _, conn = await self._loop.create_connection(
                    lambda: _Connection(self, self._max_body),
                    origin.host,
                    origin.port,
                    ssl=self._ssl,
                    server_hostname=origin.host if self._ssl is not None else None,
                )
        except BaseException:
            self._slot_freed()
            raise
        if conn.closed:  # lost before we got here: _connection_lost did not count it
            self._slot_freed()
            raise ConnectionResetError("the connection closed as it opened")
        self._all.add(conn)
        if self._closed:
            conn.abort()
            raise ConnectionError("the client is closed")
        return conn

    def _release(self, conn: _Connection) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = self._loop.time()
        self._idle.append(conn)

    def _slot_freed(self) -> None:
        self._slots -= 1
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                self._slots += 1
                waiter.set_result(None)
                return

    def _connection_lost(self, conn: _Connection) -> None:
        if conn not in self._all:
            return
        self._all.discard(conn)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
        self._slot_freed()


class _Pending(asyncio.Future[None]):
    """A request's future: done once its ``then`` ran; ``cancel()`` also aborts the request.

    Tasks cancel the future they await, and ``Sender.drain`` cancels the
    ones it holds, so aborting here needs no done-callback per request.
    """

    on_cancel: Callable[[], object] | None = None

    def cancel(self, msg: Any | None = None) -> bool:
        if not super().cancel(msg):
            return False
        on_cancel, self.on_cancel = self.on_cancel, None
        if on_cancel is not None:
            on_cancel()
        return True


class _Request:
    """One request on the wire: its connection, its deadline and whom to tell."""

    __slots__ = ("conn", "pending", "pool", "sent_ns", "then", "timer")

    def __init__(self, pool: HttpPool, conn: _Connection, pending: _Pending, then: ThenHook):
        self.pool = pool
        self.conn = conn
        self.pending = pending
        self.then = then
        self.sent_ns = 0
        self.timer: asyncio.TimerHandle | None = None

    def answered(self, status: int, body: bytes | None, exc: BaseException | None) -> None:
        """From the connection: the answer is complete, or the connection failed."""
        if self.timer is not None:
            self.timer.cancel()
        pool, conn = self.pool, self.conn
        try:
            if exc is not None:
                exchange = pool._failed(self.sent_ns, exc)
            else:
                done_ns = pool._clock.monotonic_ns()
                if conn.reusable and not pool._closed:
                    pool._release(conn)
                else:
                    conn.abort()
                exchange = Exchange(self.sent_ns, done_ns, status=status, body=body)
        except Exception as bug:  # settle the request whatever happened: never a lost slot
            conn.abort()
            exchange = pool._failed(self.sent_ns, bug)
        pool._deliver(self.pending, self.then, exchange)

    def expire(self) -> None:
        """The deadline passed with no whole answer: the connection cannot be reused."""
        self.conn.abort()
        self.pool._deliver(self.pending, self.then, self.pool._failed(self.sent_ns, TimeoutError()))

    def abort(self) -> None:
        """The caller cancelled: free the connection (and its slot) now."""
        if self.timer is not None:
            self.timer.cancel()
        self.conn.abort()


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _check_header(name: str, value: str) -> None:
    if not name or any(c in name for c in ": \r\n\t") or "\r" in value or "\n" in value:
        raise ValueError(f"invalid header {name!r}")
