"""Tests of the durable run store (soakd.store)."""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import fields
from pathlib import Path

import pytest

from soakd.errors import StartupError, UsageError
from soakd.model import (
    Alert,
    AlertState,
    AlertTransition,
    ConsolidationRun,
    Event,
    IntervalRecord,
    Op,
    RunInfo,
    Sample,
)
from soakd.store import SAMPLE_COLUMNS, SCHEMA_VERSION, Batch, RunStore, migrate

#: A state dir written by soakd 949b37b (schema 1): see tests/fixtures/state_v1/README.md.
FIXTURE = Path(__file__).parent / "fixtures" / "state_v1"


def _info() -> RunInfo:
    return RunInfo(
        run_id="r1",
        spec_fingerprint="abc",
        spec_text="duration: 1h\n",
        started_at=1000.0,
        planned_duration_s=3600.0,
        target_url="http://127.0.0.1:7432",
    )


def test_round_trip_of_every_record_kind(tmp_path: Path) -> None:
    """Everything written in a batch reads back equal after the store is reopened."""
    store = RunStore.create(tmp_path, _info())
    sample = Sample(
        t=1001.0, pid=42, rss_bytes=123, heap_bytes=45, cpu_user_s=1.5, loop_lag_s=0.001
    )
    interval = IntervalRecord(
        Op.STORE, 1000.0, 1010.0, 5, 4, {"http_500": 1}, 0, 1, b"r", b"s", b"l"
    )
    run = ConsolidationRun("space_01", 1002.0, "2026-01-01T00:00:00Z", 1767225600.0, 60.5)
    event = Event(1003.0, "target_crash", "died", {"signal": 9})
    alert = Alert("crash", {"alertname": "crash"}, AlertState.FIRING, 1004.0, 1.0, "crashed")
    transition = AlertTransition(
        1004.0, "crash", {"alertname": "crash"}, AlertState.PENDING, AlertState.FIRING, 1.0, "x"
    )
    store.write(
        Batch(
            samples=[sample],
            intervals=[interval],
            consolidation_runs=[run],
            events=[event],
            alert_transitions=[transition],
            alert_states=[alert],
            counters={"integrity_lost": 3},
        )
    )
    store.close()
    again = RunStore.open(tmp_path, readonly=True)
    assert again.run_info() == _info()
    assert again.samples() == [sample]
    assert isinstance(again.samples()[0].rss_bytes, int)
    assert again.intervals(Op.STORE) == [interval]
    assert again.intervals(Op.RECALL) == []
    assert again.consolidation_runs() == [run]
    assert again.events(("target_crash",)) == [event]
    assert again.alert_states() == [alert]
    assert again.alert_history() == [transition]
    assert again.counters() == {"integrity_lost": 3}


def test_create_refuses_an_existing_run(tmp_path: Path) -> None:
    """A second create on the same state dir is refused instead of mixing two runs."""
    RunStore.create(tmp_path, _info()).close()
    with pytest.raises(UsageError, match="already holds a run"):
        RunStore.create(tmp_path, _info())


def test_open_of_an_empty_dir_is_a_clear_error(tmp_path: Path) -> None:
    """Opening a directory without a run names the directory."""
    with pytest.raises(UsageError, match="holds no soakd run"):
        RunStore.open(tmp_path)


def test_ranges_and_chunked_iteration(tmp_path: Path) -> None:
    """Time ranges are inclusive and chunked iteration yields every sample once, in order."""
    store = RunStore.create(tmp_path, _info())
    store.write(Batch(samples=[Sample(t=float(t), pid=1, rss_bytes=t) for t in range(100)]))
    assert [s.t for s in store.samples(since=10, until=12)] == [10.0, 11.0, 12.0]
    chunks = list(store.iter_samples(chunk=30))
    assert [len(c) for c in chunks] == [30, 30, 30, 10]
    assert [s.t for c in chunks for s in c] == [float(t) for t in range(100)]


