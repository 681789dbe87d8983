"""Server lifecycle: bind, announce, run the background loops, stop cleanly.

Like Engram: a busy port is replaced by port+1 ... port+100, then an ephemeral
port; the real port is printed as `` HTTP API: http://HOST:PORT`` and written
to the PID file as ``PID:PORT``, which is removed on a clean exit (SIGTERM,
SIGINT or POST /shutdown). A crash knob leaves the PID file behind, as a real
crash would.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import signal
import socket
import sys
import time
from pathlib import Path
from typing import TextIO

import structlog
from aiohttp import web

from soakd.reference import persist
from soakd.reference.app import Api, build_app
from soakd.reference.config import ServerConfig
from soakd.reference.consolidation import Consolidator
from soakd.reference.faults import Faults
from soakd.reference.filemap import FileMaps
from soakd.reference.metrics import MetricsWindow
from soakd.reference.parsing import DEFAULT_SPACE
from soakd.reference.registry import SpaceRegistry
from soakd.reference.space import MemorySpace

# A 768-float recall URL is 16-20 KB; Engram's hyper takes up to 64 KB.
MAX_LINE = 65_536
SHUTDOWN_TIMEOUT_S = 5.0
log = structlog.get_logger()


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind like Engram: the port, else the next 100, else an ephemeral one."""
    candidates = [port] if port == 0 else [*range(port, min(port + 101, 65536)), 0]
    last: OSError | None = None
    for candidate in candidates:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            last = exc
            continue
        sock.listen(1024)
        sock.setblocking(False)
        return sock
    raise last or OSError("no port available")


def write_pid_file(path: Path, port: int) -> None:
    """Engram's PID file: one line ``PID:PORT`` (written atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{os.getpid()}:{port}\n", encoding="utf-8")
    tmp.replace(path)


async def serve(config: ServerConfig, out: TextIO = sys.stdout) -> int:
    """Run the server until asked to stop; return the exit status."""
    started = time.monotonic()
    rng = random.Random(config.seed)
    metrics = MetricsWindow()
    data_dir = Path(config.data_dir) if config.data_dir else None
    spaces = SpaceRegistry(config.capacity, data_dir)
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        for space in await asyncio.to_thread(persist.load_all, data_dir, config.capacity):
            spaces.add(space)
    spaces.get_or_create(DEFAULT_SPACE)

    def on_run(ok: bool) -> None:
        metrics.observe("consolidation_runs_total", 1.0)
        if not ok:
            metrics.observe("consolidation_failures_total", 1.0)

    consolidator = Consolidator(
        config.consolidation, config.stock, started, random.Random(rng.random()), on_run
    )
    maps = FileMaps(config.faults.file_map_bytes, data_dir, config.faults.file_map_fill_s)
    mapping: set[asyncio.Task[None]] = set()

    def on_create(space: MemorySpace) -> None:
        consolidator.watch(space)
        if maps.size_bytes > 0:  # seconds per GB: off the event loop
            task = asyncio.get_running_loop().create_task(
                asyncio.to_thread(maps.map_space, space.id)
            )
            mapping.add(task)
            task.add_done_callback(mapping.discard)

    spaces.set_on_create(on_create)
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before the API line: whoever reads it may signal us at once.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shutdown.set)
    api = Api(
        config,
        spaces,
        consolidator,
        Faults(config.faults, started, rng),
        metrics,
        shutdown,
        time.time(),
    )
    runner = web.AppRunner(
        build_app(api),
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        max_line_size=MAX_LINE,
        max_field_size=MAX_LINE,
    )
    await runner.setup()
    sock = bind_socket(config.host, config.port)
    port = int(sock.getsockname()[1])
    await web.SockSite(runner, sock, shutdown_timeout=SHUTDOWN_TIMEOUT_S).start()
    pid_path = _pid_path(config)
    if pid_path is not None:
        write_pid_file(pid_path, port)
    print("Engram-compatible reference server (soakd.reference)", file=out)
    print(f" HTTP API: http://{config.host}:{port}", file=out, flush=True)
    background = [
        loop.create_task(api.faults.run_stalls(), name="stalls"),
        loop.create_task(api.faults.run_crash_timer(), name="crash-timer"),
    ]
    if data_dir is not None:
        background.append(loop.create_task(_persist_loop(spaces, data_dir, config)))
    await shutdown.wait()
    log.info("shutting down")
    for task in background:
        task.cancel()
    await asyncio.wait(background, timeout=SHUTDOWN_TIMEOUT_S)
    await consolidator.close()
    for task in list(mapping):
        task.cancel()
    await asyncio.gather(*mapping, return_exceptions=True)
    maps.close()
    await runner.cleanup()
    if data_dir is not None:
        await _persist_dirty(spaces, data_dir)
    if pid_path is not None:
        with contextlib.suppress(FileNotFoundError):
            pid_path.unlink()
    return 0


def _pid_path(config: ServerConfig) -> Path | None:
    raw = config.pid_file or os.environ.get("ENGRAM_PID_PATH")
    return Path(raw) if raw else None


async def _persist_loop(spaces: SpaceRegistry, data_dir: Path, config: ServerConfig) -> None:
    while True:
        await asyncio.sleep(config.persist_interval_s)
        await _persist_dirty(spaces, data_dir)


async def _persist_dirty(spaces: SpaceRegistry, data_dir: Path) -> None:
    for space in spaces:
        if space.dirty or not (data_dir / space.id / "space.json").exists():
            image = persist.capture(space)
            await asyncio.to_thread(persist.write, image, data_dir)
