"""Contract tests: the reference server speaks engram-api.md over real sockets."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from soakd.reference.harness import (
    ReferenceProcess,
    http,
    reference,
    start_reference,
    unit_embedding,
)
from soakd.testing import wait_for

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@pytest.fixture(scope="module")
def ref() -> Iterator[ReferenceProcess]:
    """One reference server for the whole module (fast consolidation, small capacity)."""
    with reference("--consolidation-interval", "300ms", "--capacity", "200", "--seed", "1") as r:
        yield r


async def call(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, str, str]:
    """One request; returns (status, content type, body text)."""
    async with aiohttp.ClientSession() as session:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        hdrs.update(headers or {})
        async with session.request(method, url, data=data, headers=hdrs) as resp:
            return resp.status, resp.content_type, await resp.text()


def assert_envelope(status: int, text: str, expected_status: int, code: str) -> None:
    """The body is Engram's JSON error envelope with the given code."""
    assert status == expected_status, text
    doc = json.loads(text)
    assert doc["error"]["code"] == code
    for key in ("message", "educational_context", "cognitive_guidance"):
        assert isinstance(doc["error"][key], str) and doc["error"][key]
    assert isinstance(doc["documentation"], dict)


async def remember(
    ref: ReferenceProcess, space: str, mem_id: str, seed: int, **extra: Any
) -> dict[str, Any]:
    """Store one memory with its own embedding; returns the 201 body."""
    body = {"id": mem_id, "content": f"content of {mem_id}", "embedding": unit_embedding(seed)}
    body.update(extra)
    status, _, text = await call(
        "POST", f"{ref.url}/api/v1/memories/remember", body, {"X-Memory-Space": space}
    )
    assert status == 201, text
    return dict(json.loads(text))


def test_start_prints_api_line_and_writes_pid_file(tmp_path: Path) -> None:
    """The HTTP API line carries the real port, also written as PID:PORT and removed on exit."""
    pid_file = tmp_path / "engram.pid"
    proc = start_reference(env={"ENGRAM_PID_PATH": str(pid_file)})
    try:
        assert f" HTTP API: http://127.0.0.1:{proc.port}" in proc.stdout.splitlines()
        assert pid_file.read_text().strip() == f"{proc.pid}:{proc.port}"
    finally:
        code = proc.stop()
    assert code == 0
    assert not pid_file.exists()


async def test_health_routes(ref: ReferenceProcess) -> None:
    """/health/alive is 200 with an empty body; /health reports a status."""
    status, _, text = await call("GET", f"{ref.url}/health/alive")
    assert (status, text) == (200, "")
    status, _, text = await call("GET", f"{ref.url}/health")
    assert status == 200 and json.loads(text)["status"] == "healthy"


async def test_spaces_create_is_create_or_get_and_listed(ref: ReferenceProcess) -> None:
    """POST /api/v1/spaces answers 201 twice for the same id; GET lists it with its fields."""
    for _ in range(2):
        status, _, text = await call("POST", f"{ref.url}/api/v1/spaces", {"id": "space_01"})
        assert status == 201 and json.loads(text)["id"] == "space_01"
    status, _, text = await call("GET", f"{ref.url}/api/v1/spaces")
    spaces = {s["id"]: s for s in json.loads(text)["spaces"]}
    assert status == 200 and {"default", "space_01"} <= set(spaces)
    assert set(spaces["space_01"]) == {"id", "persistence_root", "created_at"}
    assert RFC3339.match(spaces["space_01"]["created_at"])


async def test_space_id_rules(ref: ReferenceProcess) -> None:
    """Space ids must be 3-64 chars of [a-z0-9_-] (400 envelope otherwise)."""
    for bad in ("ab", "Upper_case", "x" * 65, "with space"):
        status, _, text = await call("POST", f"{ref.url}/api/v1/spaces", {"id": bad})
        assert_envelope(status, text, 400, "BAD_REQUEST")


