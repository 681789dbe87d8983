"""The aiohttp application: Engram's routes, status codes and response shapes.

Every measured operation (store, recall, spread, get) goes through
:meth:`Api.measured`, which applies the fault knobs first and records the
operation's duration in the metrics window.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from soakd.reference.config import ServerConfig
from soakd.reference.consolidation import Consolidator, confidence_info, rfc3339
from soakd.reference.envelope import Rejection, engram_error, injected_error
from soakd.reference.faults import Faults
from soakd.reference.metrics import MetricsWindow
from soakd.reference.parsing import (
    DEFAULT_SPACE,
    as_numbers,
    check_embedding,
    check_space_id,
    field_embedding,
    field_float,
    field_str,
    field_timestamp,
    json_body,
    query_bool,
    query_float,
    query_int,
    select_space,
)
from soakd.reference.registry import SpaceRegistry
from soakd.reference.space import Memory, StoreResult
from soakd.reference.spread import QueryError, parse_query, spread
from soakd.reference.vectors import F32

MAX_CONTENT_BYTES = 100_000
VIVID_ABOVE = 0.7
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Api:
    """Shared state of the handlers."""

    config: ServerConfig
    spaces: SpaceRegistry
    consolidator: Consolidator
    faults: Faults
    metrics: MetricsWindow
    shutdown: asyncio.Event
    started_wall: float
    # At most ``space_create_parallel`` slow creations at once (the knob's model of Engram).
    create_gate: asyncio.Semaphore | None = None

    async def measured(self, op: str, work: Callable[[], Awaitable[web.Response]]) -> web.Response:
        """Run one measured operation under the fault knobs and time it."""
        started = time.perf_counter()
        status = await self.faults.before(op)
        if status is not None:
            response = injected_error(status)
        else:
            worked = time.perf_counter()
            try:
                response = await work()
                self.faults.work(op)
            except Rejection as rej:
                response = rej.response
            self.faults.slow_down(time.perf_counter() - worked)
        elapsed = time.perf_counter() - started
        self.metrics.observe(_SERIES[op], elapsed)
        if response.status >= 400:
            self.metrics.observe(f"{op}_errors_total", 1.0)
        return response

    # -- spaces -------------------------------------------------------------------------------

    def space_json(self, space_id: str, created_at: float) -> dict[str, Any]:
        """One entry of the spaces list."""
        return {
            "id": space_id,
            "persistence_root": self.spaces.persistence_root(space_id),
            "created_at": rfc3339(created_at),
        }

    async def create_space(self, request: web.Request) -> web.Response:
        """POST /api/v1/spaces: create-or-get, 201."""
        body = await json_body(request)
        space_id = check_space_id(field_str(body, "id", required=True) or "")
        slow_s = self.config.faults.space_create_s
        if slow_s > 0 and self.spaces.get(space_id) is None:
            if self.create_gate is None:
                self.create_gate = asyncio.Semaphore(self.config.faults.space_create_parallel)
            async with self.create_gate:
                if self.spaces.get(space_id) is None:  # not made while this one waited
                    await asyncio.sleep(slow_s)
        space = self.spaces.get_or_create(space_id)
        return web.json_response(self.space_json(space.id, space.created_at), status=201)

    async def list_spaces(self, request: web.Request) -> web.Response:
        """GET /api/v1/spaces."""
        items = [self.space_json(s.id, s.created_at) for s in self.spaces]
        return web.json_response({"spaces": items})

    # -- memories -----------------------------------------------------------------------------

    async def remember(self, request: web.Request) -> web.Response:
        """POST /api/v1/memories/remember -> 201."""
        return await self.measured("store", lambda: self._remember(request))

    async def _remember(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        content = field_str(body, "content", required=True) or ""
        memory_id = field_str(body, "id") or f"mem_{secrets.token_hex(4)}"
        embedding = field_embedding(body)
        confidence = field_float(body, "confidence")
        confidence = 0.7 if confidence is None else confidence
        observed = field_timestamp(body, "timestamp")
        space_id = select_space(request, body)
        if not content.strip():
            return engram_error(400, "INVALID_MEMORY_INPUT", "Memory content cannot be empty.")
        if len(content.encode()) > MAX_CONTENT_BYTES:
            return engram_error(400, "INVALID_MEMORY_INPUT", "Memory content too large (>100KB).")
        now = time.time()
        observed = now if observed is None else observed
        self.faults.leak()
        if not self.faults.lose_write():
            space = self.spaces.get_or_create(space_id)
            outcome = space.remember(memory_id, content, embedding, confidence, observed)
            if outcome.result is not StoreResult.DEDUPLICATED:
                self.metrics.observe("memories_created_total", 1.0)
            else:
                self.metrics.observe("memories_deduplicated_total", 1.0)
            if outcome.evicted is not None:
                self.metrics.observe("memories_evicted_total", 1.0)
        else:
            self.spaces.get_or_create(space_id)
        return web.json_response(_remember_json(memory_id, confidence, observed, now), status=201)

    async def get_memory(self, request: web.Request) -> web.Response:
        """GET /api/v1/memories/{id} -> 200 or 404 MEMORY_NOT_FOUND."""
        return await self.measured("get", lambda: self._get(request))

    async def _get(self, request: web.Request) -> web.Response:
        memory_id = request.match_info["memory_id"]
        space = self.spaces.get(select_space(request))
        memory = space.get(memory_id) if space is not None else None
        if memory is None:
            return engram_error(404, "MEMORY_NOT_FOUND", f"Memory '{memory_id}' not found")
        return web.json_response(
            {
                "id": memory.id,
                "content": memory.content,
                "confidence": memory.confidence,
                "timestamp": rfc3339(memory.observed_at),
                "memory_type": "episodic",
            }
        )

    async def recall(self, request: web.Request) -> web.Response:
        """GET /api/v1/memories/recall -> 200 with vivid/associated results."""
        return await self.measured("recall", lambda: self._recall(request))

    async def _recall(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        text = request.query.get("query")
        raw_embedding = request.query.get("embedding")
        limit = query_int(request, "max_results", 10)
        threshold = query_float(request, "threshold", 0.5)
        metadata = query_bool(request, "include_metadata")
        if request.query.get("mode") is not None:
            mode = request.query["mode"].strip().lower()
            if mode in ("spreading", "hybrid"):
                return engram_error(
                    400, "INVALID_MEMORY_INPUT", "Spreading recall requires a spreading engine"
                )
            if mode != "similarity":
                return engram_error(400, "INVALID_MEMORY_INPUT", f"Unsupported recall mode {mode}")
        if text is None and raw_embedding is None:
            return engram_error(
                400,
                "INVALID_MEMORY_INPUT",
                "Recall requires either a text query or embedding vector.",
            )
        space = self.spaces.get_or_create(select_space(request))
        if text is not None:
            hits = space.recall_text(text, threshold, limit, self.config.text_scan_limit)
        else:
            hits = space.recall_embedding(_parse_embedding(raw_embedding or ""), threshold, limit)
        now = time.time()
        for memory, score in hits:
            space.touch(memory, 0.05 * score, now)
        vivid = [_result(m, s) for m, s in hits if s > VIVID_ABOVE]
        associated = [_result(m, s) for m, s in hits if s <= VIVID_ABOVE]
        ms = int((time.perf_counter() - started) * 1000)
        body: dict[str, Any] = {
            "memories": {"vivid": vivid, "associated": associated, "reconstructed": []},
            "recall_confidence": confidence_info(
                0.8 if hits else 0.2, "Similarity recall emphasised embedding cues"
            ),
            "query_analysis": {
                "understood_intent": text if text is not None else "Embedding-based recall request",
                "search_strategy": "Vector similarity" if text is None else "Lexical cues",
                "cognitive_load": "Medium" if limit > 20 else "Low",
                "suggestions": [],
            },
            "metadata": {
                "total_memories_searched": len(space),
                "activation_spread_hops": 0,
                "processing_time_ms": ms,
                "memory_system_load": "Normal",
            }
            if metadata
            else None,
            "system_message": f"Recall completed in {ms}ms.",
        }
        return web.json_response(body)

    # -- query (SPREAD) ---------------------------------------------------------------------

    async def query(self, request: web.Request) -> web.Response:
        """POST /api/v1/query with a SPREAD query."""
        return await self.measured("spread", lambda: self._query(request))

    async def _query(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        body = await json_body(request)
        text = field_str(body, "query_text", required=True) or ""
        space_id = select_space(request, body, body_first=True)
        space = self.spaces.get(space_id)
        if space is None:
            return engram_error(
                404, "RESOURCE_NOT_FOUND", f"Memory space '{space_id}' does not exist"
            )
        try:
            parsed = parse_query(text)
        except QueryError as exc:
            return engram_error(exc.status, exc.code, exc.message)
        if self.config.stock:
            return engram_error(
                500,
                "MEMORY_SYSTEM_ERROR",
                "Spreading activation engine not initialized for this memory store",
            )
        reached = spread(space, parsed)
        now = time.time()
        episodes = []
        for a in reached:
            space.touch(a.memory, 0.01 * a.activation, now)
            episodes.append(
                {
                    "id": a.memory.id,
                    "when": rfc3339(a.memory.observed_at),
                    "what": a.memory.content,
                    "confidence": round(a.activation, 6),
                    "activation": round(a.activation, 6),
                    "hops": a.hops,
                }
            )
        point = max((a.activation for a in reached[1:]), default=0.0) if reached else 0.0
        return web.json_response(
            {
                "episodes": episodes,
                "aggregate_confidence": {
                    "value": round(point, 6),
                    "lower": round(point * 0.9, 6),
                    "upper": round(min(1.0, point * 1.1), 6),
                },
                "total_count": len(episodes),
                "execution_time_ms": round((time.perf_counter() - started) * 1000.0, 3),
            }
        )

    # -- consolidation, health, metrics, shutdown ----------------------------------------------

    async def consolidations(self, request: web.Request) -> web.Response:
        """GET /api/v1/consolidations?space=S."""
        space_id = select_space(request)
        space = self.spaces.get(space_id)
        if space is None:
            if space_id != DEFAULT_SPACE:
                return engram_error(
                    404, "RESOURCE_NOT_FOUND", f"Memory space '{space_id}' does not exist"
                )
            space = self.spaces.get_or_create(space_id)
        return web.json_response(self.consolidator.snapshot(space))

    async def alive(self, request: web.Request) -> web.Response:
        """GET /health/alive: 200, empty body."""
        return web.Response(status=200)

    def _self_report(self) -> tuple[str, int]:
        """(status word, HTTP status) of the server's own health, as Engram words it."""
        after = self.config.faults.unhealthy_after_s
        if after > 0 and time.time() - self.started_wall >= after:
            return "unhealthy", 503
        return "healthy", 200

    async def health(self, request: web.Request) -> web.Response:
        """GET /health (503 with the same body while unhealthy, as Engram)."""
        word, status = self._self_report()
        return web.json_response(
            {
                "status": word,
                "checks": [
                    {"name": "memory_store", "type": "memory", "status": "healthy"},
                    {"name": "consolidation", "type": "cognitive", "status": "healthy"},
                    {"name": "spreading", "type": "spreading", "status": word},
                ],
                "memory_spaces": len(self.spaces),
                "uptime_seconds": round(time.time() - self.started_wall, 3),
            },
            status=status,
        )

    async def system_health(self, request: web.Request) -> web.Response:
        """GET /api/v1/system/health: per-space memory counts."""
        spaces = [
            {
                "space": s.id,
                "memories": len(s),
                "pressure": round(len(s) / s.capacity, 6),
                "wal_lag_ms": 0.0,
                "consolidation_rate": 0.0,
            }
            for s in self.spaces
        ]
        word, status = self._self_report()
        return web.json_response({"status": word, "spaces": spaces}, status=status)

    def gauges(self) -> dict[str, float]:
        """Current values shown beside the windows."""
        return {
            "memory_spaces": float(len(self.spaces)),
            "memories": float(self.spaces.total_memories()),
        }

    async def metrics_json(self, request: web.Request) -> web.Response:
        """GET /metrics (JSON)."""
        return web.json_response(self.metrics.snapshot_json(self.gauges()))

    async def metrics_prometheus(self, request: web.Request) -> web.Response:
        """GET /metrics/prometheus (text, 5-minute window)."""
        return web.Response(
            text=self.metrics.prometheus_text(self.gauges()),
            content_type="text/plain",
            charset="utf-8",
        )

    async def shutdown_route(self, request: web.Request) -> web.Response:
        """POST /shutdown: answer, then stop gracefully."""
        asyncio.get_running_loop().call_later(0.05, self.shutdown.set)
        return web.json_response(
            {"status": "shutdown_initiated", "message": "Graceful shutdown initiated"}
        )


