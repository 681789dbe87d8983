"""Typed configuration of the reference server: every flag and its fault knobs.

The reference server stands in for a separate product, so it parses its own
durations and per-operation knob specs here instead of borrowing soakd.spec.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field

OPERATIONS = ("store", "recall", "spread", "get")

_DURATION_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration_s(text: str) -> float:
    """Parse "1.5s", "500ms", "2m", "1h" or plain seconds into seconds."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 60, 1.5s, 500ms, 2m)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNIT = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size_bytes(text: str) -> int:
    """Parse "4096", "512K", "3G" or "3GiB" (powers of 1024) into bytes."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 4096, 512K, 3G)")
    unit = (match.group(2) or "").upper()[:1]
    return int(float(match.group(1)) * _SIZE_UNIT[unit])


def parse_per_op(text: str, value_type: type[float] | type[int]) -> dict[str, float]:
    """Parse "V" (every operation) or "store=V,recall=V" into a map per operation."""
    text = text.strip()
    if not text:
        return {}
    if "=" not in text:
        value = float(value_type(text))
        return dict.fromkeys(OPERATIONS, value)
    out: dict[str, float] = {}
    for part in text.split(","):
        op, sep, raw = part.partition("=")
        op = op.strip().lower()
        if not sep or op not in OPERATIONS:
            raise ValueError(f"bad per-operation spec {part!r}: use OP=VALUE, OP in {OPERATIONS}")
        out[op] = float(value_type(raw.strip()))
    return out


def parse_signal(text: str) -> signal.Signals:
    """Parse KILL / SIGKILL / 9 (also SEGV, ABRT) into a signal."""
    text = text.strip().upper()
    if text.isdigit():
        return signal.Signals(int(text))
    name = text if text.startswith("SIG") else "SIG" + text
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(f"unknown signal {text!r}") from None


@dataclass(frozen=True)
class OpFaults:
    """Latency drift and error injection for one operation."""

    drift_ms_per_min: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    # Saturation: each operation of this kind holds one worker for this long, so
    # above 1000/service_ms per second requests queue and their latency grows with
    # the queue (the real server at the plan's rates: engram-api.md §7).
    service_ms: float = 0.0
    # CPU the operation's own work costs (a busy wait on the loop), on top of the
    # handler's: the real server's latency is mostly its own work (engram-api.md §7),
    # the bare reference target's mostly HTTP. latency_scale stretches this too.
    work_ms: float = 0.0
    # Burst, not sustained: the operation's work keeps up with ``sustain_per_s`` on end and
    # takes ``burst`` more first (a token bucket); past that each request waits its turn.
    # A short step passes far above what a longer run holds (the real Engram: its mix took
    # a rate for 3 s that it could not hold at half for a minute, docs/real-engram.md).
    sustain_per_s: float = 0.0  # 0: no limit
    burst: float = 0.0


@dataclass(frozen=True)
class FaultConfig:
    """Every fault knob; the defaults inject nothing."""

    leak_bytes_per_store: int = 0
    ops: dict[str, OpFaults] = field(default_factory=dict)
    stall_every_s: float = 0.0
    stall_for_s: float = 0.0
    crash_after_s: float = 0.0
    crash_after_ops: int = 0
    crash_signal: signal.Signals = signal.SIGKILL
    write_loss: float = 0.0
    # Slow space creation: each new space takes this long, at most
    # ``space_create_parallel`` at a time (Engram: 10.8 s each, 8 at once 43 s).
    space_create_s: float = 0.0
    space_create_parallel: int = 2
    # A sparse file of this size mapped and read through per space (RssFile, not RssAnon).
    file_map_bytes: int = 0
    file_map_fill_s: float = 0.0  # read the mapping through over this long (0: at once)
    # Engram's health endpoints answer 503 with their whole report while its spreading
    # probe is over budget (three slow probes in a row, i.e. under load); 0: never.
    unhealthy_after_s: float = 0.0
    # Every measured operation's own work is stretched to this many times its length by
    # spinning the loop: a uniformly slower build (tests of the baseline regression gate).
    latency_scale: float = 1.0

    def op(self, name: str) -> OpFaults:
        """Faults of one operation (none if not configured)."""
        return self.ops.get(name, _NO_FAULTS)


_NO_FAULTS = OpFaults()


@dataclass(frozen=True)
class ConsolidationConfig:
    """Per-space consolidation schedule and its faults."""

    interval_s: float = 60.0
    jitter_s: float = 0.0
    stall_after_s: float = 0.0
    recent_window: int = 256


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to run."""

    host: str = "127.0.0.1"
    port: int = 7432
    data_dir: str | None = None
    pid_file: str | None = None
    api_key: str | None = None
    capacity: int = 100_000
    persist_interval_s: float = 30.0
    text_scan_limit: int = 10_000
    seed: int | None = None
    stock: bool = False
    log_level: str = "warning"
    consolidation: ConsolidationConfig = field(default_factory=ConsolidationConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