async def test_remember_201_shape_and_get_by_id(ref: ReferenceProcess) -> None:
    """Remember answers 201 with Engram's fields; GET by id returns the memory."""
    doc = await remember(ref, "space_get", "mem_get_1", 101, confidence=0.9)
    assert doc["memory_id"] == "mem_get_1"
    assert set(doc["storage_confidence"]) == {"value", "category", "reasoning"}
    assert doc["consolidation_state"] == "Recent"
    assert RFC3339.match(doc["observed_at"]) and RFC3339.match(doc["stored_at"])
    status, _, text = await call(
        "GET", f"{ref.url}/api/v1/memories/mem_get_1", headers={"X-Memory-Space": "space_get"}
    )
    got = json.loads(text)
    assert status == 200
    assert set(got) == {"id", "content", "confidence", "timestamp", "memory_type"}
    assert got["content"] == "content of mem_get_1" and got["confidence"] == pytest.approx(0.9)


async def test_generated_id_and_missing_memory(ref: ReferenceProcess) -> None:
    """Without an id the server makes mem_<8 hex>; an unknown id is 404 MEMORY_NOT_FOUND."""
    status, _, text = await call(
        "POST",
        f"{ref.url}/api/v1/memories/remember",
        {"content": "no id", "embedding": unit_embedding(102)},
    )
    assert status == 201 and re.match(r"^mem_[0-9a-f]{8}$", json.loads(text)["memory_id"])
    status, _, text = await call("GET", f"{ref.url}/api/v1/memories/never_stored")
    assert_envelope(status, text, 404, "MEMORY_NOT_FOUND")


async def test_space_selection_precedence(ref: ReferenceProcess) -> None:
    """Header beats ?space= beats body memory_space_id for remember; reads follow the same."""
    url = f"{ref.url}/api/v1/memories/remember?space=sel_query"
    body = {
        "id": "sel_1",
        "content": "x",
        "embedding": unit_embedding(103),
        "memory_space_id": "sel_body",
    }
    status, _, _ = await call("POST", url, body, {"X-Memory-Space": "sel_header"})
    assert status == 201
    body.update(id="sel_2", embedding=unit_embedding(104))
    await call("POST", url, body)
    body.update(id="sel_3", embedding=unit_embedding(105))
    await call("POST", f"{ref.url}/api/v1/memories/remember", body)
    for mem_id, space in (("sel_1", "sel_header"), ("sel_2", "sel_query"), ("sel_3", "sel_body")):
        status, _, _ = await call("GET", f"{ref.url}/api/v1/memories/{mem_id}?space={space}")
        assert status == 200, (mem_id, space)
        status, _, _ = await call("GET", f"{ref.url}/api/v1/memories/{mem_id}?space=default")
        assert status == 404
    # X-Engram-Memory-Space (Engram's own CLI header) is ignored by the server.
    await call(
        "POST",
        f"{ref.url}/api/v1/memories/remember",
        {"id": "sel_4", "content": "x", "embedding": unit_embedding(106)},
        {"X-Engram-Memory-Space": "sel_cli"},
    )
    status, _, _ = await call("GET", f"{ref.url}/api/v1/memories/sel_4")
    assert status == 200


async def test_remember_validation_envelopes(ref: ReferenceProcess) -> None:
    """Empty/oversized content and a non-768 embedding are 400 INVALID_MEMORY_INPUT."""
    url = f"{ref.url}/api/v1/memories/remember"
    for body in (
        {"content": "  "},
        {"content": "x" * 100_001},
        {"content": "x", "embedding": [0.1] * 767},
        {"content": "x", "embedding": [0.1] * 769},
    ):
        status, _, text = await call("POST", url, body)
        assert_envelope(status, text, 400, "INVALID_MEMORY_INPUT")


async def test_framework_rejections_are_plain_text(ref: ReferenceProcess) -> None:
    """415 wrong content type, 400 malformed JSON and 422 bad fields answer plain text."""
    url = f"{ref.url}/api/v1/memories/remember"
    cases = [
        (b'{"content":"x"}', {"Content-Type": "text/plain"}, 415),
        (b'{"content":', {"Content-Type": "application/json"}, 400),
        (b'{"id":"x"}', {"Content-Type": "application/json"}, 422),
        (b'{"content":5}', {"Content-Type": "application/json"}, 422),
        (b'{"content":"x","embedding":["a"]}', {"Content-Type": "application/json"}, 422),
    ]
    for raw, headers, expected in cases:
        status, ctype, text = await call("POST", url, raw=raw, headers=headers)
        assert (status, ctype) == (expected, "text/plain"), (raw, text)
        assert not text.startswith("{")
    status, ctype, _ = await call("GET", f"{ref.url}/api/v1/memories/recall?query=x&max_results=z")
    assert (status, ctype) == (400, "text/plain")


