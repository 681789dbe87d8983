"""free_port: a port a child can bind, outside the range the kernel hands out for port 0."""

from __future__ import annotations

import socket
from pathlib import Path

from soakd.ports import free_port


def test_free_ports_lie_below_the_ephemeral_range_and_can_be_bound() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    held: list[socket.socket] = []
    try:
        for _ in range(20):
            port = free_port()
            assert 1024 <= port < low
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", port))  # free: a port already held here would raise
            s.listen()
            held.append(s)
        assert len({s.getsockname()[1] for s in held}) == 20
    finally:
        for s in held:
            s.close()
