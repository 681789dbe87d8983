"""The Engram HTTP driver: one keep-alive connection pool, every answer classified.

Speaks exactly shared/engram-api.md over :mod:`soakd.http1` (a purpose-built
HTTP/1.1 client: aiohttp's client cost 6-8x more CPU per request, see
docs/performance.md). Each measured call returns an
:class:`~soakd.model.OpResult` and never raises (only cancellation passes
through): whatever a server sends, or fails to send, becomes an outcome.
Measured operations are never retried, because a retry would hide the very
failure a soak exists to see.

Classification, in order:

- an answer whose status is not 2xx: ``HTTP_ERROR`` with the status, and
  Engram's ``error.code`` when the body is its JSON envelope (framework
  rejections are plain text: ``error_code`` stays ``None``);
- a 2xx answer without the JSON shape Engram sends for that route, or larger
  than ``max_body_bytes``: ``INVALID``;
- no answer within ``timeout_s`` (waiting for a connection, connecting,
  sending or reading): ``TIMEOUT``;
- refused, reset, closed mid-answer, unparseable HTTP: ``CONNECTION``;
- anything else unexpected: ``CONNECTION``, logged once per exception type.

Shape checks are deliberately cheap (``json.loads`` plus key presence): at
thousands of requests per second soakd must not become the bottleneck.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import structlog

from soakd.http1 import Exchange, HttpPool, ThenHook
from soakd.model import Clock, Op, OpResult, Outcome
from soakd.workload import RecallRequest, SpreadRequest, StoreRequest

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "EngramClient",
    "Exchange",
    "call_problem",
    "engram_error_code",
]

log = structlog.get_logger(__name__)

#: Bodies above this are not read: a runaway answer must not eat soakd's memory.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024

_JSON = "Content-Type: application/json\r\n"

#: ``then(result)``: told once how a measured request ended (never if it was cancelled).
ResultHook = Callable[[OpResult], None]


def engram_error_code(body: bytes | None) -> str | None:
    """``error.code`` from Engram's JSON error envelope; ``None`` for anything else."""
    if not body or body[:1] != b"{":
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    err = doc.get("error") if isinstance(doc, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    return code if isinstance(code, str) else None


#: Connections for unmeasured calls: set-up creates 4 spaces at once (soakd.spaces);
#: polls and read-backs are a few a second.
CONTROL_CONNECTIONS = 8


def call_problem(method: str, path: str, ex: Exchange, timeout_s: float) -> str | None:
    """What went wrong with an unmeasured call, in words that name it; ``None`` when 2xx.

    A user reads this (a start-up failure, a log line): never a bare status 0.
    """
    call = f"{method} {path}"
    if ex.failure is Outcome.TIMEOUT:
        return f"{call} timed out after {timeout_s:g} s"
    if ex.failure is not None:
        return f"{call}: {ex.error or 'no answer'}"
    if ex.status is None or not 200 <= ex.status < 300:
        code = engram_error_code(ex.body)
        return f"{call} answered HTTP {ex.status}" + (f" ({code})" if code else "")
    return None


def parse_object(body: bytes | None) -> dict[str, Any] | None:
    """The body as a JSON object, or ``None`` when it is not one."""
    if body is None:
        return None
    try:
        doc = json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        return None
    return doc if isinstance(doc, dict) else None


_Req = TypeVar("_Req")


async def _awaited(
    begin: Callable[[_Req, int, ResultHook], asyncio.Future[None]], req: _Req, intended_ns: int
) -> OpResult:
    """A ``begin_*`` call awaited: its result."""
    got: list[OpResult] = []
    await begin(req, intended_ns, got.append)
    return got[0]


def _has_memories(doc: dict[str, Any]) -> bool:
    return isinstance(doc.get("memories"), dict)


def _has_episodes(doc: dict[str, Any]) -> bool:
    return isinstance(doc.get("episodes"), list)


def _space_header(space: str | None) -> str:
    if space is None:
        return ""
    if "\r" in space or "\n" in space:
        raise ValueError(f"space name contains a line break: {space!r}")
    return f"X-Memory-Space: {space}\r\n"


class EngramClient:
    """Async client for the routes a soak drives (engram-api.md §3-§5).

    Connections are opened on first use (they belong to the running loop);
    use ``async with`` or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        clock: Clock,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        op_timeouts: Mapping[Op, float] | None = None,
        max_connections: int = 64,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._clock = clock
        self._timeout_s = timeout_s
        # Each measured operation's own ``timeout`` from the spec; the others
        # (read-backs, unmeasured calls) use ``timeout_s``.
        self._op_timeouts = dict(op_timeouts or {})
        self._logged_types: set[str] = set()
        # The last problem of each unmeasured route, so a failing poll logs when it
        # starts failing (or fails differently), not every time.
        self._route_problem: dict[str, str | None] = {}
        #: Why the last /health/alive probe was not a 200 (None: it was).
        self.last_alive_problem: str | None = None
        self._probes = 0  # health probes in flight: their refusals are "not up yet"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

        # ``sent_ns`` is when the request went onto a connection, not when we
        # asked for one: waiting for a free pooled connection is client-side
        # queueing and belongs to schedule lag, so service time (done - sent)
        # is what a closed-loop client would have seen.
        def pool(max_conns: int) -> HttpPool:
            return HttpPool(
                base_url,
                clock=clock,
                default_headers=headers,
                max_connections=max_conns,
                max_body_bytes=max_body_bytes,
                ssl_context=ssl_context,
                on_error=self._log_once,
            )

        self._pool = pool(max_connections)
        # Unmeasured calls (set-up, counts, consolidation polls, read-backs) get their own
        # few connections: behind a saturated target the measured pool's queue is tens of
        # seconds long, and a count poll waiting in it timed out for the whole of a real
        # Engram soak (docs/real-engram.md), blinding the leak rule.
        self._control = pool(CONTROL_CONNECTIONS)

    async def __aenter__(self) -> EngramClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._pool.close()
        await self._control.close()

    # -- the one place requests are made --------------------------------------

    def begin(
        self,
        method: str,
        target: str,
        *,
        then: ThenHook,
        space: str | None = None,
        body: bytes | None = None,
        timeout_s: float | None = None,
        control: bool = False,
    ) -> asyncio.Future[None]:
        """Send one request (``target``: encoded path and query); ``then`` gets the answer.

        Returns at once; see :meth:`soakd.http1.HttpPool.start`. Every failure
        reaches ``then`` as an outcome. ``control``: on the unmeasured calls' own pool.
        """
        pool = self._control if control else self._pool
        try:
            headers = _space_header(space)
        except ValueError as exc:
            return pool.fail(exc, then)
        if body is not None:
            headers += _JSON
        return pool.start(
            method,
            target,
            then=then,
            headers=headers,
            body=body,
            timeout_s=self._timeout_s if timeout_s is None else timeout_s,
        )

    async def exchange(
        self,
        method: str,
        target: str,
        *,
        space: str | None = None,
        body: bytes | None = None,
        timeout_s: float | None = None,
    ) -> Exchange:
        """An unmeasured call, awaited: the whole answer. Never raises (bar cancellation)."""
        got: list[Exchange] = []
        await self.begin(
            method,
            target,
            then=got.append,
            space=space,
            body=body,
            timeout_s=timeout_s,
            control=True,
        )
        return got[0]

    def _log_once(self, exc: BaseException, expected: bool) -> None:
        name = type(exc).__qualname__
        if expected and self._probes:
            # A target that is booting refuses connections: that is what the health
            # wait is for, not news (the wait says so itself if it gives up). Not
            # remembered, so the first such failure under load is still logged.
            log.debug("engram_not_answering_yet", error_type=name, error=str(exc)[:300])
            return
        if name in self._logged_types:
            return
        self._logged_types.add(name)
        if expected:
            log.info("engram_request_failed", error_type=name, error=str(exc)[:300])
        else:
            log.warning("engram_unexpected_exception", error_type=name, error=repr(exc)[:300])

    # -- classification ------------------------------------------------------

    @staticmethod
    def _classify(
        op: Op,
        space: str,
        intended_ns: int,
        ex: Exchange,
        doc_ok: bool,
        *,
        memory_id: str | None = None,
    ) -> OpResult:
        if ex.failure is not None:
            outcome = ex.failure
        elif ex.status is None or not 200 <= ex.status < 300:
            return OpResult(
                op, space, intended_ns, ex.sent_ns, ex.done_ns, Outcome.HTTP_ERROR,
                status=ex.status, error_code=engram_error_code(ex.body),
            )  # fmt: skip
        else:
            outcome = Outcome.OK if doc_ok else Outcome.INVALID
        return OpResult(
            op, space, intended_ns, ex.sent_ns, ex.done_ns, outcome,
            status=ex.status, memory_id=memory_id if outcome is Outcome.OK else None,
        )  # fmt: skip

    @staticmethod
    def _is_2xx(ex: Exchange) -> bool:
        return ex.failure is None and ex.status is not None and 200 <= ex.status < 300

    # -- measured operations ---------------------------------------------------
    #
    # Each starts its request and hands the classified result to ``then`` from
    # the connection's callback (no task per request: see soakd.http1); the
    # awaitable forms are for the few callers that want to wait.

    def begin_store(
        self, req: StoreRequest, intended_ns: int, then: ResultHook
    ) -> asyncio.Future[None]:
        """``POST /api/v1/memories/remember``; OK only when Engram echoes our ID."""
        mid = req.memory_id
        answered = self._answered(
            Op.STORE,
            req.space,
            intended_ns,
            then,
            lambda doc: doc.get("memory_id") == mid,
            memory_id=mid,
        )
        return self.begin(
            "POST",
            "/api/v1/memories/remember",
            then=answered,
            space=req.space,
            body=req.body,
            timeout_s=self._op_timeouts.get(Op.STORE),
        )

    def begin_recall(
        self, req: RecallRequest, intended_ns: int, then: ResultHook
    ) -> asyncio.Future[None]:
        """``GET /api/v1/memories/recall`` with a pre-encoded query string."""
        answered = self._answered(Op.RECALL, req.space, intended_ns, then, _has_memories)
        target = f"/api/v1/memories/recall?{req.query_string}"
        return self.begin(
            "GET",
            target,
            then=answered,
            space=req.space,
            timeout_s=self._op_timeouts.get(Op.RECALL),
        )

    def begin_spread(
        self, req: SpreadRequest, intended_ns: int, then: ResultHook
    ) -> asyncio.Future[None]:
        """``POST /api/v1/query`` with a SPREAD query (body and header name the same space)."""
        answered = self._answered(Op.SPREAD, req.space, intended_ns, then, _has_episodes)
        return self.begin(
            "POST",
            "/api/v1/query",
            then=answered,
            space=req.space,
            body=req.body,
            timeout_s=self._op_timeouts.get(Op.SPREAD),
        )

    def _answered(
        self,
        op: Op,
        space: str,
        intended_ns: int,
        then: ResultHook,
        shape_ok: Callable[[dict[str, Any]], bool],
        *,
        memory_id: str | None = None,
    ) -> ThenHook:
        """The hook that classifies one measured answer (a 2xx must have the route's shape)."""

        def answered(ex: Exchange) -> None:
            doc = parse_object(ex.body) if self._is_2xx(ex) else None
            ok = doc is not None and shape_ok(doc)
            then(self._classify(op, space, intended_ns, ex, ok, memory_id=memory_id))

        return answered

    async def store(self, req: StoreRequest, intended_ns: int) -> OpResult:
        return await _awaited(self.begin_store, req, intended_ns)

    async def recall(self, req: RecallRequest, intended_ns: int) -> OpResult:
        return await _awaited(self.begin_recall, req, intended_ns)

    async def spread(self, req: SpreadRequest, intended_ns: int) -> OpResult:
        return await _awaited(self.begin_spread, req, intended_ns)

    async def read_back(
        self, space: str, memory_id: str, intended_ns: int
    ) -> tuple[OpResult, str | None]:
        """``GET /api/v1/memories/{id}``: the result and, on a valid 200, the content."""
        path = f"/api/v1/memories/{quote(memory_id, safe='')}"
        ex = await self.exchange("GET", path, space=space)
        content: str | None = None
        if self._is_2xx(ex):
            doc = parse_object(ex.body)
            value = doc.get("content") if doc is not None else None
            content = value if isinstance(value, str) else None
        result = self._classify(
            Op.READBACK, space, intended_ns, ex, content is not None, memory_id=memory_id
        )
        return result, content

    # -- unmeasured calls ----------------------------------------------------------

    async def alive(self, timeout_s: float = 2.0) -> bool:
        """``GET /health/alive`` answered 200 (else :attr:`last_alive_problem` says why); a
        refused connection is logged at debug only."""
        self._probes += 1
        try:
            ex = await self.exchange("GET", "/health/alive", timeout_s=timeout_s)
        finally:
            self._probes -= 1
        ok = ex.failure is None and ex.status == 200
        problem = call_problem("GET", "/health/alive", ex, timeout_s)
        self.last_alive_problem = None if ok else problem or f"answered {ex.status}"
        return ok

    async def create_space(self, space: str, timeout_s: float = 10.0) -> int:
        """``POST /api/v1/spaces`` (create-or-get); the status, or 0 when nothing answered."""
        ex = await self.create_space_exchange(space, timeout_s)
        return 0 if ex.status is None else ex.status

    async def create_space_exchange(self, space: str, timeout_s: float) -> Exchange:
        """``POST /api/v1/spaces`` (create-or-get): the whole answer, for :func:`call_problem`."""
        body = json.dumps({"id": space}).encode()
        ex = await self.exchange("POST", "/api/v1/spaces", body=body, timeout_s=timeout_s)
        if ex.status is not None and not 200 <= ex.status < 300:
            log.warning(
                "engram_create_space_failed",
                space=space,
                status=ex.status,
                error_code=engram_error_code(ex.body),
            )
        return ex

    async def list_spaces(self, timeout_s: float) -> tuple[frozenset[str] | None, Exchange]:
        """``GET /api/v1/spaces``: the IDs (None unless a 2xx with a list) and the answer."""
        ex = await self.exchange("GET", "/api/v1/spaces", timeout_s=timeout_s)
        doc = parse_object(ex.body) if self._is_2xx(ex) else None
        entries = doc.get("spaces") if doc is not None else None
        if not isinstance(entries, list):
            return None, ex
        ids = (e.get("id") for e in entries if isinstance(e, dict))
        return frozenset(i for i in ids if isinstance(i, str)), ex

    def _note(self, route: str, problem: str | None) -> None:
        """Log an unmeasured route's problem when it starts or changes, and its recovery."""
        before = self._route_problem.get(route)
        if problem == before:
            return
        self._route_problem[route] = problem
        if problem is not None:
            log.info("engram_call_failed", route=route, problem=problem)
        elif before is not None:
            log.info("engram_call_recovered", route=route)

    async def consolidation_generated_at(
        self, space: str, timeout_s: float = 5.0
    ) -> tuple[str | None, int | None]:
        """``GET /api/v1/consolidations?space=S``: (``generated_at``, status); never raises."""
        target = "/api/v1/consolidations?" + urlencode({"space": space})
        ex = await self.exchange("GET", target, space=space, timeout_s=timeout_s)
        if not self._is_2xx(ex):
            if ex.status != 404:  # 404: no snapshot yet, the normal start
                path = "/api/v1/consolidations"
                self._note(f"GET {path}", call_problem("GET", path, ex, timeout_s))
            return None, ex.status
        self._note("GET /api/v1/consolidations", None)
        doc = parse_object(ex.body)
        value = doc.get("generated_at") if doc is not None else None
        return (value if isinstance(value, str) and value else None), ex.status

    async def memory_counts(self, timeout_s: float = 5.0) -> dict[str, int] | None:
        """``GET /api/v1/system/health`` as ``{space: memories}``; ``None`` when unavailable."""
        route = "GET /api/v1/system/health"
        ex = await self.exchange("GET", "/api/v1/system/health", timeout_s=timeout_s)
        # Engram answers 503 with its whole report (counts included) while its own health
        # probe says "unhealthy" (a spreading probe over its latency budget: under load);
        # the counts are still true, and losing them would blind the leak rule.
        unhealthy = ex.failure is None and ex.status == 503
        doc = parse_object(ex.body) if self._is_2xx(ex) or unhealthy else None
        problem = call_problem("GET", "/api/v1/system/health", ex, timeout_s)
        if unhealthy and doc is not None:
            problem = f"{route}: the server reports itself unhealthy (HTTP 503); counts still read"
        self._note(route, problem)
        entries = doc.get("spaces") if doc is not None else None
        if not isinstance(entries, list):
            return None
        counts: dict[str, int] = {}
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            name, memories = entry.get("space"), entry.get("memories")
            if (
                isinstance(name, str)
                and isinstance(memories, int)
                and not isinstance(memories, bool)
            ):
                counts[name] = memories
        return counts