async def test_deduplication_answers_201_but_keeps_nothing(ref: ReferenceProcess) -> None:
    """A store at cosine >= 0.95 of a hot memory is 201 with the client's id, then 404."""
    await remember(ref, "space_dedup", "dedup_a", 200)
    near = [x * 1.0001 for x in unit_embedding(200)]
    body = {"id": "dedup_b", "content": "near copy", "embedding": near}
    status, _, text = await call(
        "POST", f"{ref.url}/api/v1/memories/remember", body, {"X-Memory-Space": "space_dedup"}
    )
    assert status == 201 and json.loads(text)["memory_id"] == "dedup_b"
    status, _, _ = await call("GET", f"{ref.url}/api/v1/memories/dedup_b?space=space_dedup")
    assert status == 404


async def test_stores_without_embedding_collapse(ref: ReferenceProcess) -> None:
    """Without an embedding Engram uses a constant vector: only the first store is kept."""
    for i in range(3):
        body = {"id": f"noemb_{i}", "content": f"text {i}"}
        status, _, _ = await call(
            "POST", f"{ref.url}/api/v1/memories/remember", body, {"X-Memory-Space": "space_noemb"}
        )
        assert status == 201
    found = [
        (await call("GET", f"{ref.url}/api/v1/memories/noemb_{i}?space=space_noemb"))[0]
        for i in range(3)
    ]
    assert found == [200, 404, 404]


async def test_recall_by_embedding_vivid_and_large_url(ref: ReferenceProcess) -> None:
    """A full-precision 768-float recall URL (~16 KB) is accepted; an exact match is vivid."""
    await remember(ref, "space_recall", "rec_1", 300)
    emb = json.dumps([repr(x * 1.0000001) for x in unit_embedding(300)]).replace('"', "")
    query = urllib.parse.urlencode({"embedding": emb, "space": "space_recall"})
    assert len(query) > 15_000
    status, _, text = await call("GET", f"{ref.url}/api/v1/memories/recall?{query}")
    doc = json.loads(text)
    assert status == 200, text
    assert set(doc["memories"]) == {"vivid", "associated", "reconstructed"}
    assert [m["id"] for m in doc["memories"]["vivid"]] == ["rec_1"]
    hit = doc["memories"]["vivid"][0]
    assert hit["similarity_score"] > 0.99 and set(hit["confidence"]) >= {"value", "category"}
    assert "recall_confidence" in doc and "query_analysis" in doc


async def test_recall_associated_split_and_text(ref: ReferenceProcess) -> None:
    """A match at cosine ~0.6 is associated (<= 0.7); text queries match content words."""
    base = unit_embedding(400)
    other = unit_embedding(401)
    await remember(ref, "space_assoc", "assoc_1", 400, content="the blue heron")
    mixed = [0.6 * a + 0.8 * b for a, b in zip(base, other, strict=True)]
    query = urllib.parse.urlencode({"embedding": json.dumps(mixed), "threshold": "0.5"})
    status, _, text = await call(
        "GET",
        f"{ref.url}/api/v1/memories/recall?{query}",
        headers={"X-Memory-Space": "space_assoc"},
    )
    mems = json.loads(text)["memories"]
    assert status == 200 and mems["vivid"] == []
    assert [m["id"] for m in mems["associated"]] == ["assoc_1"]
    status, _, text = await call(
        "GET", f"{ref.url}/api/v1/memories/recall?query=blue+heron&space=space_assoc"
    )
    assert [m["id"] for m in json.loads(text)["memories"]["vivid"]] == ["assoc_1"]


async def test_recall_errors(ref: ReferenceProcess) -> None:
    """No cue, a bad embedding, or mode=spreading are 400 envelopes."""
    base = f"{ref.url}/api/v1/memories/recall"
    for query in ("", "?embedding=notjson", "?embedding=[0.1,0.2]", "?query=x&mode=spreading"):
        status, _, text = await call("GET", base + query)
        assert_envelope(status, text, 400, "INVALID_MEMORY_INPUT")


