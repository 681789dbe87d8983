"""Coordinated omission: a stalling target shows in response time, not in service time."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from soakd.daemon import Daemon, RunOptions
from soakd.errors import ExitCode
from soakd.spec import load_spec_text
from soakd.testing import free_port, soak_spec

#: Asserts on P99 response and service times: runs in the serial phase (`make test`).
pytestmark = pytest.mark.timing


@pytest.mark.slow
async def test_stall_shows_in_response_time_while_service_time_stays_low(tmp_path: Path) -> None:
    """1 s stalls every 10 s at 200/s: p99 response >= 500 ms, p99 service stays low.

    The connection pool is capped at 4, as a closed-loop client with 4 workers
    would be: only the requests caught on a connection inside a stall have a
    long service time; every request scheduled during the stall waits, and
    response time (from the intended send) shows it.
    """
    text = soak_spec(
        free_port(),
        duration="21s",
        store=200,
        recall=0,
        spread=0,
        consolidation_interval=None,
        knobs=["--stall-every", "10s", "--stall-for", "1s"],
        alerts=(),
    )
    spec = load_spec_text(text, "co.yaml")
    spec = dataclasses.replace(spec, target=dataclasses.replace(spec.target, max_connections=4))
    state = tmp_path / "state"
    outcome = await Daemon(RunOptions(spec, text, state, handle_signals=False)).serve()
    assert outcome.status == "completed"
    assert outcome.exit_code in (ExitCode.PASSED, ExitCode.FAILED)
    store = json.loads((state / "report.json").read_text())["operations"]["store"]
    assert store["count"] > 3000
    assert store["errors"] == {}
    assert store["latency_ms"]["p99"] >= 500.0
    assert store["service_ms"]["p99"] < 100.0
    assert store["latency_ms"]["max"] >= 900.0
