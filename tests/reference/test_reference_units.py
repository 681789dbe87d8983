"""In-process tests of the reference server's pieces (grammar, vectors, space, config)."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest

from soakd.reference import persist
from soakd.reference.cli import parse_config
from soakd.reference.config import parse_duration_s, parse_per_op, parse_signal
from soakd.reference.consolidation import Snapshot, consolidate
from soakd.reference.faults import TokenBucket
from soakd.reference.harness import unit_embedding
from soakd.reference.metrics import MetricsWindow
from soakd.reference.space import MemorySpace, StoreResult
from soakd.reference.spread import QueryError, SpreadQuery, parse_query, spread
from soakd.reference.vectors import VectorStore, normalise, sign_code


def test_parse_spread_defaults_and_any_order() -> None:
    """Defaults are 3 / 0.1 / 0.01; keywords are case-insensitive in any order."""
    assert parse_query("SPREAD FROM a") == SpreadQuery("a", 3, 0.1, 0.01)
    parsed = parse_query("spread from node_1 threshold 0.2 decay 0.5 max_hops 6")
    assert parsed == SpreadQuery("node_1", 6, 0.5, 0.2)


def test_parse_spread_ignores_unknown_words() -> None:
    """`HOPS 3` is silently ignored, so MAX_HOPS keeps its default."""
    assert parse_query("SPREAD FROM a HOPS 5").max_hops == 3


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("SPREAD FROM a MAX_HOPS 7", 400),
        ("SPREAD FROM a MAX_HOPS 12", 400),
        ("SPREAD FROM mem-1", 400),
        ("SPREAD FROM 1abc", 400),
        ("SPREAD a", 400),
        ("SPREAD FROM a DECAY 1.5", 400),
        ("SPREAD FROM a MAX_HOPS x", 400),
        ("SPREAD FROM a MAX_HOPS", 400),
        ("", 400),
        ("SELECT * FROM t", 400),
        ("RECALL x", 501),
    ],
)
def test_parse_spread_rejections(text: str, status: int) -> None:
    """Malformed or too complex queries are rejected with Engram's status."""
    with pytest.raises(QueryError) as err:
        parse_query(text)
    assert err.value.status == status


def test_spread_decay_threshold_and_hops() -> None:
    """Activation decays per hop, shares out over links and stops below the threshold."""
    space = MemorySpace("s", 100)
    for i in range(20):
        space.remember(f"m{i}", "x", unit_embedding(i), 0.7, 0.0)
    result = spread(space, SpreadQuery("m19", 2, 0.1, 0.001))
    assert result[0].memory.id == "m19" and result[0].activation == 1.0
    assert all(a.hops <= 2 for a in result)
    assert all(a.activation <= 0.9 for a in result[1:])  # (1 - decay) * shared weight
    assert all(a.activation >= 0.001 for a in result)
    assert spread(space, SpreadQuery("absent", 3, 0.1, 0.01)) == []


def test_vector_search_finds_near_and_skips_far() -> None:
    """The code pre-filter keeps a cosine ~0.8 neighbour and drops random vectors."""
    store = VectorStore(2000)
    store.ensure(2000)
    rng = np.random.default_rng(0)
    for slot in range(2000):
        unit = normalise(rng.standard_normal(768).astype(np.float32))
        store.put(slot, unit, sign_code(unit))
    base = normalise(store.q[10].astype(np.float32))
    noise = normalise(rng.standard_normal(768).astype(np.float32))
    noise = normalise(noise - noise.dot(base) * base)
    query = normalise(0.8 * base + 0.6 * noise)
    hits = store.search(query, 0.5, 10)
    assert [slot for slot, _ in hits] == [10]
    assert hits[0][1] == pytest.approx(0.8, abs=0.01)


def test_dedup_replace_and_eviction_order() -> None:
    """Near copies are skipped, same id replaces, and recalled memories outlive idle ones."""
    space = MemorySpace("s", 3)
    assert space.remember("a", "x", unit_embedding(1), 0.7, 0.0).result is StoreResult.STORED
    dup = space.remember("b", "x", unit_embedding(1), 0.7, 0.0)
    assert dup.result is StoreResult.DEDUPLICATED and dup.duplicate_of == "a"
    assert space.remember("a", "y", unit_embedding(2), 0.7, 0.0).result is StoreResult.REPLACED
    space.remember("c", "x", unit_embedding(3), 0.7, 0.0)
    space.remember("d", "x", unit_embedding(4), 0.7, 0.0)
    memory_a = space.get("a")
    assert memory_a is not None
    space.touch(memory_a, 0.5, 0.0)  # "a" is the oldest, but recalled
    outcome = space.remember("e", "x", unit_embedding(5), 0.7, 0.0)
    assert outcome.evicted == "c" and len(space) == 3


def test_consolidation_pass_extracts_patterns() -> None:
    """A pass replays recent memories; similar ones cluster into one pattern."""
    space = MemorySpace("s", 100)
    base = np.array(unit_embedding(1))
    for i in range(3):
        near = base + 0.3 * np.array(unit_embedding(100 + i))
        space.remember(f"near_{i}", "x", near.tolist(), 0.7, 0.0)
    snap = Snapshot(generated_at=0.0)
    patterns = consolidate(space, snap, window=256, now=10.0)
    assert patterns >= 1 and snap.generated_at == 10.0
    assert snap.stats.total_replays == 3
    ids = {c["episode_id"] for b in snap.beliefs for c in b["citations"]}
    assert ids == {"near_0", "near_1", "near_2"}