async def test_spread_grammar_and_response_shape(ref: ReferenceProcess) -> None:
    """SPREAD reaches linked memories; keywords are case-insensitive, in any order."""
    await call("POST", f"{ref.url}/api/v1/spaces", {"id": "space_spread"})
    for i in range(6):
        await remember(ref, "space_spread", f"sp_{i}", 500 + i)
    queries = [
        "SPREAD FROM sp_5 MAX_HOPS 3 DECAY 0.1 THRESHOLD 0.01",
        "spread from sp_5 threshold 0.01 max_hops 3 decay 0.1",
        "SPREAD FROM sp_5",
        "SPREAD FROM sp_5 HOPS 3",
    ]
    for q in queries:
        status, _, text = await call(
            "POST",
            f"{ref.url}/api/v1/query",
            {"query_text": q},
            {"X-Memory-Space": "space_spread"},
        )
        doc = json.loads(text)
        assert status == 200, text
        assert set(doc) >= {"episodes", "aggregate_confidence", "total_count", "execution_time_ms"}
        ids = [e["id"] for e in doc["episodes"]]
        assert ids[0] == "sp_5" and "sp_4" in ids and doc["total_count"] == len(ids)
        assert set(doc["episodes"][0]) >= {"id", "when", "what", "confidence"}


async def test_spread_hops_and_threshold_are_honoured(ref: ReferenceProcess) -> None:
    """MAX_HOPS 0 returns only the source; a high THRESHOLD prunes; more hops reach more."""
    for i in range(12):
        await remember(ref, "space_hops", f"hop_{i}", 600 + i)

    async def reached(q: str) -> list[str]:
        status, _, text = await call(
            "POST", f"{ref.url}/api/v1/query", {"query_text": q, "memory_space_id": "space_hops"}
        )
        assert status == 200, text
        return [e["id"] for e in json.loads(text)["episodes"]]

    assert await reached("SPREAD FROM hop_11 MAX_HOPS 0") == ["hop_11"]
    one = await reached("SPREAD FROM hop_11 MAX_HOPS 1 THRESHOLD 0.0001")
    six = await reached("SPREAD FROM hop_11 MAX_HOPS 6 THRESHOLD 0.0001")
    assert len(six) > len(one) > 1
    assert await reached("SPREAD FROM hop_11 MAX_HOPS 6 THRESHOLD 0.99") == ["hop_11"]
    assert len(await reached("SPREAD FROM hop_11 MAX_HOPS 6 DECAY 1.0 THRESHOLD 0.0001")) == 1


async def test_spread_errors(ref: ReferenceProcess) -> None:
    """MAX_HOPS >= 7 is 400 'too complex'; a non-identifier id is 400; unknown space 404."""
    url = f"{ref.url}/api/v1/query"
    await call("POST", f"{ref.url}/api/v1/spaces", {"id": "space_err"})
    hdr = {"X-Memory-Space": "space_err"}
    status, _, text = await call("POST", url, {"query_text": "SPREAD FROM a MAX_HOPS 7"}, hdr)
    assert_envelope(status, text, 400, "BAD_REQUEST")
    assert "too complex" in json.loads(text)["error"]["message"]
    status, _, text = await call("POST", url, {"query_text": "SPREAD FROM mem-1"}, hdr)
    assert_envelope(status, text, 400, "BAD_REQUEST")
    status, _, text = await call(
        "POST", url, {"query_text": "SPREAD FROM a"}, {"X-Memory-Space": "never_created"}
    )
    assert_envelope(status, text, 404, "RESOURCE_NOT_FOUND")
    status, ctype, _ = await call("POST", url, {"text": "SPREAD FROM a"}, hdr)
    assert (status, ctype) == (422, "text/plain")


async def test_query_body_space_beats_header(ref: ReferenceProcess) -> None:
    """For /api/v1/query the body's memory_space_id wins over the header."""
    await call("POST", f"{ref.url}/api/v1/spaces", {"id": "space_qb"})
    body = {"query_text": "SPREAD FROM nothing_here", "memory_space_id": "space_qb"}
    status, _, text = await call(
        "POST", f"{ref.url}/api/v1/query", body, {"X-Memory-Space": "absent_space"}
    )
    assert status == 200 and json.loads(text)["total_count"] == 0


