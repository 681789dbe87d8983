"""Tests for soakd.workload: seeded, identifier-safe, self-checking requests."""

from __future__ import annotations

import json
import math
import re
from urllib.parse import parse_qs, urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st

from soakd.spec.model import RecallOptions, SpreadOptions
from soakd.workload import (
    EMBEDDING_DIM,
    Workload,
    checksum,
    content_is_self_consistent,
    plain_number,
    sanitize_tag,
    space_names,
    unit_vector,
)

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
SPACE_ID = re.compile(r"[a-z0-9_-]{3,64}\Z")


def make(seed: int = 7, tag: str = "run-1", spaces: int = 10, **kw: object) -> Workload:
    recall = kw.pop("recall", RecallOptions())
    spread = kw.pop("spread", SpreadOptions(max_hops=5))
    assert isinstance(recall, RecallOptions) and isinstance(spread, SpreadOptions)
    return Workload(seed, tag, space_names(spaces), recall, spread, **kw)  # type: ignore[arg-type]


def cosine(a: tuple[float, ...] | list[float], b: tuple[float, ...] | list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_space_names_are_engram_space_ids() -> None:
    """space_names gives space_01..space_NN, each a valid Engram space ID."""
    names = space_names(10)
    assert names[0] == "space_01" and names[-1] == "space_10" and len(set(names)) == 10
    assert all(SPACE_ID.match(n) for n in space_names(150))
    assert space_names(150)[0] == "space_001"


def test_store_is_deterministic_in_seed_and_k() -> None:
    """The same (seed, k) builds the same request; another seed or k builds another."""
    a, b = make(seed=1), make(seed=1)
    assert a.store(42) == b.store(42)
    assert a.store(42).body != make(seed=2).store(42).body
    assert a.store(42).memory_id != a.store(43).memory_id


@given(tag=st.text(max_size=30), k=st.integers(min_value=0, max_value=10**12))
@settings(max_examples=60, deadline=None)
def test_ids_are_identifiers_and_invert(tag: str, k: int) -> None:
    """Every memory ID is an identifier (SPREAD-safe) and maps back to its k."""
    w = Workload(0, tag, ["space_01"], RecallOptions(), SpreadOptions())
    memory_id = w.memory_id(k)
    assert IDENT.match(memory_id)
    assert w.k_of(memory_id) == k
    assert IDENT.match("x" + sanitize_tag(tag))


def test_k_of_rejects_foreign_ids() -> None:
    """IDs this workload never made have no k."""
    w = make(tag="abc")
    for foreign in ("mem_1234", "soak_other_5", "soak_abc_", "soak_abc_12x", "soak_abc_١٢"):
        assert w.k_of(foreign) is None
        assert w.expected_checksum(foreign) is None


def test_store_spreads_over_spaces_round_robin() -> None:
    """Store k goes to spaces[k % n]."""
    w = make(spaces=3)
    assert [w.store(k).space for k in range(6)] == ["space_01", "space_02", "space_03"] * 2


def test_store_body_is_engram_remember_json() -> None:
    """The pre-serialised body parses to Engram's remember fields with 768 floats."""
    w = make()
    req = w.store(5)
    doc = json.loads(req.body)
    assert doc["id"] == req.memory_id
    assert doc["content"] == req.content
    assert doc["memory_space_id"] == req.space
    assert len(doc["embedding"]) == EMBEDDING_DIM
    # Rounded to 6 significant digits, the vector is still the one drawn.
    assert cosine(doc["embedding"], req.embedding) > 0.999999
    assert len(req.content.encode()) < 100_000


def test_embeddings_are_unit_norm() -> None:
    """Store and recall embeddings are unit-normalised 768-d vectors."""
    w = make()
    for k in range(20):
        vec = w.store(k).embedding
        assert len(vec) == EMBEDDING_DIM
        assert math.isclose(math.fsum(x * x for x in vec), 1.0, rel_tol=1e-9)


def test_pairwise_cosine_is_near_zero() -> None:
    """No two stored embeddings come near Engram's 0.95 de-dup threshold."""
    w = make()
    vecs = [w.store(k).embedding for k in range(60)]
    worst = max(abs(cosine(a, b)) for i, a in enumerate(vecs) for b in vecs[i + 1 :])
    assert worst < 0.2
    # Store and recall draws of the same k are different streams.
    assert abs(cosine(w.store(3).embedding, unit_vector("7:2:3"))) < 0.2


def test_checksum_round_trip() -> None:
    """The content carries its own checksum, and verify() accepts exactly what was written."""
    w = make()
    req = w.store(99)
    assert content_is_self_consistent(req.content)
    assert req.content.endswith(f" sha={w.expected_checksum(req.memory_id)}")
    assert w.expected_content(req.memory_id) == req.content
    assert w.verify(req.memory_id, req.content)


def test_verify_rejects_corruption() -> None:
    """A changed byte, a swapped memory or a bare string fails verification."""
    w = make()
    req = w.store(7)
    assert not w.verify(req.memory_id, req.content.replace("k=7", "k=8"))
    assert not w.verify(req.memory_id, w.store(8).content)
    assert not w.verify(req.memory_id, "hello")
    assert not w.verify(req.memory_id, req.content[:-1] + ("0" if req.content[-1] != "0" else "1"))
    assert not content_is_self_consistent("no checksum here")


def test_checksum_depends_on_seed() -> None:
    """Another run's content for the same k does not verify."""
    assert not make(seed=1).verify("soak_run_1_3", make(seed=2).store(3).content)
    assert checksum("a") != checksum("b")


def test_recall_by_embedding_url_stays_small() -> None:
    """A recall URL carries 768 floats in ~9 KB and decodes to a unit vector."""
    w = make(recall=RecallOptions(max_results=7, threshold=0.25))
    req = w.recall(11)
    assert req.space == "space_02" and req.by == "embedding"
    assert len(req.query_string) < 10_500
    params = parse_qs(req.query_string)
    vec = json.loads(params["embedding"][0])
    assert len(vec) == EMBEDDING_DIM
    assert math.isclose(math.fsum(x * x for x in vec), 1.0, rel_tol=1e-4)
    assert params["max_results"] == ["7"] and params["threshold"] == ["0.25"]
    assert "[" not in req.query_string and " " not in req.query_string
    assert urlsplit("http://h/p?" + req.query_string).query == req.query_string


def test_recall_by_text() -> None:
    """Text recall sends query= and no embedding."""
    w = make(recall=RecallOptions(by="text"))
    params = parse_qs(w.recall(1).query_string)
    assert "embedding" not in params and params["query"][0].strip()
    assert w.recall(1) == w.recall(1)


def test_spread_none_until_an_id_is_confirmed() -> None:
    """spread() is None while no space has a confirmed ID."""
    w = make()
    assert w.spread(0) is None
    w.confirm_stored("space_unknown", "soak_x_1")  # a space not in the run is ignored
    assert w.spread(0) is None


def test_spread_uses_a_confirmed_id_of_another_space_when_needed() -> None:
    """spread() falls back to the next space that has a confirmed ID."""
    w = make(spaces=4, spread=SpreadOptions(max_hops=5, decay=0.2, threshold=0.05))
    w.confirm_stored("space_03", "soak_run_1_2")
    req = w.spread(0)
    assert req is not None
    assert req.space == "space_03" and req.source_id == "soak_run_1_2"
    assert req.query_text == "SPREAD FROM soak_run_1_2 MAX_HOPS 5 DECAY 0.2 THRESHOLD 0.05"
    assert json.loads(req.body) == {"query_text": req.query_text, "memory_space_id": "space_03"}


def test_spread_ring_is_bounded_and_recent() -> None:
    """The per-space ring keeps only the most recent confirmed IDs."""
    w = make(spaces=1, recent_ids_per_space=3)
    for k in range(10):
        w.confirm_stored("space_01", w.memory_id(k))
    assert w.known_ids("space_01") == 3
    sources = set()
    for k in range(50):
        req = w.spread(k)
        assert req is not None
        sources.add(req.source_id)
    assert sources == {w.memory_id(7), w.memory_id(8), w.memory_id(9)}


def test_numbers_in_queries_have_no_exponent() -> None:
    """SPREAD clauses and recall thresholds print plain decimals, never 1e-05."""
    assert [plain_number(x) for x in (0.1, 0.01, 1e-5, 2.0, 0.0)] == [
        "0.1",
        "0.01",
        "0.00001",
        "2",
        "0",
    ]
    w = make(spaces=1, spread=SpreadOptions(max_hops=2, decay=0.00005, threshold=1e-6))
    w.confirm_stored("space_01", "soak_run_1_0")
    req = w.spread(0)
    assert req is not None and "e-" not in req.query_text
    assert req.query_text.endswith("MAX_HOPS 2 DECAY 0.00005 THRESHOLD 0.000001")