_SERIES = {
    "store": "store_duration_seconds",
    "recall": "query_duration_seconds",
    "spread": "spreading_duration_seconds",
    "get": "get_duration_seconds",
}


def _parse_embedding(raw: str) -> F32:
    try:
        values = as_numbers(json.loads(raw))
    except ValueError:
        values = None
    if values is None:
        raise Rejection(
            engram_error(
                400,
                "INVALID_MEMORY_INPUT",
                "Invalid embedding format. Expected JSON array of floats.",
            )
        )
    return check_embedding(values)


def _remember_json(
    memory_id: str, confidence: float, observed: float, now: float
) -> dict[str, Any]:
    return {
        "memory_id": memory_id,
        "storage_confidence": confidence_info(confidence, "Default confidence for user memory"),
        "consolidation_state": "Recent",
        "observed_at": rfc3339(observed),
        "stored_at": rfc3339(now),
        "links": {"consolidation": "/api/v1/consolidations"},
        "auto_links": [],
        "system_message": f"Memory '{memory_id}' successfully encoded with "
        f"{confidence:.2f} activation.",
    }


def _result(memory: Memory, score: float) -> dict[str, Any]:
    return {
        "id": memory.id,
        "content": memory.content,
        "confidence": confidence_info(score, "Recalled from memory store with confidence score"),
        "activation_level": round(score, 6),
        "similarity_score": round(score, 6),
        "retrieval_path": "Memory store recall",
        "observed_at": rfc3339(memory.observed_at),
        "last_access": rfc3339(memory.last_access) if memory.last_access else None,
        "tags": [],
        "memory_type": "Episodic",
        "relevance_explanation": f"Retrieved with {score:.2f} confidence",
    }