def test_thinning_keeps_one_sample_per_step(tmp_path: Path) -> None:
    """Thinning old samples keeps one per step and leaves newer ones untouched."""
    store = RunStore.create(tmp_path, _info())
    store.write(Batch(samples=[Sample(t=float(t), pid=1) for t in range(120)]))
    removed = store.thin_samples(before=60.0, keep_every_s=10)
    assert removed == 54
    times = [s.t for s in store.samples()]
    assert times[:6] == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    assert times[6:] == [float(t) for t in range(60, 120)]


def test_batch_take_empties_the_batch(tmp_path: Path) -> None:
    """take() hands over everything and leaves an empty batch behind."""
    batch = Batch(samples=[Sample(t=1.0, pid=1)], counters={"a": 1}, integrity_pending=[])
    out = batch.take()
    assert len(out) == 3 and out.integrity_pending == []
    assert len(batch) == 0 and batch.integrity_pending is None


def _interval(op: Op, start: float, count: int, latency_ns: int) -> IntervalRecord:
    from soakd.stats import Histogram

    h = Histogram()
    for _ in range(count):
        h.record_ns(latency_ns)
    blob = h.encode()
    return IntervalRecord(
        op, start, start + 10.0, count, count - 1, {"http_500": 1}, 2, 1, blob, blob, blob
    )


def test_compaction_merges_old_intervals_once_and_keeps_every_count(tmp_path: Path) -> None:
    """Old 10 s records become 60 s records with summed counts and merged histograms."""
    from soakd.stats import summarize

    store = RunStore.create(tmp_path, _info())
    records = [_interval(Op.STORE, 1200.0 + 10 * i, 10, (i + 1) * 1_000_000) for i in range(24)]
    records += [_interval(Op.RECALL, 1200.0 + 10 * i, 5, 2_000_000) for i in range(24)]
    store.write(Batch(intervals=records))
    before = summarize(Op.STORE, store.intervals(Op.STORE))
    removed = store.compact_intervals(until=1380.0, width_s=60.0)
    # 18 records per op in [1200, 1380) become 3 per op; the rest stay as they were
    assert removed == 2 * (18 - 3)
    assert len(store.intervals(Op.STORE)) == 3 + 6
    after = summarize(Op.STORE, store.intervals(Op.STORE))
    assert (after.count, after.ok, after.dropped, after.late) == (
        before.count,
        before.ok,
        before.dropped,
        before.late,
    )
    assert after.errors == before.errors == {"http_500": 24}
    assert after.latency.max_ms == before.latency.max_ms
    assert after.latency.p50_ms == before.latency.p50_ms
    assert store.compact_intervals(until=1380.0, width_s=60.0) == 0  # nothing twice
    assert store.compact_intervals(until=1440.0, width_s=60.0) == 2 * 5


def test_pending_read_backs_are_replaced_whole_and_survive_a_reopen(tmp_path: Path) -> None:
    """Each batch's pending list replaces the last one; None leaves it; reopening keeps it."""
    store = RunStore.create(tmp_path, _info())
    store.write(Batch(integrity_pending=[("s1", "m1", 1003.0), ("s2", "m2", 1002.0)]))
    assert store.integrity_pending() == [("s2", "m2", 1002.0), ("s1", "m1", 1003.0)]
    store.write(Batch(counters={"integrity_checked": 1}))  # no list: unchanged
    assert len(store.integrity_pending()) == 2
    store.write(Batch(integrity_pending=[("s3", "m3", 1009.0)]))
    store.close()
    reopened = RunStore.open(tmp_path, readonly=True)
    assert reopened.integrity_pending() == [("s3", "m3", 1009.0)]
    reopened.close()


