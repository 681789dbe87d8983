"""Start, stop and restart the reference server as a real process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from soakd.reference.harness import (
    ReferenceStartError,
    http,
    reference,
    start_reference,
    unit_embedding,
)
from soakd.testing import wait_for


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM and SIGINT stop the server with exit 0 and remove its PID file."""
    pid_file = tmp_path / "engram.pid"
    ref = start_reference("--pid-file", str(pid_file))
    try:
        assert pid_file.exists()
        ref.kill(sig)
        assert ref.wait(15) == 0
        assert not pid_file.exists()
    finally:
        ref.stop()


def test_post_shutdown_stops_cleanly(tmp_path: Path) -> None:
    """POST /shutdown answers shutdown_initiated, then the process exits 0."""
    pid_file = tmp_path / "engram.pid"
    ref = start_reference(env={"ENGRAM_PID_PATH": str(pid_file)})
    try:
        result = http("POST", f"{ref.url}/shutdown")
        assert result.status == 200 and result.json()["status"] == "shutdown_initiated"
        assert ref.wait(15) == 0
        assert not pid_file.exists()
    finally:
        ref.stop()


def test_busy_port_moves_to_next_one() -> None:
    """A busy --port is replaced by a nearby free port, which the API line reports."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        busy = blocker.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "soakd.reference", "--port", str(busy)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert proc.stdout is not None
            line = ""
            for _ in range(5):
                line = proc.stdout.readline().decode()
                if "HTTP API" in line:
                    break
            port = int(line.strip().rsplit(":", 1)[1])
            assert port != busy and port > 0
        finally:
            proc.terminate()
            assert proc.wait(timeout=15) == 0


def test_data_dir_persists_across_restart(tmp_path: Path) -> None:
    """With --data-dir, memories and spaces survive a clean restart (one folder per space)."""
    data = tmp_path / "data"
    body = {"id": "kept_1", "content": "durable", "embedding": unit_embedding(1)}
    with reference("--data-dir", str(data)) as ref:
        result = http(
            "POST",
            f"{ref.url}/api/v1/memories/remember",
            body,
            {"X-Memory-Space": "space_kept"},
        )
        assert result.status == 201
    assert (data / "space_kept" / "space.json").is_file()
    with reference("--data-dir", str(data)) as ref:
        got = http("GET", f"{ref.url}/api/v1/memories/kept_1?space=space_kept")
        assert got.status == 200 and got.json()["content"] == "durable"
        spaces = {s["id"] for s in http("GET", f"{ref.url}/api/v1/spaces").json()["spaces"]}
        assert "space_kept" in spaces
        # The restored vector still de-duplicates and recalls.
        again = dict(body, id="kept_2")
        http("POST", f"{ref.url}/api/v1/memories/remember", again, {"X-Memory-Space": "space_kept"})
        assert http("GET", f"{ref.url}/api/v1/memories/kept_2?space=space_kept").status == 404


def test_data_dir_snapshot_is_periodic(tmp_path: Path) -> None:
    """Changed spaces are saved every --persist-interval, not only at exit."""
    data = tmp_path / "data"
    with reference("--data-dir", str(data), "--persist-interval", "200ms") as ref:
        body = {"id": "p_1", "content": "x", "embedding": unit_embedding(2)}
        http("POST", f"{ref.url}/api/v1/memories/remember", body, {"X-Memory-Space": "space_p"})
        path = data / "space_p" / "space.json"
        wait_for(lambda: path.is_file() and "p_1" in path.read_text(), timeout_s=10)


def test_start_failure_is_reported() -> None:
    """A server that cannot start raises ReferenceStartError with its stderr."""
    with pytest.raises(ReferenceStartError, match="capacity"):
        start_reference("--capacity", "0", timeout_s=15)
