"""A real webhook receiver on 127.0.0.1 for the fault tests: records every notification.

It answers 200 to every POST and keeps, per notification, the alert items of
the Alertmanager v4 body with the request's ``Idempotency-Key``. ``on_post``
runs after the answer was written (the fault tests SIGKILL soakd from there,
so "right after the page" is measured from the real delivery).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass(frozen=True)
class Notification:
    """One alert of one delivered webhook request."""

    at: float  # monotonic, when it arrived
    key: str  # the request's Idempotency-Key
    status: str  # firing | resolved
    alertname: str
    fingerprint: str
    starts_at: str
    ends_at: str


class WebhookSink:
    """``with WebhookSink() as sink:`` then ``sink.url``; ``sink.notifications()``."""

    def __init__(self, on_post: Callable[[list[Notification]], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._seen: list[Notification] = []
        self.on_post = on_post
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                key = self.headers.get("Idempotency-Key", "")
                now = time.monotonic()
                got = [
                    Notification(
                        now,
                        key,
                        str(a.get("status")),
                        str(a.get("labels", {}).get("alertname")),
                        str(a.get("fingerprint")),
                        str(a.get("startsAt")),
                        str(a.get("endsAt")),
                    )
                    for a in body.get("alerts", [])
                ]
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.wfile.flush()
                with sink._lock:
                    sink._seen.extend(got)
                if sink.on_post is not None:
                    sink.on_post(got)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the test reads notifications(), not the log

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def notifications(self, alertname: str | None = None) -> list[Notification]:
        with self._lock:
            return [n for n in self._seen if alertname is None or n.alertname == alertname]

    def __enter__(self) -> WebhookSink:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


def receivers_yaml(url: str) -> str:
    """The ``receivers:`` section naming the sink (fast retries: a test has no minutes)."""
    return f"receivers:\n  - {{name: sink, type: webhook, url: '{url}', timeout: 2s}}\n"
