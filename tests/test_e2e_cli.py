"""End-to-end tests of the soakd CLI: real soakd processes against the real reference target."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from soakd.store import RunStore
from soakd.testing import (
    finished_report,
    free_port,
    soak_spec,
    soakd_command,
    store_figure,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _run(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        soakd_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=CHILD_ENV,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _ops(report: dict[str, object]) -> dict[str, dict[str, object]]:
    ops = report["operations"]
    assert isinstance(ops, dict)
    return ops


def test_plan_spec_validates() -> None:
    """The plan's own spec, as written, validates with exit 0."""
    for path in (ROOT / "config/soak_test.yaml", ROOT.parent / "shared/soak_test.yaml"):
        if path.exists():
            done = _run("validate", str(path), timeout_s=60)
            assert done.returncode == 0, done.stderr
            assert "valid" in done.stdout


def test_bad_spec_exits_2_naming_every_problem() -> None:
    """A misspelt key, a negative rate and an unknown phrase are all named, with paths, exit 2."""
    done = _run("validate", str(ROOT / "config/bad-example.yaml"), timeout_s=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "did you mean" in done.stderr
    assert "rate" in done.stderr
    assert "alerts[" in done.stderr
    assert done.stderr.count("line ") >= 3


def test_missing_spec_file_is_a_usage_error(tmp_path: Path) -> None:
    """A spec path that does not exist is a clear exit 2, not a traceback."""
    done = _run("validate", str(tmp_path / "nope.yaml"), timeout_s=60)
    assert done.returncode == 2
    assert "nope.yaml" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_stock_engram_spread_500_is_counted_and_the_run_completes(tmp_path: Path) -> None:
    """Against stock-Engram behaviour every SPREAD is an http_500; store and recall are unharmed."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(soak_spec(free_port(), duration="12s", knobs=["--stock"]))
    state = tmp_path / "state"
    done = _run("run", str(spec), "--state-dir", str(state))
    assert done.returncode == 1, done.stderr[-2000:]  # completed, and failed criteria
    report = finished_report(state, done.returncode, done.stderr)
    assert report["status"] == "completed"
    ops = _ops(report)
    spread = ops["spread"]
    assert spread["count"] > 0
    assert spread["errors"] == {"http_500": spread["count"]}
    for name in ("store", "recall"):
        assert ops[name]["errors"] == {}
        assert ops[name]["ok"] == ops[name]["count"] > 0


@pytest.mark.slow
def test_sigterm_stops_cleanly_with_a_stopped_report(tmp_path: Path) -> None:
    """SIGTERM mid-run: exit 4, report.json written with status 'stopped', target stopped."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(soak_spec(free_port(), duration="10m"))
    state = tmp_path / "state"
    proc = subprocess.Popen(
        soakd_command("run", str(spec), "--state-dir", str(state)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _ok_count(state) > 50, timeout_s=60, what="requests recorded")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 4, err[-2000:]
    report = finished_report(state, proc.returncode, err)
    assert report["status"] == "stopped"
    assert _ops(report)["store"]["count"] > 0
    assert "Traceback" not in err


def _ok_count(state: Path) -> int:
    path = state / "status.json"
    if not path.exists():
        return 0
    ops = json.loads(path.read_text()).get("operations", {})
    return int(ops.get("store", {}).get("ok", 0))


@pytest.mark.slow
def test_sigkill_then_resume_continues_the_same_run(tmp_path: Path) -> None:
    """soakd SIGKILLed and started again: one run id, samples before the kill kept, gap recorded."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(soak_spec(free_port(), duration="25s"))
    state = tmp_path / "state"
    first = subprocess.Popen(
        soakd_command("run", str(spec), "--state-dir", str(state)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=CHILD_ENV,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: store_figure(state, RunStore.sample_count, 0) >= 4,
            timeout_s=60,
            what="samples flushed",
        )
        wait_for(
            lambda: store_figure(state, lambda s: bool(s.integrity_pending()), False),
            timeout_s=60,
            what="read-backs pending in the store",
        )
        before = _store_samples(state)
        first.kill()
        first.wait(timeout=30)
    finally:
        first.kill()
    done = _run("run", str(spec), "--state-dir", str(state))
    assert done.returncode in (0, 1), done.stderr[-3000:]
    store = RunStore.open(state, readonly=True)
    try:
        after = store.samples()
        gaps = store.events(("gap",))
        info = store.run_info()
        counters = store.counters()
    finally:
        store.close()
    assert after[: len(before)] == before  # nothing flushed before the kill was lost
    # The read-backs pending at the kill were judged by the second soakd, all intact.
    assert counters["integrity_restored"] >= 1
    assert counters["integrity_lost"] == counters["integrity_corrupted"] == 0
    assert counters["integrity_checked"] >= counters["integrity_restored"]
    assert len(gaps) == 1
    assert info.status == "completed"
    report = finished_report(state, done.returncode, done.stderr)
    assert report["run_id"] == info.run_id
    events = report["events"]
    assert isinstance(events, list)
    assert any(e["kind"] == "gap" for e in events), "the report shows the gap"
    # the launched target was adopted, not relaunched: one PID throughout
    pids = {s.pid for s in after if s.pid is not None}
    assert len(pids) == 1


def _store_samples(state: Path) -> list[object]:
    store = RunStore.open(state, readonly=True)
    try:
        return list(store.samples())
    finally:
        store.close()
