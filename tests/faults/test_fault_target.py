"""Target faults, end to end: a real ``soakd run`` against a target that hangs, slows or lies.

Three soaks run side by side in one module fixture, each a real soakd process
launching its own target:

- ``hang``: the reference target is SIGSTOPped for 8 s, then SIGCONTed. The
  issue asks for 30 s; 8 s keeps CI fast. With the default 30 s request
  timeout the requests of the hang wait it out, so their latency (timed from
  the intended send) shows the whole hang.
- ``slow``: the reference target's latency drifts by 15 s per minute of uptime
  (so answers take seconds), past a 2 s request timeout.
- ``hostile``: a fake server (this very file, run as a script) that answers
  the health check and space creation properly, then mixes valid answers with
  non-JSON, wrong shapes, truncated bodies, huge bodies, malformed status
  lines and connection resets.

Two fast cases need no soak: the target's port already held by another
process, and a target that never becomes healthy; both are exit 3.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from soakd.process import listener_pid
from soakd.store import RunStore
from soakd.testing import free_port, soak_spec, wait_for

THIS_FILE = Path(__file__).resolve()
HANG_S = 8.0
#: The ``spawn`` fixtures of conftest.py: ``spawn(args, stderr_file) -> Popen``.
Spawn = Callable[..., "subprocess.Popen[bytes]"]
pytestmark = pytest.mark.timeout(240)


@dataclass(frozen=True)
class Finished:
    """A soakd process that ended: its exit code, stderr and state dir."""

    returncode: int
    stderr: str
    state: Path

    def report(self) -> dict[str, Any]:
        data = json.loads((self.state / "report.json").read_text())
        assert isinstance(data, dict)
        return data

    def op(self, name: str) -> dict[str, Any]:
        value = self.report()["operations"][name]
        assert isinstance(value, dict)
        return value

    def event_kinds(self) -> list[str]:
        events = self.report()["events"]
        assert isinstance(events, list)
        return [str(e["kind"]) for e in events]


def _status_ok(state: Path) -> int:
    try:
        ops = json.loads((state / "status.json").read_text()).get("operations", {})
    except (OSError, ValueError):
        return 0
    return sum(int(o.get("ok", 0)) for o in ops.values())


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory, module_spawn: Spawn
) -> Iterator[dict[str, Finished]]:
    """Start the three soaks at once, hang one target mid-run, wait (bounded) for all."""
    base = tmp_path_factory.mktemp("target_faults")
    timeout_2s = "\n".join(
        [
            "workload:",
            "  - {operation: store, rate: 40, spaces: 2, timeout: 2s}",
            "  - {operation: recall, rate: 20, spaces: 2, timeout: 2s}",
            "  - {operation: spread, rate: 5, max_hops: 2, timeout: 2s}",
        ]
    )
    hang_port, slow_port, hostile_port = free_port(), free_port(), free_port()
    specs = {
        "hang": soak_spec(hang_port, duration="24s", store=40, recall=20, spread=5, spaces=2),
        "slow": _with_workload(
            soak_spec(
                slow_port,
                duration="18s",
                spaces=2,
                consolidation_interval=None,
                knobs=["--latency-drift", "15000"],
            ),
            timeout_2s,
        ),
        "hostile": _hostile_spec(hostile_port, timeout_2s),
    }
    procs: dict[str, tuple[subprocess.Popen[bytes], Path, Path]] = {}
    for name, text in specs.items():
        spec, state, err = base / f"{name}.yaml", base / name, base / f"{name}.stderr"
        spec.write_text(text)
        procs[name] = (module_spawn(["run", str(spec), "--state-dir", str(state)], err), state, err)

    # The hang: once requests flow, freeze the target, keep it frozen, thaw it.
    hang_state = procs["hang"][1]
    wait_for(lambda: _status_ok(hang_state) > 100, timeout_s=60, what="hang run requests")
    pid = wait_for(lambda: listener_pid(hang_port), timeout_s=10, what="hang target pid")
    target = psutil.Process(pid)
    target.suspend()
    stopped_at = time.monotonic()
    try:
        wait_for(
            lambda: time.monotonic() - stopped_at >= HANG_S,
            timeout_s=HANG_S + 5,
            interval_s=0.2,
            what="the hang to last",
        )
    finally:
        target.resume()

    deadline = time.monotonic() + 150
    out: dict[str, Finished] = {}
    for name, (proc, state, err) in procs.items():
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        out[name] = Finished(proc.returncode, err.read_text(), state)
    out["hang"] = Finished(
        out["hang"].returncode, out["hang"].stderr + f"\n#target {pid}", hang_state
    )
    yield out


def _with_workload(spec: str, workload: str) -> str:
    """Replace a soak_spec workload block by ``workload``."""
    lines = spec.splitlines()
    start = lines.index("workload:")
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("  - "))
    return "\n".join([*lines[:start], workload, *lines[end:]]) + "\n"


def _hostile_spec(port: int, workload: str) -> str:
    command = [sys.executable, str(THIS_FILE), "hostile", "{port}"]
    return "\n".join(
        [
            "name: hostile",
            "seed: 3",
            "duration: 15s",
            workload,
            "alerts:",
            '  - crash: "any crash"',
            "target:",
            f"  url: http://127.0.0.1:{port}",
            f"  command: {json.dumps(command)}",
            "  startup_timeout: 20s",
            "exporter: {listen: '127.0.0.1:0'}",
            "integrity: {sample_fraction: 0.2, delay: 1s}",
            "",
        ]
    )


# -- the soaks ---------------------------------------------------------------------------


@pytest.mark.slow
def test_sigstopped_target_is_a_hang_not_a_crash(runs: dict[str, Finished]) -> None:
    """Target SIGSTOPped 8 s: the run completes, the hang shows in latency, no crash recorded."""
    hang = runs["hang"]
    assert hang.returncode in (0, 1), hang.stderr[-3000:]
    assert "Traceback" not in hang.stderr
    report = hang.report()
    assert report["status"] == "completed"
    assert "target_crash" not in hang.event_kinds()
    store = hang.op("store")
    errors = store["errors"]
    assert isinstance(errors, dict)
    latency = store["latency_ms"]
    assert isinstance(latency, dict)
    # Requests sent into the hang either timed out (default 30 s timeout is
    # longer than the hang, so most finish late) or waited the hang out: the
    # worst latency, timed from the intended send, shows the hang.
    assert float(latency["max"]) >= 0.8 * HANG_S * 1000, latency
    assert int(store["ok"]) > 0
    # The target process was never restarted or lost: one PID sampled throughout.
    s = RunStore.open(hang.state, readonly=True)
    try:
        pids = {x.pid for x in s.samples() if x.pid is not None}
    finally:
        s.close()
    assert len(pids) == 1


@pytest.mark.slow
def test_slow_target_counts_timeouts_and_completes(runs: dict[str, Finished]) -> None:
    """Answers slower than the 2 s timeout: counted as timeouts, the run completes, exit 1."""
    slow = runs["slow"]
    assert slow.returncode == 1, slow.stderr[-3000:]
    assert "Traceback" not in slow.stderr
    assert slow.report()["status"] == "completed"
    timeouts = sum(int(slow.op(op)["errors"].get("timeout", 0)) for op in ("store", "recall"))
    assert timeouts > 0


@pytest.mark.slow
def test_hostile_target_answers_are_counted_never_fatal(runs: dict[str, Finished]) -> None:
    """Garbage, wrong shapes, truncated/huge bodies, resets: counted as errors, exit 1 not 70."""
    hostile = runs["hostile"]
    assert hostile.returncode == 1, hostile.stderr[-3000:]
    assert "Traceback" not in hostile.stderr
    assert "internal_error" not in hostile.stderr
    assert hostile.report()["status"] == "completed"
    errors: dict[str, int] = {}
    for op in ("store", "recall"):
        o = hostile.op(op)
        assert int(o["count"]) > 0
        op_errors = o["errors"]
        assert isinstance(op_errors, dict)
        for key, n in op_errors.items():
            errors[key] = errors.get(key, 0) + int(n)
    assert errors.get("invalid_response", 0) > 0, errors
    assert errors.get("connection_error", 0) > 0, errors
    assert int(hostile.op("store")["ok"]) > 0  # the valid answers still count as ok


# -- start-up failures -------------------------------------------------------------------


def test_port_already_held_is_a_clear_startup_failure(tmp_path: Path, spawn: Spawn) -> None:
    """Another process listens on the target's port: soakd refuses to launch, exit 3, port named."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        spec = tmp_path / "spec.yaml"
        spec.write_text(soak_spec(port, duration="10s"))
        err = tmp_path / "stderr"
        proc = spawn(["run", str(spec), "--state-dir", str(tmp_path / "state")], err)
        proc.wait(timeout=60)
    text = err.read_text()
    assert proc.returncode == 3, text[-2000:]
    assert "Traceback" not in text
    assert f"port {port}" in text
    assert "already listening" in text


