"""Tests for soakd.workload: seeded, identifier-safe, self-checking requests."""

from __future__ import annotations

import json
import math
import re
import sys
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soakd.spec.model import RecallOptions, SpreadOptions
from soakd.workload import (
    EMBEDDING_DIM,
    INDEX_BITS,
    K_DIRECT,
    MAX_COSINE,
    PART_COHERENCE,
    PART_DIM,
    PARTS,
    POOL_SIZE,
    IndexMixer,
    Workload,
    checksum,
    clear_pool_cache,
    content_is_self_consistent,
    part_pool,
    plain_number,
    sanitize_tag,
    space_names,
    stream_slot,
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


def test_pairwise_cosine_is_far_below_dedup() -> None:
    """Stores of one run, and store vs recall of the same k, stay far below Engram's 0.95."""
    w = make()
    vecs = [w.store(k).embedding for k in range(60)]
    worst = max(abs(cosine(a, b)) for i, a in enumerate(vecs) for b in vecs[i + 1 :])
    assert worst <= MAX_COSINE + 1e-5 < 0.7
    # Store and recall draws of the same k are different parts.
    assert w.part_indices(3) != w.part_indices(3, recall=True)
    assert abs(cosine(w.store(3).embedding, recall_vector(w, 3))) <= MAX_COSINE + 1e-5


# -- the part construction (module docstring: "Which parts", "How far apart") -------


def recall_vector(w: Workload, k: int) -> list[float]:
    params = parse_qs(w.recall(k).query_string)
    vec: list[float] = json.loads(params["embedding"][0])
    return vec


def unxorshift(y: int, r: int) -> int:
    x = y
    for _ in range(INDEX_BITS // r + 1):
        x = y ^ (x >> r)
    return x


def unmix(m: IndexMixer, y: int) -> int:
    """The inverse of ``m.function()``: its existence proves the mixer is a bijection."""
    mod = 1 << INDEX_BITS
    for mul, add, shift in reversed(list(zip(m.mul, m.add, m.shift, strict=True))):
        y = unxorshift(y, shift)
        y = ((y - add) * pow(mul, -1, mod)) % mod
    return y


def test_part_geometry_constants() -> None:
    """3 parts of 256 make 768; 2048 parts; the cosine bound is (2 + 1/16) / 3."""
    assert PARTS * PART_DIM == EMBEDDING_DIM
    assert POOL_SIZE == 2**11 and POOL_SIZE**PARTS == 2**INDEX_BITS
    assert math.isclose(MAX_COSINE, 0.6875)
    # Each stream keeps over 4e9 k one to one: ~4x a 7-day run at thousands of stores/s.
    assert K_DIRECT > 4 * 10**9


@given(x=st.integers(min_value=0, max_value=2**INDEX_BITS - 1), seed=st.integers(0, 2**63 - 1))
@settings(max_examples=300, deadline=None)
def test_index_mixer_is_a_bijection(x: int, seed: int) -> None:
    """Every seeded mixer has an inverse on [0, 2**33), so no two indices share all digits."""
    m = IndexMixer.seeded(seed, "tag")
    y = m.function()(x)
    assert 0 <= y < 2**INDEX_BITS
    assert unmix(m, y) == x


def test_part_indices_injective_over_a_large_range() -> None:
    """2**17 consecutive k and 2**17 spread over all 4.29e9: all different, both streams."""
    w = make()
    stride = K_DIRECT // 2**17
    ks = [*range(2**17), *range(2**17, K_DIRECT, stride)]
    seen = {w.part_indices(k, recall=r) for k in ks for r in (False, True)}
    assert len(seen) == 2 * len(ks)
    assert all(0 <= d < POOL_SIZE for triple in list(seen)[:1000] for d in triple)


@given(
    k1=st.integers(min_value=0, max_value=K_DIRECT - 1),
    k2=st.integers(min_value=0, max_value=K_DIRECT - 1),
    r1=st.booleans(),
    r2=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_part_indices_differ_for_different_requests(k1: int, k2: int, r1: bool, r2: bool) -> None:
    """Any two (k, stream) of a run below the direct range get different part triples."""
    w = make()
    same = w.part_indices(k1, recall=r1) == w.part_indices(k2, recall=r2)
    assert same == ((k1, r1) == (k2, r2))


def test_huge_k_fold_into_the_reserve() -> None:
    """The daemon's seed stores (k = 10**15 + i) land beyond every directly mapped k."""
    assert [stream_slot(k) for k in (0, 1, K_DIRECT - 1)] == [0, 1, K_DIRECT - 1]
    slots = {stream_slot(10**15 + i) for i in range(1000)}
    assert len(slots) == 1000 and min(slots) >= K_DIRECT
    assert max(slots) < 2 ** (INDEX_BITS - 1)


def test_no_two_k_share_all_three_parts() -> None:
    """A few thousand stores and recalls, plus seed stores: never the same three parts."""
    w = make()
    ks = [*range(3000), *range(10**15, 10**15 + 200), K_DIRECT - 1, K_DIRECT]
    triples = [w.part_indices(k, recall=r) for k in ks for r in (False, True)]
    assert len(set(triples)) == len(triples)
    bodies = {w.store(k).body.split(b'"embedding":')[1] for k in range(500)}
    assert len(bodies) == 500


def pairs_sharing_two_parts(w: Workload, n: int, limit: int) -> list[tuple[int, int]]:
    """Store k pairs among range(n) whose triples agree in exactly two places."""
    found: list[tuple[int, int]] = []
    buckets: dict[tuple[int, int, int], int] = {}
    for k in range(n):
        a, b, c = w.part_indices(k)
        for key in ((0, a, b), (1, a, c), (2, b, c)):
            other = buckets.setdefault(key, k)
            if other != k:
                found.append((other, k))
                if len(found) >= limit:
                    return found
    return found


def test_worst_cosine_includes_pairs_sharing_two_parts() -> None:
    """Stores that share two parts exist and sit near 2/3: above 0.5, at most 0.7."""
    w = make()
    pairs = pairs_sharing_two_parts(w, 200_000, 40)
    assert len(pairs) == 40  # ~14,000 expected in 200k stores: the sample sees them
    shared_cos = [cosine(w.store(i).embedding, w.store(j).embedding) for i, j in pairs]
    assert min(shared_cos) > 0.5
    # A constructed pair: parts (a, b, c) and (a, b, c'), in all of c' for one c.
    pool = w.pool
    base = pool.embedding((5, 9, 77))
    constructed = [cosine(base, pool.embedding((5, 9, c))) for c in range(POOL_SIZE) if c != 77]
    assert min(constructed) > 0.5
    # The worst over everything: shared pairs, the constructed ones, 80 stores pairwise.
    vecs = [w.store(k).embedding for k in range(80)]
    sample = [cosine(a, b) for i, a in enumerate(vecs) for b in vecs[i + 1 :]]
    worst = max(*shared_cos, *constructed, *sample)
    assert worst <= 0.7
    assert worst <= MAX_COSINE + 1e-5


def test_pool_parts_are_unit_and_near_orthogonal() -> None:
    """All 2048 parts: norm 1/sqrt(3), and any two have a dot of 0 or +-1/16 (unit scale).

    This is the property the cosine bound stands on; checked on the printed
    text, for two different runs (the coordinate permutation keeps it).
    """
    np = pytest.importorskip("numpy")
    for seed, tag in ((7, "run_1"), (123, "other")):
        pool = part_pool(seed, tag)
        parts = np.array([pool.part(i) for i in range(POOL_SIZE)]) * math.sqrt(PARTS)
        norms = (parts * parts).sum(axis=1)
        assert np.abs(norms - 1.0).max() < 1e-12
        gram = parts @ parts.T
        np.fill_diagonal(gram, 0.0)
        assert np.abs(gram).max() <= PART_COHERENCE + 1e-5
        # Only 0 and +-1/16 occur, and both do (the test can tell the cases apart).
        rounded = set(np.unique(np.round(gram * 16)).tolist())
        assert rounded == {-1.0, 0.0, 1.0}


def test_embeddings_exactly_as_sent() -> None:
    """StoreRequest.embedding is the body's embedding, and unit-norm to float precision."""
    w = make()
    for k in (0, 1, 99, 10**9, 10**15 + 3):
        req = w.store(k)
        doc = json.loads(req.body)
        assert list(req.embedding) == doc["embedding"]
        assert abs(math.fsum(x * x for x in req.embedding) - 1.0) < 1e-12
        assert abs(math.fsum(x * x for x in recall_vector(w, k)) - 1.0) < 1e-12
        assert req.embedding == w.pool.embedding(w.part_indices(k))


def test_determinism_across_instances_and_cache() -> None:
    """The same (seed, tag) gives the same requests, however its pool was obtained."""
    first = make(seed=3, tag="det")
    bodies = [first.store(k).body for k in (0, 5, 10**8)]
    queries = [first.recall(k).query_string for k in (0, 5, 10**8)]
    clear_pool_cache()
    make(seed=4, tag="det")  # the next pool is derived from this one, not from the base
    again = make(seed=3, tag="det")
    assert [again.store(k).body for k in (0, 5, 10**8)] == bodies
    assert [again.recall(k).query_string for k in (0, 5, 10**8)] == queries
    assert again.pool.texts == first.pool.texts


def test_runs_send_different_embeddings() -> None:
    """Another tag (a new run) or seed gives other parts and a low cross-run cosine."""
    a, b = make(seed=7, tag="run-1"), make(seed=7, tag="run-2")
    assert a.pool.texts != b.pool.texts and a.pool.texts[0] != b.pool.texts[0]
    assert a.pool.texts != make(seed=8, tag="run-1").pool.texts
    va = [a.store(k).embedding for k in range(40)]
    vb = [b.store(k).embedding for k in range(40)]
    assert max(abs(cosine(x, y)) for x in va for y in vb) < 0.3


def test_pool_memory_is_a_few_mb() -> None:
    """A pool's text stays under 6.5 MB (2048 parts of ~2.8 KB)."""
    pool = make().pool
    size = sys.getsizeof(pool.texts) + sum(sys.getsizeof(t) for t in pool.texts)
    assert 4_000_000 < size < 6_500_000


@given(tag=st.text(max_size=20), k=st.integers(min_value=0, max_value=10**16))
@settings(max_examples=40, deadline=None)
def test_store_body_is_valid_json_for_any_tag(tag: str, k: int) -> None:
    """The body is built by concatenation: whatever the tag, it parses to what was meant."""
    w = Workload(1, tag, ["space_01", 'we"ird\\space'], RecallOptions(), SpreadOptions())
    req = w.store(k)
    doc = json.loads(req.body)
    assert (doc["id"], doc["content"], doc["memory_space_id"]) == (
        req.memory_id,
        req.content,
        req.space,
    )
    assert w.verify(req.memory_id, doc["content"])


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
