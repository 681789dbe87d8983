"""A free TCP port on 127.0.0.1 for a child process to bind (the demo's target, tests).

Drawn at random *below* the kernel's ephemeral range. A port that bind(0) hands
out lies inside that range, and before the child binds it any other process's
bind(0) (an exporter on port 0) or outgoing connection can take it: with soaks
running side by side one did, its target moved to the next port, and its soakd
found another run's exporter on the port it was told.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port"]


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago, below the ephemeral range."""
    low = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12_000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port found below {low}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
