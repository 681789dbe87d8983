"""Alertmanager SIGKILLed and restarted mid-run: a real soakd still gets every alert through.

A real ``soakd run`` pages through a real Alertmanager 0.25 (Debian package)
to a webhook in this process. The run has an alert that fires at once
(``always``: RSS above zero) and a target that crashes after 12 s (so
``crash`` fires later). Once ``always`` has reached the webhook,
Alertmanager is SIGKILLed; the crash happens while it is down; then a fresh
Alertmanager (new storage: it lost every state, as after a disk loss) comes
up on the same port. soakd must deliver ``crash`` after all, and nothing may
arrive more often than at-least-once implies: once per Alertmanager life.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from soakd.testing import free_port, soak_spec, wait_for

#: The ``spawn`` fixture of conftest.py: ``spawn(args, stderr_file) -> Popen``.
Spawn = Callable[..., "subprocess.Popen[bytes]"]
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
pytestmark = [pytest.mark.timeout(180), pytest.mark.external]


class _Sink(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]]

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).bodies.append(json.loads(data))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads the recorded notifications."""


@pytest.fixture
def sink() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver for Alertmanager; yields its URL and the notifications received."""

    class Sink(_Sink):
        bodies: ClassVar[list[dict[str, Any]]] = []

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", Sink.bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _received(bodies: list[dict[str, Any]], name: str, status: str = "firing") -> int:
    return sum(
        1
        for b in list(bodies)
        for a in b["alerts"]
        if a["labels"].get("alertname") == name and a["status"] == status
    )


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


class Alertmanager:
    """One Alertmanager process on a fixed port (started, SIGKILLed, started again)."""

    def __init__(self, base: Path, hook_url: str) -> None:
        self.base, self.port = base, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = base / "am.yml"
        # Every alert its own group; a long repeat interval, so a repeat of an
        # unchanged alert would show as a (real) duplicate.
        self.config.write_text(
            "route: {receiver: hook, group_by: ['...'], group_wait: 1s, group_interval: 2s,"
            " repeat_interval: 1h}\n"
            f"receivers: [{{name: hook, webhook_configs: [{{url: '{hook_url}'}}]}}]\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.lives = 0

    def start(self) -> None:
        self.lives += 1
        with (self.base / "am.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    ALERTMANAGER,
                    f"--config.file={self.config}",
                    f"--storage.path={self.base / f'data{self.lives}'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        wait_for(lambda: _ready(self.url), timeout_s=30, what="alertmanager ready")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def alertmanager(tmp_path: Path, sink: tuple[str, list[dict[str, Any]]]) -> Iterator[Alertmanager]:
    """A real Alertmanager sending to ``sink``; killed at teardown whatever happened."""
    assert shutil.which(ALERTMANAGER), "the Debian package prometheus-alertmanager is needed"
    am = Alertmanager(tmp_path, sink[0])
    am.start()
    try:
        yield am
    finally:
        am.kill()


@pytest.mark.slow
def test_alertmanager_restart_mid_run_delivers_eventually_and_once_per_life(
    tmp_path: Path,
    spawn: Spawn,
    sink: tuple[str, list[dict[str, Any]]],
    alertmanager: Alertmanager,
) -> None:
    """An alert raised while Alertmanager is down arrives after its restart; none repeats."""
    _, bodies = sink
    text = soak_spec(
        free_port(),
        duration="30s",
        store=20,
        recall=10,
        spread=5,
        spaces=2,
        consolidation_interval=None,
        knobs=["--crash-after", "12s"],
        alerts=(
            'crash: "any crash"',
            "name: always\n    kind: threshold\n    metric: rss_bytes\n"
            '    condition: ">"\n    threshold: 0',
        ),
        extra="\n".join(
            [
                "receivers:",
                f"  - {{name: am, type: alertmanager, url: '{alertmanager.url}',"
                " timeout: 2s, resend_interval: 2s}",
            ]
        ),
    ).replace("target:\n", "target:\n  restart: on-failure\n  restart_backoff: 1s\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    state, err = tmp_path / "state", tmp_path / "stderr"
    proc = spawn(["run", str(spec), "--state-dir", str(state)], err)

    wait_for(lambda: _received(bodies, "always"), timeout_s=60, what="'always' delivered")
    alertmanager.kill()
    wait_for(lambda: '"target_crash"' in err.read_text(), timeout_s=60, what="the target crash")
    wait_for(
        lambda: '"alert_delivery_failed"' in err.read_text(),
        timeout_s=30,
        what="soakd failing to reach the dead Alertmanager",
    )
    restarted_at = time.monotonic()
    alertmanager.start()
    wait_for(lambda: _received(bodies, "crash"), timeout_s=60, what="'crash' delivered")
    delivered_after_s = time.monotonic() - restarted_at
    proc.wait(timeout=90)
    logs = err.read_text()
    assert proc.returncode == 1, logs[-3000:]  # completed; the crash criterion failed
    assert "Traceback" not in logs
    print(f"\n'crash' delivered {delivered_after_s:.1f}s after Alertmanager came back")
    # At least once, and at most once per Alertmanager life (the new one lost
    # the old one's notification log, so it may notify 'always' once more).
    assert _received(bodies, "crash") == 1
    assert 1 <= _received(bodies, "always") <= alertmanager.lives
