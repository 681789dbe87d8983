"""soakd itself SIGKILLed at random points (mid-flush, mid-report), judged from outside.

One soak is killed four times at seeded random moments and then run to
completion on the same state dir. The run flushes every 100 ms and samples
every 200 ms, so a kill lands inside (or right next to) a store transaction
more often than not. Before each kill the test copies what the store holds;
afterwards every one of those rows must still be there, in order. Then
``soakd report`` is itself SIGKILLed at random moments: the report files must
always be complete (the previous ones or the new ones), never partial.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from soakd.errors import SoakdError
from soakd.model import IntervalRecord, Sample
from soakd.store import RunStore
from soakd.testing import free_port, soak_spec, wait_for

#: The ``spawn`` fixture of conftest.py: ``spawn(args, stderr_file) -> Popen``.
Spawn = Callable[..., "subprocess.Popen[bytes]"]
SEED = 9
KILLS = 4
REPORTS = ("report.json", "report.md", "report.html")
pytestmark = pytest.mark.timeout(300)


def _snapshot(state: Path) -> tuple[list[Sample], list[IntervalRecord], int]:
    """Samples, intervals and event count the store holds now (empty before it exists)."""
    if not RunStore.exists(state):
        return [], [], 0
    try:
        store = RunStore.open(state, readonly=True)
    except SoakdError:  # created a moment ago, schema not yet committed
        return [], [], 0
    try:
        return store.samples(), store.intervals(), len(store.events())
    finally:
        store.close()


def _more_samples(state: Path, than: int) -> Callable[[], bool]:
    return lambda: len(_snapshot(state)[0]) > than


def _after(seconds: float, proc: subprocess.Popen[bytes] | None = None) -> Callable[[], bool]:
    """A predicate: ``seconds`` have passed from now (or ``proc`` ended before)."""
    t0 = time.monotonic()
    return lambda: (
        time.monotonic() - t0 >= seconds or (proc is not None and proc.poll() is not None)
    )


def _integrity(state: Path) -> str:
    conn = sqlite3.connect(f"file:{state / 'run.sqlite'}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.slow
def test_random_sigkills_lose_nothing_flushed_and_resume_one_run(
    tmp_path: Path, spawn: Spawn
) -> None:
    """Four SIGKILLs at random moments, then a run to the end: one run, nothing flushed lost."""
    rng = random.Random(SEED)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        soak_spec(
            free_port(),
            duration="40s",
            store=40,
            recall=20,
            spread=5,
            spaces=2,
            extra="sampling: {interval: 200ms, flush_interval: 100ms, stats_interval: 1s}",
        )
    )
    state, err = tmp_path / "state", tmp_path / "stderr"
    args = ["run", str(spec), "--state-dir", str(state)]
    run_ids: set[str] = set()
    kept: list[tuple[list[Sample], list[IntervalRecord]]] = []
    for _ in range(KILLS):
        before = len(_snapshot(state)[0])
        proc = spawn(args, err)
        # Wait until this incarnation has flushed samples of its own, then a
        # random extra moment (seeded) so the kill lands anywhere in a cycle.
        wait_for(
            _more_samples(state, before + 3),
            timeout_s=60,
            what="samples flushed by this incarnation",
        )
        wait_for(_after(rng.uniform(0.05, 2.5)), timeout_s=5, what="random delay")
        samples, intervals, _ = _snapshot(state)
        proc.kill()
        proc.wait(timeout=30)
        assert proc.returncode == -9
        kept.append((samples, intervals))
        store = RunStore.open(state, readonly=True)
        try:
            run_ids.add(store.run_info().run_id)
        finally:
            store.close()
        assert _integrity(state) == "ok"

    final = spawn(args, err)
    final.wait(timeout=120)
    text = err.read_text()
    assert final.returncode in (0, 1), text[-3000:]
    assert "Traceback" not in text

    samples, intervals, _ = _snapshot(state)
    store = RunStore.open(state, readonly=True)
    try:
        info = store.run_info()
        gaps = store.events(("gap",))
    finally:
        store.close()
    run_ids.add(info.run_id)
    assert len(run_ids) == 1, run_ids
    assert info.status == "completed"
    assert len(gaps) == KILLS
    assert _integrity(state) == "ok"
    for before_samples, before_intervals in kept:
        # Everything the store held just before a kill is still there, in order.
        assert samples[: len(before_samples)] == before_samples
        assert intervals[: len(before_intervals)] == before_intervals
    times = [s.t for s in samples]
    assert times == sorted(times), "sample times go backwards"
    assert len(set(times)) == len(times), "a sample was written twice"

    report = json.loads((state / "report.json").read_text())
    assert report["run_id"] == info.run_id
    assert report["status"] == "completed"
    kinds = [e["kind"] for e in report["events"]]
    assert kinds.count("gap") == KILLS
    # The launched target was adopted across every kill: one PID throughout.
    assert len({s.pid for s in samples if s.pid is not None}) == 1

    _kill_reports(state, spawn, tmp_path, random.Random(SEED + 1))


def _read_reports(state: Path) -> dict[str, bytes]:
    return {name: (state / name).read_bytes() for name in REPORTS}


def _complete(reports: dict[str, bytes]) -> None:
    json.loads(reports["report.json"])  # raises on partial JSON
    assert reports["report.html"].rstrip().endswith(b"</html>")
    assert reports["report.md"].startswith(b"#")


def _kill_reports(state: Path, spawn: Spawn, tmp_path: Path, rng: random.Random) -> None:
    """SIGKILL ``soakd report`` at random moments: the files are always complete ones."""
    err = tmp_path / "report-stderr"
    args = ["report", str(state)]
    good = _read_reports(state)
    _complete(good)
    # How long one report takes here, so the kills spread over all of it.
    t0 = time.monotonic()
    whole = spawn(args, err)
    whole.wait(timeout=120)
    took = time.monotonic() - t0
    assert whole.returncode == 0, err.read_text()[-2000:]
    rewritten = _read_reports(state)
    _complete(rewritten)
    versions = [good, rewritten]
    killed_mid_way = 0
    for _ in range(6):
        at = rng.uniform(0.3, 1.0) * took
        proc = spawn(args, err)
        wait_for(
            _after(at, proc),
            timeout_s=took + 10,
            interval_s=0.005,
            what="the kill moment",
        )
        if proc.poll() is None:
            killed_mid_way += 1
        proc.kill()
        proc.wait(timeout=30)
        now = _read_reports(state)
        _complete(now)
        for name in REPORTS:
            # The reports of a finished run are deterministic, so "the old or the
            # new complete file" means byte-equal to one of the complete versions.
            assert any(now[name] == v[name] for v in versions), name
    assert killed_mid_way >= 3, "the report command finished before most kills"
