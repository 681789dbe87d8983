"""One page per alert, whatever happens to soakd (issue 18), judged from outside.

A real webhook receiver on 127.0.0.1 records every notification; soakd runs as
a real child process against the reference target, whose every SPREAD fails
(``--error-rate spread=1.0``); the rule ``spread_errors`` fires on it.

* soakd SIGKILLed within 100 ms of its first page and restarted on the same
  state dir for ~90 s pages that alert once (before: twice, the resumed engine
  did not know the alert was firing: its state reached the store at the next
  flush, after the page);
* a 90 s run with a 30 s window fires once and never resolves; a 10 s window
  is refused at validation (exit 2, the rule's path);
* a state dir written by the previous soakd (tests/fixtures/state_v1) resumes.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from webhook_sink import Notification, WebhookSink, receivers_yaml

from soakd.model import AlertState
from soakd.store import SCHEMA_VERSION, RunStore
from soakd.testing import free_port, soak_spec, wait_for

Spawn = Callable[..., "subprocess.Popen[bytes]"]
SEED = 18
FIXTURE = Path(__file__).parent.parent / "fixtures" / "state_v1"
ALERT = "spread_errors"
pytestmark = pytest.mark.timeout(300)


def _spec(port: int, url: str, duration: str, window: str, sampling: str) -> str:
    return soak_spec(
        port,
        duration=duration,
        store=20,
        recall=10,
        spread=5,
        spaces=2,
        consolidation_interval=None,
        knobs=["--error-rate", "spread=1.0"],
        alerts=[f'{ALERT}: {{phrase: "spread error rate >50%", window: {window}}}'],
        extra=receivers_yaml(url) + sampling,
    )


def _firing_history(state: Path) -> list[float]:
    store = RunStore.open(state, readonly=True)
    try:
        return [
            t.t for t in store.alert_history() if t.rule == ALERT and t.new is AlertState.FIRING
        ]
    finally:
        store.close()


def _one_page(pages: list[Notification]) -> None:
    """One notification, or the documented duplicate: the same one again (same key)."""
    assert pages, "no firing notification at all"
    assert len({n.key for n in pages}) == 1, pages
    assert len({n.starts_at for n in pages}) == 1, pages
    assert len(pages) <= 2, pages


@pytest.mark.slow
def test_sigkill_right_after_the_first_page_pages_once(tmp_path: Path, spawn: Spawn) -> None:
    """Killed within 100 ms of the first page, restarted for ~90 s: one firing page, no more."""
    rng = random.Random(SEED)
    print(f"seed {SEED}")
    state, err = tmp_path / "state", tmp_path / "stderr"
    first: list[subprocess.Popen[bytes]] = []
    killed = threading.Event()
    delay_s = rng.uniform(0.0, 0.1)

    def kill_after_first_page(got: list[Notification]) -> None:
        if killed.is_set() or not any(n.alertname == ALERT for n in got):
            return
        killed.set()
        # From the receiver's thread, after the 200 went out: within 100 ms.
        threading.Timer(delay_s, first[0].kill).start()

    with WebhookSink(on_post=kill_after_first_page) as sink:
        spec = tmp_path / "spec.yaml"
        spec.write_text(
            _spec(
                free_port(),
                sink.url,
                "105s",
                "30s",
                "sampling: {interval: 500ms, flush_interval: 500ms, stats_interval: 2s}",
            )
        )
        args = ["run", str(spec), "--state-dir", str(state)]
        first.append(spawn(args, err))
        wait_for(killed.is_set, timeout_s=60, what="the first page")
        first[0].wait(timeout=30)
        assert first[0].returncode == -9
        killed_at = time.monotonic()
        resumed = spawn(args, err)
        resumed.wait(timeout=150)
        ran_s = time.monotonic() - killed_at
        text = err.read_text()
        assert resumed.returncode in (0, 1), text[-3000:]
        pages = sink.notifications(ALERT)
    print(f"first page killed soakd within {delay_s * 1000:.0f} ms; restarted for {ran_s:.0f} s")
    assert ran_s >= 85, f"the restarted soakd ran only {ran_s:.0f} s"
    firing = [n for n in pages if n.status == "firing"]
    _one_page(firing)
    assert [n for n in pages if n.status == "resolved"] == []
    # The store agrees: one transition to firing, and the alert still firing at the end.
    assert len(_firing_history(state)) == 1
    report = json.loads((state / "report.json").read_text())
    assert report["status"] == "completed"


@pytest.mark.slow
def test_a_window_of_two_stats_intervals_fires_once_and_never_resolves(
    tmp_path: Path, spawn: Spawn
) -> None:
    """90 s, every SPREAD failing, default 10 s stats intervals: 10 s refused, 30 s pages once."""
    with WebhookSink() as sink:
        spec = tmp_path / "spec.yaml"
        err = tmp_path / "stderr"
        spec.write_text(_spec(free_port(), sink.url, "90s", "10s", ""))
        refused = spawn(["run", str(spec), "--state-dir", str(tmp_path / "refused")], err)
        refused.wait(timeout=60)
        text = err.read_text()
        assert refused.returncode == 2, text[-2000:]
        assert f"alerts[0].{ALERT}.window" in text and "two stats intervals" in text
        assert not (tmp_path / "refused" / "run.sqlite").exists()

        spec.write_text(_spec(free_port(), sink.url, "90s", "30s", ""))
        state = tmp_path / "state"
        proc = spawn(["run", str(spec), "--state-dir", str(state)], err)
        proc.wait(timeout=180)
        assert proc.returncode in (0, 1), err.read_text()[-3000:]
        pages = sink.notifications(ALERT)
    firing = [n for n in pages if n.status == "firing"]
    assert len(firing) == 1, pages
    assert [n for n in pages if n.status == "resolved"] == []
    assert len(_firing_history(state)) == 1


@pytest.mark.slow
def test_a_state_dir_of_the_previous_soakd_resumes(tmp_path: Path, spawn: Spawn) -> None:
    """The fixture of soakd 949b37b (schema 1) resumes: same run, upgraded, still firing."""
    state, err = tmp_path / "state", tmp_path / "stderr"
    state.mkdir()
    shutil.copy(FIXTURE / "run.sqlite", state / "run.sqlite")
    conn = sqlite3.connect(state / "run.sqlite")
    run_id, started = conn.execute("SELECT run_id, started_at FROM run").fetchone()
    conn.close()
    # Resume for ~8 more seconds (--duration is outside the spec's fingerprint). The
    # target URL stays the fixture's: it is one of the alert's labels, its identity.
    duration = time.time() - float(started) + 8.0
    proc = spawn(
        [
            "run",
            str(FIXTURE / "spec.yaml"),
            "--state-dir",
            str(state),
            "--duration",
            f"{duration:.0f}s",
        ],
        err,
    )
    proc.wait(timeout=120)
    text = err.read_text()
    assert proc.returncode in (0, 1), text[-3000:]
    assert "run_store_upgraded" in text
    assert "disk full" not in text  # the old failure blamed the disk
    store = RunStore.open(state, readonly=True)
    try:
        info = store.run_info()
        samples = store.samples()
        gaps = store.events(("gap",))
        assert info.run_id == run_id and info.status == "completed"
        assert len(gaps) == 1
        assert samples[:23] and all(s.rss_anon_bytes is None for s in samples[:23])
        assert [s for s in samples[23:] if s.rss_bytes], "the resumed soakd wrote no sample"
        # The alert that was firing when 949b37b was killed was restored, not fired anew.
        assert len(_firing_history(state)) == 1
    finally:
        store.close()
    assert json.loads((state / "report.json").read_text())["run_id"] == run_id


def test_a_state_dir_of_a_newer_soakd_is_refused_with_exit_3(tmp_path: Path, spawn: Spawn) -> None:
    """A run store whose schema is newer than this code: exit 3, both versions named."""
    state, err = tmp_path / "state", tmp_path / "stderr"
    state.mkdir()
    shutil.copy(FIXTURE / "run.sqlite", state / "run.sqlite")
    conn = sqlite3.connect(state / "run.sqlite")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    proc = spawn(["run", str(FIXTURE / "spec.yaml"), "--state-dir", str(state)], err)
    proc.wait(timeout=60)
    text = err.read_text()
    assert proc.returncode == 3, text[-2000:]
    assert f"schema {SCHEMA_VERSION + 5}, written by a newer soakd" in text
    assert f"up to {SCHEMA_VERSION}" in text and "Traceback" not in text