def test_consolidation_snapshot_refreshes(ref: ReferenceProcess) -> None:
    """GET /api/v1/consolidations shows beliefs and stats, and generated_at moves on."""
    for i in range(4):
        body = {"id": f"cons_{i}", "content": "x", "embedding": unit_embedding(700 + i)}
        url = f"{ref.url}/api/v1/memories/remember?space=space_cons"
        assert http("POST", url, body).status == 201
    url = f"{ref.url}/api/v1/consolidations?space=space_cons"

    def after_a_run() -> dict[str, Any] | None:
        result = http("GET", url)
        assert result.status == 200
        snap: dict[str, Any] = result.json()
        return snap if snap["stats"]["total_replays"] > 0 else None

    first = wait_for(after_a_run, timeout_s=10, what="a consolidation run")
    assert first is not None
    assert RFC3339.match(first["generated_at"]) and isinstance(first["beliefs"], list)
    assert first["beliefs"] and first["beliefs"][0]["citations"]
    for key in ("total_replays", "successful_consolidations", "total_patterns_extracted"):
        assert key in first["stats"]
    wait_for(
        lambda: http("GET", url).json()["generated_at"] != first["generated_at"],
        timeout_s=10,
        what="a second run",
    )
    missing = http("GET", f"{ref.url}/api/v1/consolidations?space=no_such_space")
    assert_envelope(missing.status, missing.text, 404, "RESOURCE_NOT_FOUND")


async def test_system_health_counts_memories_per_space(ref: ReferenceProcess) -> None:
    """/api/v1/system/health lists each space with its memory count."""
    for i in range(3):
        await remember(ref, "space_count", f"count_{i}", 800 + i)
    status, _, text = await call("GET", f"{ref.url}/api/v1/system/health")
    spaces = {s["space"]: s for s in json.loads(text)["spaces"]}
    assert status == 200 and spaces["space_count"]["memories"] == 3


async def test_metrics_json_and_prometheus(ref: ReferenceProcess) -> None:
    """/metrics has Engram's windows and series; /metrics/prometheus is text with no process_*."""
    await remember(ref, "space_metrics", "metric_1", 900)
    status, _, text = await call("GET", f"{ref.url}/metrics")
    doc = json.loads(text)
    assert status == 200 and set(doc["export"]) == {"exported", "dropped", "queue_depth"}
    snap = doc["snapshot"]
    for window in ("one_second", "ten_seconds", "one_minute", "five_minutes"):
        assert window in snap
    series = snap["five_minutes"]["store_duration_seconds"]
    assert set(series) == {"count", "sum", "mean", "min", "max", "p50", "p90", "p99"}
    assert snap["five_minutes"]["memories_created_total"]["count"] >= 1
    status, ctype, text = await call("GET", f"{ref.url}/metrics/prometheus")
    assert (status, ctype) == (200, "text/plain")
    assert "engram_memories_created_total" in text and "process_" not in text


async def test_capacity_evicts_least_activated(ref: ReferenceProcess) -> None:
    """Past the capacity (200 here) the space stays at 200 and the oldest unused go first."""
    for i in range(210):
        await remember(ref, "space_cap", f"cap_{i}", 10_000 + i)
    status, _, text = await call("GET", f"{ref.url}/api/v1/system/health")
    spaces = {s["space"]: s for s in json.loads(text)["spaces"]}
    assert status == 200 and spaces["space_cap"]["memories"] == 200
    assert (await call("GET", f"{ref.url}/api/v1/memories/cap_0?space=space_cap"))[0] == 404
    assert (await call("GET", f"{ref.url}/api/v1/memories/cap_209?space=space_cap"))[0] == 200


async def test_unknown_route_and_method(ref: ReferenceProcess) -> None:
    """Unknown paths are 404 and wrong methods 405, as any router answers."""
    assert (await call("GET", f"{ref.url}/api/v1/nope"))[0] == 404
    assert (await call("GET", f"{ref.url}/api/v1/memories/remember"))[0] in (404, 405)


def test_auth_required_on_every_route_when_key_set() -> None:
    """With --api-key every route (health and metrics too) is 401 without the bearer key."""
    import urllib.error
    import urllib.request

    with reference("--api-key", "engram_key_ref_secret") as r:
        for path in ("/health/alive", "/health", "/metrics", "/api/v1/spaces"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"{r.url}{path}", timeout=5)
            assert err.value.code == 401
            assert json.loads(err.value.read())["error"]["code"] == "UNAUTHORIZED"
        request = urllib.request.Request(
            f"{r.url}/health/alive", headers={"Authorization": "Bearer engram_key_ref_secret"}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200