def test_target_never_healthy_is_a_clear_startup_failure(tmp_path: Path, spawn: Spawn) -> None:
    """A target that never listens: exit 3 after startup_timeout, and the launched child is gone."""
    port = free_port()
    marker = f"never-healthy-{uuid.uuid4().hex}"
    command = [sys.executable, "-c", "import time, sys; time.sleep(120)", marker]
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "\n".join(
            [
                "duration: 10s",
                "workload:",
                "  - {operation: store, rate: 10}",
                "target:",
                f"  url: http://127.0.0.1:{port}",
                f"  command: {json.dumps(command)}",
                "  startup_timeout: 3s",
                "exporter: {listen: '127.0.0.1:0'}",
                "",
            ]
        )
    )
    err = tmp_path / "stderr"
    proc = spawn(["run", str(spec), "--state-dir", str(tmp_path / "state")], err)
    proc.wait(timeout=60)
    text = err.read_text()
    assert proc.returncode == 3, text[-2000:]
    assert "Traceback" not in text
    assert "not healthy after 3s" in text
    assert f"127.0.0.1:{port}" in text
    leftovers = [
        p.pid for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])
    ]
    assert leftovers == [], "the never-healthy target outlived soakd"


# -- the hostile server (run as a script by the hostile soak's target.command) ------------

