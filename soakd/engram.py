"""The Engram HTTP driver: one aiohttp session, every answer classified.

Speaks exactly shared/engram-api.md. Each measured call returns an
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
- no answer within ``timeout_s`` (connecting, sending or reading): ``TIMEOUT``;
- refused, reset, closed mid-answer, unparseable HTTP: ``CONNECTION``;
- anything else unexpected: ``CONNECTION``, logged once per exception type.

Shape checks are deliberately cheap (``json.loads`` plus key presence): at
hundreds of requests per second soakd must not become the bottleneck.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog
from yarl import URL

from soakd.model import Clock, Op, OpResult, Outcome
from soakd.workload import RecallRequest, SpreadRequest, StoreRequest

log = structlog.get_logger(__name__)

#: Bodies above this are not read: a runaway answer must not eat soakd's memory.
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024

_JSON_HEADERS = {"Content-Type": "application/json"}
_READ_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Exchange:
    """What came back from one HTTP request, before the route's shape check."""

    sent_ns: int
    done_ns: int
    status: int | None = None
    body: bytes | None = None  # None: not read (too large) or no answer
    failure: Outcome | None = None  # set when there was no usable answer


def _timeout(total_s: float) -> aiohttp.ClientTimeout:
    # aiohttp rounds deadlines of 5 s and more up to a whole second of loop
    # time; a huge ceil_threshold keeps the configured timeout exact.
    return aiohttp.ClientTimeout(total=total_s, ceil_threshold=1e9)


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


def parse_object(body: bytes | None) -> dict[str, Any] | None:
    """The body as a JSON object, or ``None`` when it is not one."""
    if body is None:
        return None
    try:
        doc = json.loads(body)
    except ValueError:  # includes UnicodeDecodeError
        return None
    return doc if isinstance(doc, dict) else None


