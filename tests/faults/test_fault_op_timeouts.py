"""Each operation's own ``timeout`` is honoured (issue 18), judged from the run store.

The reference target's SPREADs slow down by 6 s per minute of uptime (``--latency-drift
spread=6000``: ~1 s after 10 s), its stores do not. The spec gives SPREAD a 300 ms
timeout and STORE the default 30 s. SPREADs must time out; no store may.

Before: the client got one timeout, the maximum over all operations (30 s), so
the slow SPREADs were counted as slow successes and never as timeouts.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from soakd.model import Op
from soakd.store import RunStore
from soakd.testing import free_port, soak_spec

Spawn = Callable[..., "subprocess.Popen[bytes]"]
pytestmark = pytest.mark.timeout(180)


@pytest.mark.slow
def test_each_operation_times_out_at_its_own_timeout(tmp_path: Path, spawn: Spawn) -> None:
    """SPREAD (300 ms) times out against a slowing target; STORE (30 s) never does."""
    text = soak_spec(
        free_port(),
        duration="15s",
        store=20,
        recall=0,
        spread=5,
        spaces=2,
        consolidation_interval=None,
        knobs=["--latency-drift", "spread=6000"],
        alerts=[],
        extra="sampling: {stats_interval: 1s, flush_interval: 500ms}",
    )
    assert "max_hops: 3}" in text
    spec = tmp_path / "spec.yaml"
    spec.write_text(text.replace("max_hops: 3}", "max_hops: 3, timeout: 300ms}"))
    state, err = tmp_path / "state", tmp_path / "stderr"
    proc = spawn(["run", str(spec), "--state-dir", str(state)], err)
    proc.wait(timeout=120)
    assert proc.returncode in (0, 1), err.read_text()[-3000:]
    store = RunStore.open(state, readonly=True)
    try:
        spread = store.intervals(Op.SPREAD)
        stores = store.intervals(Op.STORE)
    finally:
        store.close()
    spread_timeouts = sum(r.errors.get("timeout", 0) for r in spread)
    assert spread_timeouts >= 10, [dict(r.errors) for r in spread]
    assert sum(r.errors.get("timeout", 0) for r in stores) == 0
    assert sum(r.ok for r in stores) >= 100
