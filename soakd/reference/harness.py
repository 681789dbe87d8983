"""Start the reference server as a real child process, for tests and benchmarks.

``start_reference()`` launches ``python -m soakd.reference --port 0 --host
127.0.0.1 ARGS``, waits (bounded) for the `` HTTP API: http://HOST:PORT`` line
and for ``/health/alive`` to answer, and returns a :class:`ReferenceProcess`.
The child's stdout and stderr are drained by threads (so a chatty child never
blocks on a full pipe) and kept for diagnostics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

_API_LINE = re.compile(r"^ HTTP API: http://(?P<host>[^\s:]+):(?P<port>\d+)\s*$")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class ReferenceStartError(RuntimeError):
    """The reference server did not come up in time (or died while starting)."""


class _Drain:
    """Reads a pipe to the end in a daemon thread, keeping every line."""

    def __init__(self, stream: IO[bytes], on_line: re.Pattern[str] | None = None) -> None:
        self.lines: list[str] = []
        self.match: re.Match[str] | None = None
        self.found = threading.Event()
        self._pattern = on_line
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if self._pattern is not None and self.match is None:
                match = self._pattern.match(line)
                if match is not None:
                    self.match = match
                    self.found.set()
        stream.close()
        self.found.set()  # EOF: wake the waiter (it checks ``match``)

    def text(self) -> str:
        """Everything read so far."""
        return "\n".join(self.lines)


class ReferenceProcess:
    """A running reference server child process."""

    def __init__(
        self, proc: subprocess.Popen[bytes], host: str, port: int, out: _Drain, err: _Drain
    ) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self._out = out
        self._err = err

    @property
    def stdout(self) -> str:
        """The child's stdout so far."""
        return self._out.text()

    @property
    def stderr(self) -> str:
        """The child's stderr so far."""
        return self._err.text()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send a signal to the child (no-op if it already exited)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        """Wait for the child to exit; its return code (negative: killed by a signal)."""
        return self.proc.wait(timeout=timeout_s)

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s``; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout_s)
        return int(self.proc.returncode)


def _child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    merged = dict(os.environ)
    if env is not None:
        merged.update(env)
    # Make ``-m soakd.reference`` importable even from another working directory.
    path = merged.get("PYTHONPATH")
    merged["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
    merged.setdefault("PYTHONUNBUFFERED", "1")
    return merged


def _alive(url: str, timeout_s: float) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health/alive", timeout=timeout_s) as resp:
            return int(resp.status) == 200
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # auth on: the server is up, it just wants a key
    except OSError:
        return False


def start_reference(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 20.0,
    cwd: str | None = None,
) -> ReferenceProcess:
    """Start the reference server on an ephemeral port and wait until it answers.

    ``env`` is merged over the current environment. Raises ReferenceStartError
    (after killing the child) if it is not up within ``timeout_s``.
    """
    cmd = [sys.executable, "-m", "soakd.reference", "--port", "0", "--host", "127.0.0.1", *args]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(env),
        cwd=cwd,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out = _Drain(proc.stdout, _API_LINE)
    err = _Drain(proc.stderr)
    deadline = time.monotonic() + timeout_s
    try:
        out.found.wait(timeout=timeout_s)
        if out.match is None:
            raise ReferenceStartError(_why("no HTTP API line", proc, out, err))
        host, port = out.match.group("host"), int(out.match.group("port"))
        ref = ReferenceProcess(proc, host, port, out, err)
        while not _alive(ref.url, timeout_s=2.0):
            if proc.poll() is not None or time.monotonic() >= deadline:
                raise ReferenceStartError(_why("/health/alive never answered", proc, out, err))
            time.sleep(0.02)
        return ref
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10.0)
        raise


def _why(what: str, proc: subprocess.Popen[bytes], out: _Drain, err: _Drain) -> str:
    code = proc.poll()
    return (
        f"reference server did not start: {what} (exit code {code}); "
        f"stdout: {out.text()[-2000:]!r}; stderr: {err.text()[-2000:]!r}"
    )


async def start_reference_async(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 20.0,
    cwd: str | None = None,
) -> ReferenceProcess:
    """:func:`start_reference` without blocking the event loop."""
    return await asyncio.to_thread(start_reference, *args, env=env, timeout_s=timeout_s, cwd=cwd)


@contextlib.contextmanager
def reference(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 20.0,
    cwd: str | None = None,
) -> Iterator[ReferenceProcess]:
    """Context-manager form of :func:`start_reference`; stops the server on exit."""
    ref = start_reference(*args, env=env, timeout_s=timeout_s, cwd=cwd)
    try:
        yield ref
    finally:
        ref.stop()


def unit_embedding(seed: int, dim: int = 768, digits: int = 6) -> list[float]:
    """A seeded random unit vector, rounded to ``digits`` significant digits.

    Pairwise cosines of different seeds are ~0 (std 1/sqrt(768)), so stores of
    such vectors never collapse by de-duplication; 6 digits keep the cosine.
    """
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(math.fsum(v * v for v in values)) or 1.0
    return [float(f"{v / norm:.{digits}g}") for v in values]


@dataclass(frozen=True)
class HttpResult:
    """A response read by :func:`http`."""

    status: int
    content_type: str
    text: str
    headers: dict[str, str]

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.text)


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
) -> HttpResult:
    """A small blocking HTTP call (JSON body if given); error statuses are returned, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    hdrs.update(headers or {})
    request = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return _result(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as exc:
        return _result(exc.code, exc.headers, exc.read())


def _result(status: int, headers: Any, raw: bytes) -> HttpResult:
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip()
    return HttpResult(int(status), ctype, raw.decode("utf-8", "replace"), dict(headers.items()))