class EngramClient:
    """Async client for the routes a soak drives (engram-api.md §3-§5).

    The session is created on first use (it must belong to the running loop);
    use ``async with`` or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        clock: Clock,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        max_connections: int = 64,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._clock = clock
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = _timeout(timeout_s)
        self._max_connections = max_connections
        self._max_body = max_body_bytes
        self._session: aiohttp.ClientSession | None = None
        self._logged_types: set[str] = set()
        # ``sent_ns`` is when the request's headers went onto a connection, not
        # when we asked for one: waiting for a free pooled connection is
        # client-side queueing and belongs to schedule lag, so service time
        # (done - sent) is what a closed-loop client would have seen.
        self._trace = aiohttp.TraceConfig()
        self._trace.on_request_headers_sent.append(self._headers_sent)

    async def __aenter__(self) -> EngramClient:
        self._ensure_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, enable_cleanup_closed=False
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                trace_configs=[self._trace],
                headers=self._headers,
                timeout=self._timeout,
                # Engram's answers are JSON; never let a header line make us fail early.
                max_line_size=65536,
                max_field_size=65536,
            )
            # aiohttp silently re-sends a GET once when a reused keep-alive
            # connection fails; for a measured operation that is a hidden retry
            # (a server dropping requests would look healthy). aiohttp's own
            # test client switches it off the same way.
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        return self._session

    # -- the one place requests are made --------------------------------------

    async def exchange(
        self,
        method: str,
        url: str | URL,
        *,
        space: str | None = None,
        body: bytes | None = None,
        timeout_s: float | None = None,
    ) -> Exchange:
        """Send one request and read its whole body; never raises (bar cancellation)."""
        headers: dict[str, str] = {}
        if space is not None:
            headers["X-Memory-Space"] = space
        if body is not None:
            headers.update(_JSON_HEADERS)
        timeout = self._timeout if timeout_s is None else _timeout(timeout_s)
        session = self._ensure_session()
        # Until the headers are written (and if they never are) the request
        # counts as sent when it was asked for.
        ctx = {"sent_ns": self._clock.monotonic_ns()}
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                data=body,
                timeout=timeout,
                allow_redirects=False,
                trace_request_ctx=ctx,
            ) as resp:
                status = resp.status
                data = await self._read_bounded(resp)
        except TimeoutError:  # aiohttp's own timeout errors subclass it too
            return Exchange(ctx["sent_ns"], self._clock.monotonic_ns(), failure=Outcome.TIMEOUT)
        except (aiohttp.ClientError, OSError) as exc:
            # ClientConnectionError, ServerDisconnectedError, ClientPayloadError,
            # ClientResponseError (malformed HTTP), InvalidURL: no usable answer.
            self._log_once(exc, expected=True)
            return Exchange(ctx["sent_ns"], self._clock.monotonic_ns(), failure=Outcome.CONNECTION)
        except Exception as exc:  # the catch-all: nothing a server sends may stop the run
            self._log_once(exc, expected=False)
            return Exchange(ctx["sent_ns"], self._clock.monotonic_ns(), failure=Outcome.CONNECTION)
        return Exchange(ctx["sent_ns"], self._clock.monotonic_ns(), status=status, body=data)

    async def _headers_sent(
        self,
        session: aiohttp.ClientSession,
        trace: Any,
        params: aiohttp.TraceRequestHeadersSentParams,
    ) -> None:
        ctx = trace.trace_request_ctx
        if isinstance(ctx, dict):
            ctx["sent_ns"] = self._clock.monotonic_ns()

    async def _read_bounded(self, resp: aiohttp.ClientResponse) -> bytes | None:
        """The body, or ``None`` when it is larger than ``max_body_bytes``."""
        length = resp.content_length
        if length is not None:
            if length > self._max_body:
                return None
            return await resp.read()
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = await resp.content.read(_READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > self._max_body:
                return None
            chunks.append(chunk)

    def _log_once(self, exc: BaseException, *, expected: bool) -> None:
        name = type(exc).__qualname__
        if name in self._logged_types:
            return
        self._logged_types.add(name)
        if expected:
            log.info("engram_request_failed", error_type=name, error=str(exc)[:300])
        else:
            log.warning("engram_unexpected_exception", error_type=name, error=repr(exc)[:300])

    def _url(self, path: str) -> str:
        return f"{self._base}{path}"

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

    async def store(self, req: StoreRequest, intended_ns: int) -> OpResult:
        """``POST /api/v1/memories/remember``; OK only when Engram echoes our ID."""
        ex = await self.exchange(
            "POST", self._url("/api/v1/memories/remember"), space=req.space, body=req.body
        )
        ok = False
        if self._is_2xx(ex):
            doc = parse_object(ex.body)
            ok = doc is not None and doc.get("memory_id") == req.memory_id
        return self._classify(Op.STORE, req.space, intended_ns, ex, ok, memory_id=req.memory_id)

    async def recall(self, req: RecallRequest, intended_ns: int) -> OpResult:
        """``GET /api/v1/memories/recall`` with a pre-encoded query string."""
        url = URL(f"{self._base}/api/v1/memories/recall?{req.query_string}", encoded=True)
        ex = await self.exchange("GET", url, space=req.space)
        ok = False
        if self._is_2xx(ex):
            doc = parse_object(ex.body)
            ok = doc is not None and isinstance(doc.get("memories"), dict)
        return self._classify(Op.RECALL, req.space, intended_ns, ex, ok)

    async def spread(self, req: SpreadRequest, intended_ns: int) -> OpResult:
        """``POST /api/v1/query`` with a SPREAD query (body and header name the same space)."""
        ex = await self.exchange("POST", self._url("/api/v1/query"), space=req.space, body=req.body)
        ok = False
        if self._is_2xx(ex):
            doc = parse_object(ex.body)
            ok = doc is not None and isinstance(doc.get("episodes"), list)
        return self._classify(Op.SPREAD, req.space, intended_ns, ex, ok)

    async def read_back(
        self, space: str, memory_id: str, intended_ns: int
    ) -> tuple[OpResult, str | None]:
        """``GET /api/v1/memories/{id}``: the result and, on a valid 200, the content."""
        path = f"/api/v1/memories/{quote(memory_id, safe='')}"
        ex = await self.exchange("GET", self._url(path), space=space)
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
        """``GET /health/alive`` answered 200."""
        ex = await self.exchange("GET", self._url("/health/alive"), timeout_s=timeout_s)
        return ex.failure is None and ex.status == 200

    async def create_space(self, space: str, timeout_s: float = 10.0) -> int:
        """``POST /api/v1/spaces`` (create-or-get); the status, or 0 when nothing answered."""
        body = json.dumps({"id": space}).encode()
        ex = await self.exchange(
            "POST", self._url("/api/v1/spaces"), body=body, timeout_s=timeout_s
        )
        if ex.status is None:
            return 0
        if not 200 <= ex.status < 300:
            log.warning(
                "engram_create_space_failed",
                space=space,
                status=ex.status,
                error_code=engram_error_code(ex.body),
            )
        return ex.status

    async def consolidation_generated_at(
        self, space: str, timeout_s: float = 5.0
    ) -> tuple[str | None, int | None]:
        """``GET /api/v1/consolidations?space=S``: (``generated_at``, status); never raises."""
        url = URL(self._url("/api/v1/consolidations")).with_query(space=space)
        ex = await self.exchange("GET", url, space=space, timeout_s=timeout_s)
        if not self._is_2xx(ex):
            return None, ex.status
        doc = parse_object(ex.body)
        value = doc.get("generated_at") if doc is not None else None
        return (value if isinstance(value, str) and value else None), ex.status

    async def memory_counts(self, timeout_s: float = 5.0) -> dict[str, int] | None:
        """``GET /api/v1/system/health`` as ``{space: memories}``; ``None`` when unavailable."""
        ex = await self.exchange("GET", self._url("/api/v1/system/health"), timeout_s=timeout_s)
        if not self._is_2xx(ex):
            return None
        doc = parse_object(ex.body)
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
