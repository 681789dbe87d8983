"""A small keep-alive HTTP/1.1 client for the measured path.

Why not aiohttp here: aiohttp's request machinery (URL objects, header
multidicts, tracing, the response object, the stream reader) costs 70–90 µs of
CPU per request on this machine; this client costs ~12 µs, which is what lets
one soakd process hold 10,000 ops/s and stay cheaper than the tools it is
compared with (docs/performance.md). It speaks only what soakd needs from one
origin: requests with a known body, answers delimited by ``Content-Length``,
``chunked`` coding or connection close, and keep-alive reuse.

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
event loop (a task per request cost ~0.1 ms of CPU per request at 100/s,
docs/perf-compare.md). Only a request that must wait for a connection, or
open one, runs as a task. ``request`` is ``start`` awaited.

Idle connections are dropped after ``idle_timeout_s`` (15 s, aiohttp's
default) so a server's own keep-alive timeout rarely closes one under us.
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

from soakd import __version__
from soakd.model import Clock, Outcome

#: Answer heads larger than this are refused (Engram's are a few hundred bytes).
DEFAULT_MAX_HEAD_BYTES = 64 * 1024
#: A chunk-size line (hex size plus extensions) longer than this is malformed.
_MAX_CHUNK_LINE = 4096
_CRLF = b"\r\n"
_HEAD_END = b"\r\n\r\n"
_HEX = frozenset(b"0123456789abcdefABCDEF")

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


# Parser states of one connection.
_IDLE, _HEAD, _SIZED, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _UNTIL_CLOSE = range(7)


class _Connection(asyncio.Protocol):
    """One TCP connection: writes a request, parses its answer, reports it to a hook."""

    __slots__ = (
        "_buf",
        "_keep_alive",
        "_max_body",
        "_on_answer",
        "_parts",
        "_pool",
        "_remaining",
        "_size",
        "_state",
        "_status",
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
        self._buf = bytearray()
        self._on_answer: _AnswerHook | None = None
        self._state = _IDLE
        self._status = 0
        self._remaining = 0
        self._parts: list[bytes] = []
        self._size = 0
        self._keep_alive = False

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._state == _IDLE:
            # Bytes nobody asked for: the stream is out of step, never reuse it.
            self.abort()
            return
        self._buf += data
        try:
            self._parse()
        except HttpProtocolError as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        if self._state == _UNTIL_CLOSE:
            self._keep_alive = False
            self._finish(bytes(self._buf))
            self._buf.clear()
        elif self._state != _IDLE:
            self._fail(ConnectionResetError("the server closed the connection mid-answer"))
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._state == _UNTIL_CLOSE and exc is None:
            self._keep_alive = False
            self._finish(bytes(self._buf))
        elif self._state != _IDLE:
            self._fail(exc or ConnectionResetError("the connection closed mid-answer"))
        self._pool._connection_lost(self)

    # -- the request side ---------------------------------------------------------

    def send(self, data: bytes, on_answer: _AnswerHook) -> None:
        """Write one request; ``on_answer`` gets its answer or failure, once, unless aborted."""
        assert self.transport is not None and self._state == _IDLE
        self._on_answer = on_answer
        self._state = _HEAD
        self._keep_alive = False
        self.transport.write(data)

    @property
    def reusable(self) -> bool:
        return self._keep_alive and not self.closed and self._state == _IDLE and not self._buf

    @property
    def usable(self) -> bool:
        """Still open, as far as this side knows, and idle: a request may be written on it."""
        transport = self.transport
        return (
            not self.closed
            and transport is not None
            and not transport.is_closing()
            and self._state == _IDLE
            and not self._buf
        )

    def abort(self) -> None:
        """Close at once; whoever waits on this connection is not told (they gave up)."""
        self._state = _IDLE
        self._on_answer = None
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()

    # -- parsing ------------------------------------------------------------------------

    def _finish(self, body: bytes | None) -> None:
        # State first, hook last: the hook may release this connection and a
        # new request may be written on it before the hook returns.
        on_answer, self._on_answer = self._on_answer, None
        self._state = _IDLE
        self._parts = []
        if body is None:  # not read to the end: the stream cannot be reused
            self._keep_alive = False
        if on_answer is not None:
            on_answer(self._status, body, None)

    def _fail(self, exc: BaseException) -> None:
        on_answer, self._on_answer = self._on_answer, None
        self._state = _IDLE
        self._keep_alive = False
        self._buf.clear()
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()
        if on_answer is not None:
            on_answer(0, None, exc)

    def _parse(self) -> None:
        buf = self._buf
        while True:
            state = self._state
            if state == _HEAD:
                end = buf.find(_HEAD_END)
                if end < 0 or end > self._pool.max_head_bytes:
                    if end > 0 or len(buf) > self._pool.max_head_bytes:
                        raise HttpProtocolError("answer head too large")
                    return
                head = bytes(buf[:end])
                del buf[: end + 4]
                self._start_body(head)
            elif state == _SIZED:
                if len(buf) < self._remaining:
                    return
                body = bytes(buf[: self._remaining])
                del buf[: self._remaining]
                self._finish(body)
            elif state == _CHUNK_SIZE:
                end = buf.find(_CRLF)
                if end < 0:
                    if len(buf) > _MAX_CHUNK_LINE:
                        raise HttpProtocolError("chunk-size line too long")
                    return
                size_text = bytes(buf[:end]).split(b";", 1)[0].strip()
                del buf[: end + 2]
                if not size_text or not _HEX.issuperset(size_text):
                    raise HttpProtocolError(f"bad chunk size {size_text[:40]!r}")
                self._remaining = int(size_text, 16)
                if self._remaining == 0:
                    self._state = _TRAILER
                    continue
                self._size += self._remaining
                if self._size > self._max_body:
                    self._finish(None)
                    self.abort()
                    return
                self._state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                if len(buf) < self._remaining + 2:
                    return
                if buf[self._remaining : self._remaining + 2] != _CRLF:
                    raise HttpProtocolError("chunk data not followed by CRLF")
                self._parts.append(bytes(buf[: self._remaining]))
                del buf[: self._remaining + 2]
                self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                end = buf.find(_CRLF)
                if end < 0:
                    if len(buf) > self._pool.max_head_bytes:
                        raise HttpProtocolError("trailer too large")
                    return
                del buf[: end + 2]
                if end == 0:  # the empty line that ends the trailer section
                    self._finish(b"".join(self._parts))
            elif state == _UNTIL_CLOSE:
                if len(buf) > self._max_body:
                    self._finish(None)
                    self.abort()
                return
            else:  # _IDLE: an answer is complete; leftover bytes make the stream unusable
                if buf:
                    self._keep_alive = False
                return

    def _start_body(self, head: bytes) -> None:
        """Parse the status line and headers; choose how the body is delimited."""
        lines = head.split(_CRLF)
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise HttpProtocolError(f"bad status line {lines[0][:80]!r}")
        status = int(code)
        length: int | None = None
        chunked = False
        coded = False
        keep_alive = version == b"HTTP/1.1"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name[-1:] in (b" ", b"\t") or line[:1] in (b" ", b"\t"):
                raise HttpProtocolError(f"bad header line {line[:80]!r}")
            key = name.lower()
            if key == b"content-length":
                value = value.strip()
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise HttpProtocolError(f"bad Content-Length {value[:40]!r}")
                length = int(value)
            elif key == b"transfer-encoding":
                coded = True
                chunked = value.strip().lower().rsplit(b",", 1)[-1].strip() == b"chunked"
            elif key == b"connection":
                tokens = {t.strip() for t in value.lower().split(b",")}
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
        if 100 <= status < 200:
            if status == 101:
                raise HttpProtocolError("unexpected protocol switch (101)")
            return  # an interim answer: the real one follows; stay in _HEAD
        self._status = status
        self._keep_alive = keep_alive
        self._size = 0
        self._parts = []
        if status in (204, 304):
            self._finish(b"")
        elif coded:
            # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and a
            # coding other than a final "chunked" is delimited by close.
            self._keep_alive = self._keep_alive and chunked
            self._state = _CHUNK_SIZE if chunked else _UNTIL_CLOSE
        elif length is not None:
            if length > self._max_body:
                self._finish(None)
                self.abort()
            else:
                self._remaining = length
                self._state = _SIZED
        else:
            self._keep_alive = False
            self._state = _UNTIL_CLOSE


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

    Tasks cancel the future they await, and ``Scheduler.drain`` cancels the
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