def _schema_1_store(state_dir: Path, *, pending_table: bool = True) -> None:
    """A run store as soakd wrote it before schema 2 (``meta`` says 1, no user_version)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(state_dir / "run.sqlite")
    migrate(conn, 0, until=1)
    conn.execute("PRAGMA user_version = 0")
    if not pending_table:
        conn.execute("DROP TABLE integrity_pending")
    info = _info()
    conn.execute(
        "INSERT INTO run (id, run_id, spec_fingerprint, spec_text, started_at,"
        " planned_duration_s, ended_at, status, target_url)"
        " VALUES (1, ?, ?, ?, ?, ?, NULL, 'running', ?)",
        (info.run_id, info.spec_fingerprint, info.spec_text, 1000.0, 3600.0, info.target_url),
    )
    conn.execute("INSERT INTO counters (name, value) VALUES ('next_k_store', 7)")
    conn.commit()
    conn.close()


def test_a_store_from_before_the_pending_table_gets_it_on_resume(tmp_path: Path) -> None:
    """A run store written by an older soakd (no integrity_pending table) still resumes."""
    _schema_1_store(tmp_path, pending_table=False)
    old = RunStore.open(tmp_path, readonly=True)
    assert old.integrity_pending() == []  # read-only: nothing to add, nothing to read
    old.close()
    resumed = RunStore.open(tmp_path)
    assert resumed.integrity_pending() == []
    resumed.write(Batch(integrity_pending=[("s1", "m1", 1.0)]))
    assert resumed.integrity_pending() == [("s1", "m1", 1.0)]
    assert resumed.counters() == {"next_k_store": 7}
    resumed.close()


def _fixture_copy(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(FIXTURE / "run.sqlite", state / "run.sqlite")
    return state


def test_every_sample_field_has_a_column_of_the_latest_schema() -> None:
    """A new Sample field without a migration adding its column fails here, not at a resume."""
    assert sorted(SAMPLE_COLUMNS) == sorted(f.name for f in fields(Sample))


def test_a_state_dir_of_the_previous_soakd_resumes_and_takes_the_new_fields(
    tmp_path: Path,
) -> None:
    """The fixture (soakd 949b37b, schema 1) is upgraded in place and keeps all it held."""
    state = _fixture_copy(tmp_path)
    store = RunStore.open(state)
    try:
        assert store._one("PRAGMA user_version")[0] == SCHEMA_VERSION
        old_samples = store.samples()
        assert len(old_samples) == 23
        assert all(s.rss_anon_bytes is None for s in old_samples)
        assert old_samples[-1].rss_bytes
        assert len(store.intervals(Op.SPREAD)) >= 5
        firing = [a for a in store.alert_states() if a.state is AlertState.FIRING]
        assert [a.rule for a in firing] == ["spread_errors"]
        new = Sample(
            t=old_samples[-1].t + 1,
            pid=1,
            rss_bytes=10,
            rss_anon_bytes=4,
            rss_file_bytes=5,
            rss_shmem_bytes=1,
            mem_available_bytes=2**30,
        )
        store.write(Batch(samples=[new]))
        assert store.samples()[-1] == new
    finally:
        store.close()
    again = RunStore.open(state)  # a second open finds it current: nothing to migrate
    try:
        assert again.sample_count() == 24
    finally:
        again.close()


def test_a_previous_state_dir_reads_read_only_without_an_upgrade(tmp_path: Path) -> None:
    """``soakd report``/``status`` on an old state dir read it as it is (new fields None)."""
    state = _fixture_copy(tmp_path)
    store = RunStore.open(state, readonly=True)
    try:
        samples = store.samples()
        assert len(samples) == 23 and samples[0].mem_available_bytes is None
        assert sum(len(c) for c in store.iter_samples(chunk=5)) == 23
    finally:
        store.close()
    conn = sqlite3.connect(state / "run.sqlite")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0  # untouched
    conn.close()


def test_a_store_of_a_newer_soakd_is_refused_clearly(tmp_path: Path) -> None:
    """A schema newer than this code knows is a start-up error naming both versions."""
    store = RunStore.create(tmp_path, _info())
    store._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store.close()
    for readonly in (False, True):
        with pytest.raises(StartupError) as err:
            RunStore.open(tmp_path, readonly=readonly)
        text = str(err.value)
        assert f"schema {SCHEMA_VERSION + 1}" in text and "newer soakd" in text
        assert f"up to {SCHEMA_VERSION}" in text
        assert err.value.exit_code == 3