def test_durations_per_op_and_signals() -> None:
    """Durations take s/ms/m suffixes; per-op specs take one value or OP=V pairs."""
    assert parse_duration_s("1.5s") == 1.5
    assert parse_duration_s("500ms") == 0.5
    assert parse_duration_s("2m") == 120.0
    assert parse_duration_s("7") == 7.0
    with pytest.raises(ValueError):
        parse_duration_s("soon")
    assert parse_per_op("0.5", float) == {"store": 0.5, "recall": 0.5, "spread": 0.5, "get": 0.5}
    assert parse_per_op("store=503", int) == {"store": 503.0}
    with pytest.raises(ValueError):
        parse_per_op("write=1", float)
    assert parse_signal("SEGV") is signal.SIGSEGV and parse_signal("SIGABRT") is signal.SIGABRT


def test_token_bucket_pays_the_burst_then_queues_first_come_first_served() -> None:
    bucket = TokenBucket(rate=10.0, burst=3.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert bucket.take(0.0) == pytest.approx(0.1)  # one in debt: 0.1 s of refill
    assert bucket.take(0.0) == pytest.approx(0.2)  # behind it
    assert bucket.take(0.5) == pytest.approx(0.0)  # 5 tokens paid 2 debts and this one
    assert bucket.take(100.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # capped at 3


def test_flags_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flag wins over its environment variable, which wins over the default."""
    monkeypatch.setenv("ENGRAM_REF_CAPACITY", "50")
    monkeypatch.setenv("ENGRAM_REF_WRITE_LOSS", "0.25")
    config = parse_config(["--capacity", "70"])
    assert config.capacity == 70 and config.faults.write_loss == 0.25
    assert config.consolidation.interval_s == 60.0 and not config.stock


def test_metrics_windows() -> None:
    """Summaries hold count/sum/percentiles per window; old points leave the window."""
    window = MetricsWindow()
    for i in range(100):
        window.observe("store_duration_seconds", i / 1000.0, now=1000.0)
    window.observe("store_duration_seconds", 5.0, now=1300.5)
    recent = window.window(10.0, now=1301.0)["store_duration_seconds"]
    assert recent["count"] == 1.0 and recent["max"] == 5.0
    text = window.prometheus_text({"memories": 3.0}, now=1301.0)
    assert 'engram_store_duration_seconds{quantile="0.99"}' in text
    assert "engram_memories 3" in text


def test_persist_round_trip(tmp_path: Path) -> None:
    """A saved space loads back with its memories, vectors and links."""
    space = MemorySpace("space_x", 10)
    for i in range(5):
        space.remember(f"m{i}", f"content {i}", unit_embedding(i), 0.7, float(i))
    persist.write(persist.capture(space), tmp_path)
    (loaded,) = persist.load_all(tmp_path, 10)
    assert sorted(loaded.by_id) == sorted(space.by_id)
    assert loaded.recall_embedding(unit_embedding(3), 0.9, 1)[0][0].id == "m3"
    original = [a.memory.id for a in spread(space, SpreadQuery("m4", 3, 0.1, 0.01))]
    restored = [a.memory.id for a in spread(loaded, SpreadQuery("m4", 3, 0.1, 0.01))]
    assert original == restored
    assert loaded.remember("m9", "x", unit_embedding(9), 0.7, 0.0).result is StoreResult.STORED


def test_reference_imports_nothing_else_of_soakd() -> None:
    """The reference server stands in for another product: it imports only soakd.reference.*."""
    import ast

    import soakd.reference

    package = Path(soakd.reference.__file__).parent
    offenders = []
    for module in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{module.name}: {name}"
                for name in names
                if name.split(".")[0] == "soakd" and not name.startswith("soakd.reference")
            ]
    assert offenders == []


def test_memories_are_not_gc_tracked() -> None:
    """Records are atomic tuples and id maps hold str/int, so full GC passes stay short."""
    import gc

    space = MemorySpace("s", 100)
    for i in range(10):
        space.remember(f"m{i}", "x", unit_embedding(i), 0.7, 0.0)
    gc.collect()
    assert not any(gc.is_tracked(r) for r in space.records)
    assert not gc.is_tracked(space.by_id) and not gc.is_tracked(space.by_uid)


def test_help_documents_every_knob_and_its_env_var() -> None:
    """--help names every option with its environment variable, and --stock's."""
    from soakd.reference.cli import OPTIONS, STOCK_ENV, build_parser

    text = " ".join(build_parser().format_help().split())
    for opt in OPTIONS:
        assert opt.flag in text
        if opt.env:
            assert f"env {opt.env}" in text
    assert "--stock" in text and STOCK_ENV in text
    docs = (Path(__file__).parents[2] / "docs" / "reference-target.md").read_text()
    for opt in OPTIONS:
        if opt.help.startswith("FAULT"):
            assert opt.flag in docs and str(opt.env) in docs


def test_main_returns_usage_status_instead_of_exiting() -> None:
    """cli.main returns 2 for a bad value and 0 for --help, without raising SystemExit."""
    from soakd.reference.cli import main

    assert main(["--write-loss", "1.5"]) == 2
    assert main(["--help"]) == 0
