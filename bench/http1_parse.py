"""Per-answer CPU of soakd/http1.py's response framing, for docs/performance.md.

Feeds whole answers, as the socket would hand them over, to one
``_Connection`` on a stand-in transport (no socket, no event loop pass): the
cost measured is writing the request, framing the answer and reporting it,
i.e. what the parser adds per request on the measured path. Run it from two
checkouts to compare parsers; bench/fixed_rate.py measures the whole path.

Usage: .venv/bin/python bench/http1_parse.py [--n 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from soakd.clock import SystemClock
from soakd.http1 import HttpPool, _Connection

_RECALL_BODY = b'{"memories":[' + b",".join([b'{"id":"m-%06d","score":0.91}' % i for i in range(8)])
_RECALL_BODY += b"]}"
ANSWERS = {
    # What Engram's recall answer looks like on the wire (axum: three headers).
    "sized (Engram-like)": (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"date: Sun, 06 Dec 2026 01:00:00 GMT\r\n\r\n" % len(_RECALL_BODY)
    )
    + _RECALL_BODY,
    "chunked, 2 chunks": (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n"
        % (100, _RECALL_BODY[:100], len(_RECALL_BODY) - 100, _RECALL_BODY[100:])
    ),
}


class _Transport(asyncio.Transport):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def abort(self) -> None:
        raise AssertionError("the connection was aborted")


def per_answer_us(raw: bytes, n: int) -> float:
    conn = _Connection(HttpPool("http://127.0.0.1:1", clock=SystemClock()), max_body=1 << 20)
    conn.connection_made(_Transport())
    got: list[object] = []
    request = b"GET / HTTP/1.1\r\n\r\n"
    send, feed, answered = conn.send, conn.data_received, got.append
    t0 = time.process_time()
    for _ in range(n):
        send(request, lambda *a: answered(a))
        feed(raw)
    cpu = time.process_time() - t0
    assert len(got) == n and conn.reusable
    return cpu / n * 1e6


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# {Path(__file__).resolve().parent.parent}, loadavg {load}")
    for name, raw in ANSWERS.items():
        runs = sorted(per_answer_us(raw, args.n) for _ in range(args.repeat))
        print(f"{name:22} min {runs[0]:5.2f} us, median {runs[len(runs) // 2]:5.2f} us per answer")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
