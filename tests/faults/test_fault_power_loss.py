"""Power loss: soakd and the Engram it launched SIGKILLed together, then soakd started again.

The reference target keeps its memories in RAM and saves them to ``--data-dir``
only every hour here, so everything it acknowledged before the kill is gone
when soakd launches it again. The writes soakd had selected for read-back but
not yet judged were in its run store (written with every flush); the resumed
soakd must read them back, find them missing, and call them lost writes: the
data loss a crash of the database causes, which the plan's "no data
corruption" criterion exists to catch.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from soakd.errors import SoakdError
from soakd.store import RunStore
from soakd.testing import free_port, soak_spec, wait_for

Spawn = Callable[..., "subprocess.Popen[bytes]"]
pytestmark = pytest.mark.timeout(240)


def _pending_and_pid(state: Path) -> tuple[int, int | None]:
    """Read-backs pending in the store, and the target PID of its newest sample."""
    if not RunStore.exists(state):
        return 0, None
    try:
        store = RunStore.open(state, readonly=True)
    except SoakdError:  # created a moment ago, schema not yet committed
        return 0, None
    try:
        samples = store.samples()
        pid = samples[-1].pid if samples else None
        return len(store.integrity_pending()), pid
    finally:
        store.close()


@pytest.mark.slow
def test_power_loss_read_backs_pending_at_the_kill_find_the_lost_writes(
    tmp_path: Path, spawn: Spawn
) -> None:
    """Writes acknowledged before a crash of both and never persisted are reported lost."""
    spec = tmp_path / "spec.yaml"
    data_dir = tmp_path / "engram-data"
    spec.write_text(
        soak_spec(
            free_port(),
            duration="20s",
            store=40,
            recall=10,
            spread=5,
            spaces=2,
            consolidation_interval=None,
            knobs=["--data-dir", str(data_dir), "--persist-interval", "1h"],
        )
    )
    state, err = tmp_path / "state", tmp_path / "stderr"
    args = ["run", str(spec), "--state-dir", str(state)]
    first = spawn(args, err)
    target_pid: int | None = None
    try:
        wait_for(
            lambda: _pending_and_pid(state)[0] > 0 and _pending_and_pid(state)[1] is not None,
            timeout_s=60,
            what="read-backs pending in the store and the target sampled",
        )
        target_pid = _pending_and_pid(state)[1]
        # Both at once, soakd first so that it cannot react to its target's death.
        first.kill()
        assert target_pid is not None
        os.kill(target_pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if target_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target_pid, signal.SIGKILL)

    final = spawn(args, err)
    final.wait(timeout=150)
    text = err.read_text()
    assert final.returncode == 1, text[-3000:]  # completed, verdict fail
    assert "Traceback" not in text

    store = RunStore.open(state, readonly=True)
    try:
        counters = store.counters()
        lost_events = store.events(("integrity_lost_write",))
        pids = {s.pid for s in store.samples() if s.pid is not None}
    finally:
        store.close()
    assert target_pid in pids and len(pids) == 2  # the dead target was replaced, not adopted
    assert counters["integrity_restored"] >= 1
    # Every restored read-back named a write the relaunched target never saw saved.
    assert counters["integrity_lost"] >= 1
    assert counters["integrity_corrupted"] == 0
    assert lost_events
    report = json.loads((state / "report.json").read_text())
    assert report["integrity"]["lost"] == counters["integrity_lost"]
    failed = {c["key"] for c in report["criteria"] if not c["passed"]}
    assert "data_corruption" in failed