_OK_JSON = b"application/json"


def _response(status: str, body: bytes, *, length: int | None = None) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    return head.encode() + body


class Hostile:
    """An Engram look-alike whose measured answers cycle through every kind of garbage."""

    def __init__(self) -> None:
        self.n = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (x.split(":", 1) for x in lines[1:] if ":" in x)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if not await self._answer(method, path, body, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def _answer(
        self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        """Write one answer; False when the connection must end."""
        if path == "/health/alive":
            writer.write(_response("200 OK", b'{"status":"alive"}'))
        elif path == "/api/v1/spaces":
            writer.write(_response("201 Created", body))
        elif path.startswith(("/api/v1/memories", "/api/v1/query", "/api/v1/system")):
            return await self._garbage(path, body, writer)
        else:
            writer.write(_response("404 Not Found", b'{"error":{"code":"NOT_FOUND"}}'))
        await writer.drain()
        return True

    async def _garbage(self, path: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        self.n += 1
        kind = self.n % 8
        if kind in (0, 1):  # a valid answer, so some stores succeed and are read back
            doc: dict[str, object] = {"memories": {"episodic": [], "semantic": []}}
            if path.endswith("/remember"):
                try:
                    doc = {"memory_id": json.loads(body)["id"], "stored": True}
                except (ValueError, KeyError, TypeError):
                    doc = {"memory_id": None}
            elif path.endswith("/query"):
                doc = {"episodes": []}
            writer.write(_response("201 Created", json.dumps(doc).encode()))
        elif kind == 2:  # not JSON at all
            writer.write(_response("200 OK", b"<html>502 upstream says hi</html>"))
        elif kind == 3:  # JSON of the wrong shape
            writer.write(_response("200 OK", b'[1, "two", {"memory_id": 3}]'))
        elif kind == 4:  # truncated: promises 4096 bytes, sends 20, hangs up
            writer.write(_response("200 OK", b'{"memory_id": "trun', length=4096))
            await writer.drain()
            return False
        elif kind == 5:  # huge: 24 MiB of valid JSON
            writer.write(_response("200 OK", b'{"pad": "' + b"x" * (24 << 20) + b'"}'))
        elif kind == 6:  # connection reset (RST, not FIN)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        else:  # not HTTP at all
            writer.write(b"SMTP 220 hello there\r\n\r\n")
            await writer.drain()
            return False
        await writer.drain()
        return True


async def _serve_hostile(port: int) -> None:
    server = await asyncio.start_server(Hostile().handle, "127.0.0.1", port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__" and sys.argv[1:2] == ["hostile"]:
    asyncio.run(_serve_hostile(int(sys.argv[2])))
