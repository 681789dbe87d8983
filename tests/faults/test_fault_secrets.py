"""Secrets never leak, end to end: a real soak searched for the secret values afterwards.

The spec names three secrets by reference only: ``target.api_key`` (the
reference target is started requiring that very key, so a wrong or missing
key would turn every request into a 401), a webhook URL carrying a token
(a real receiver in this process, so delivery proves the URL was used), and
a second webhook URL, with its own token, pointing at a closed port (so
soakd logs delivery failures about it). An alert that always fires makes
soakd deliver. Afterwards every log line, the exporter's /metrics and
/status taken mid-run, status.json, the three reports and every byte of every
file in the state dir (the SQLite store, its WAL, the outbox rows) are
searched for the three values.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from soakd.testing import free_port, soak_spec, wait_for

#: The ``spawn`` fixture of conftest.py: ``spawn(args, stderr_file, env) -> Popen``.
Spawn = Callable[..., "subprocess.Popen[bytes]"]
pytestmark = pytest.mark.timeout(180)


class _Hook(BaseHTTPRequestHandler):
    paths: ClassVar[list[str]]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).paths.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads the recorded paths, not a log."""


@pytest.fixture
def webhook() -> Iterator[tuple[int, list[str]]]:
    """A real HTTP receiver on 127.0.0.1; yields its port and the paths it was sent to."""

    class Hook(_Hook):
        paths: ClassVar[list[str]] = []

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), Hook.paths
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _metrics_address(stderr: Path) -> str | None:
    for line in stderr.read_text().splitlines():
        if '"metrics_listening"' in line:
            return str(json.loads(line)["address"])
    return None


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return bytes(resp.read())


@pytest.mark.slow
def test_secrets_appear_in_no_log_status_report_or_store_byte(
    tmp_path: Path, spawn: Spawn, webhook: tuple[int, list[str]]
) -> None:
    """API key and two receiver URL tokens: used for real, found nowhere soakd writes or serves."""
    hook_port, hook_paths = webhook
    api_key = "key-" + secrets.token_hex(16)
    hook_token = "hook-" + secrets.token_hex(16)
    dead_token = "dead-" + secrets.token_hex(16)
    values = (api_key, hook_token, dead_token)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SOAKD_FAULT_API_KEY": api_key,
        # The launched reference target inherits soakd's environment and reads this.
        "ENGRAM_REF_API_KEY": api_key,
        "SOAKD_FAULT_HOOK_URL": f"http://127.0.0.1:{hook_port}/hook/{hook_token}",
        "SOAKD_FAULT_DEAD_URL": f"http://127.0.0.1:{free_port()}/hook/{dead_token}",
    }
    extra = "\n".join(
        [
            "receivers:",
            "  - {name: hook, type: webhook, url: {env: SOAKD_FAULT_HOOK_URL}, timeout: 2s}",
            "  - {name: dead, type: webhook, url: {env: SOAKD_FAULT_DEAD_URL}, timeout: 2s}",
        ]
    )
    text = soak_spec(
        free_port(),
        duration="14s",
        store=20,
        recall=10,
        spread=5,
        spaces=2,
        consolidation_interval=None,
        alerts=(
            'crash: "any crash"',
            "name: always\n    kind: threshold\n    metric: rss_bytes\n"
            '    condition: ">"\n    threshold: 0',
        ),
        extra=extra,
    ).replace("target:\n", "target:\n  api_key: {env: SOAKD_FAULT_API_KEY}\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    state, err = tmp_path / "state", tmp_path / "stderr"
    proc = spawn(["run", str(spec), "--state-dir", str(state)], err, env)

    address = wait_for(lambda: _metrics_address(err), timeout_s=60, what="exporter address")
    wait_for(lambda: hook_paths, timeout_s=60, what="a delivery to the webhook")
    served = _get(f"http://{address}/metrics") + _get(f"http://{address}/status")
    proc.wait(timeout=90)
    logs = err.read_bytes()
    assert proc.returncode in (0, 1), logs[-3000:].decode(errors="replace")

    # The secrets were really used: Engram accepted the key, the hook got its token.
    report = json.loads((state / "report.json").read_text())
    assert report["operations"]["store"]["ok"] > 0
    assert report["operations"]["store"]["errors"].get("http_401", 0) == 0
    assert all(p == f"/hook/{hook_token}" for p in hook_paths)
    assert b'"receiver": "dead"' in logs  # the failing receiver was tried and logged

    searched = {"stderr": logs, "served": served}
    for path in sorted(state.rglob("*")):
        if path.is_file():
            searched[str(path.relative_to(state))] = path.read_bytes()
    assert {"run.sqlite", "status.json", "report.json", "report.md", "report.html"} <= set(searched)
    for name, data in searched.items():
        for value in values:
            assert value.encode() not in data, f"a secret appears in {name}"