def _middleware(api: Api) -> Middleware:
    expected = f"Bearer {api.config.api_key}" if api.config.api_key else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.headers.get("Authorization") != expected:
            return engram_error(401, "UNAUTHORIZED", "Missing or invalid API key")
        try:
            return await handler(request)
        except Rejection as rej:
            return rej.response

    return middleware


def build_app(api: Api) -> web.Application:
    """The application with every route of the subset soakd uses."""
    app = web.Application(middlewares=[_middleware(api)], client_max_size=2 * 1024 * 1024)
    app.add_routes(
        [
            web.post("/api/v1/spaces", api.create_space),
            web.get("/api/v1/spaces", api.list_spaces),
            web.post("/api/v1/memories/remember", api.remember),
            web.get("/api/v1/memories/recall", api.recall),
            web.get("/api/v1/memories/{memory_id}", api.get_memory),
            web.post("/api/v1/query", api.query),
            web.get("/api/v1/consolidations", api.consolidations),
            web.get("/health/alive", api.alive),
            web.get("/health", api.health),
            web.get("/api/v1/system/health", api.system_health),
            web.get("/metrics", api.metrics_json),
            web.get("/metrics/prometheus", api.metrics_prometheus),
            web.post("/shutdown", api.shutdown_route),
        ]
    )
    return app
