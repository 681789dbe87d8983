"""A minimal keep-alive HTTP server for bench/fixed_rate.py, run in its own process.

It answers every request with a tiny fixed 200 response. It is a raw asyncio
protocol on uvloop rather than an aiohttp app because the benchmark measures the
*client* (soakd's scheduler): the server must not be the bottleneck first.
``--aiohttp`` serves the same answer with aiohttp.web for comparison.

Prints ``PORT <n>`` on stdout once listening; exits on SIGTERM/SIGINT.
Usage: python bench/fixed_rate_server.py [--aiohttp] [--cpu N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import cast

import uvloop

_BODY = b'{"ok":true}'
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(_BODY)).encode()
    + b"\r\nConnection: keep-alive\r\n\r\n"
    + _BODY
)


class _Http(asyncio.Protocol):
    """Answers each complete request head (GETs carry no body) with the canned response."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: cast, not isinstance.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data
        n = buf.count(b"\r\n\r\n")
        if n:
            buf = buf[buf.rfind(b"\r\n\r\n") + 4 :]
            assert self._transport is not None
            self._transport.write(_RESPONSE * n)
        self._buf = buf


async def _serve_raw(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Http, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    async with server:
        await stop.wait()


async def _serve_aiohttp(stop: asyncio.Event) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=_BODY, content_type="application/json")

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def _main(use_aiohttp: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await (_serve_aiohttp(stop) if use_aiohttp else _serve_raw(stop))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aiohttp", action="store_true", help="serve with aiohttp.web")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    uvloop.run(_main(args.aiohttp))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
