"""Command line of the reference server: every flag also has an environment variable.

``python -m soakd.reference --port PORT [--host HOST] [--data-dir DIR] [knobs]``.
A flag wins over its environment variable, which wins over the default.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
import uvloop

from soakd.reference.config import (
    OPERATIONS,
    ConsolidationConfig,
    FaultConfig,
    OpFaults,
    ServerConfig,
    parse_duration_s,
    parse_per_op,
    parse_signal,
    parse_size_bytes,
)
from soakd.reference.server import serve


@dataclass(frozen=True)
class Opt:
    """One option: flag, environment variable, parser, default and help."""

    flag: str
    env: str | None
    parse: Callable[[str], Any]
    default: str | None
    help: str

    @property
    def dest(self) -> str:
        """argparse destination name."""
        return self.flag.lstrip("-").replace("-", "_")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{text} is not a fraction in [0, 1]")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{text} must be >= 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{text} must be >= 0")
    return value


def _rates(text: str) -> dict[str, float]:
    out = parse_per_op(text, float)
    if any(not 0.0 <= v <= 1.0 for v in out.values()):
        raise ValueError(f"error rates must be in [0, 1]: {text}")
    return out


def _statuses(text: str) -> dict[str, float]:
    out = parse_per_op(text, int)
    if any(not 400 <= v <= 599 for v in out.values()):
        raise ValueError(f"error statuses must be 400-599: {text}")
    return out


def _drifts(text: str) -> dict[str, float]:
    out = parse_per_op(text, float)
    if any(v < 0 for v in out.values()):
        raise ValueError(f"drifts must be >= 0: {text}")
    return out


def _scale(text: str) -> float:
    value = float(text)
    if not 1.0 <= value <= 100.0:
        raise ValueError(f"{text} must be in [1, 100]")
    return value


OPTIONS = (
    Opt("--host", "ENGRAM_HTTP_BIND", str, "127.0.0.1", "address to bind"),
    Opt("--port", None, int, "7432", "HTTP port (0: ephemeral; busy: tries the next 100)"),
    Opt(
        "--data-dir",
        "ENGRAM_DATA_DIR",
        str,
        None,
        "persist spaces here, one folder each (default: memory only)",
    ),
    Opt("--pid-file", "ENGRAM_PID_PATH", str, None, "write PID:PORT here; removed on clean exit"),
    Opt(
        "--api-key",
        "ENGRAM_REF_API_KEY",
        str,
        None,
        "require 'Authorization: Bearer KEY' on every route (401 otherwise)",
    ),
    Opt(
        "--capacity",
        "ENGRAM_REF_CAPACITY",
        _positive_int,
        "100000",
        "hot memories per space; past it the least-activated is evicted",
    ),
    Opt(
        "--persist-interval",
        "ENGRAM_REF_PERSIST_INTERVAL",
        parse_duration_s,
        "30s",
        "how often changed spaces are saved to --data-dir",
    ),
    Opt(
        "--text-scan-limit",
        "ENGRAM_REF_TEXT_SCAN_LIMIT",
        _positive_int,
        "10000",
        "text recall scans at most this many newest memories",
    ),
    Opt("--seed", "ENGRAM_REF_SEED", int, None, "seed of the fault and jitter randomness"),
    Opt("--log-level", "ENGRAM_REF_LOG_LEVEL", str, "warning", "debug, info, warning, error"),
    Opt(
        "--leak-bytes-per-store",
        "ENGRAM_REF_LEAK_BYTES_PER_STORE",
        _non_negative_int,
        "0",
        "FAULT leak: bytes retained (and touched) per store request",
    ),
    Opt(
        "--latency-drift",
        "ENGRAM_REF_LATENCY_DRIFT",
        _drifts,
        "0",
        "FAULT drift: ms added per minute of uptime; 'MS' or 'store=MS,recall=MS,spread=MS,get=MS'",
    ),
    Opt(
        "--error-rate",
        "ENGRAM_REF_ERROR_RATE",
        _rates,
        "0",
        "FAULT errors: fraction of operations failed; 'R' or 'store=R,spread=R'",
    ),
    Opt(
        "--error-status",
        "ENGRAM_REF_ERROR_STATUS",
        _statuses,
        "500",
        "status of injected errors; 'S' or 'store=503,recall=500'",
    ),
    Opt(
        "--stall-every",
        "ENGRAM_REF_STALL_EVERY",
        parse_duration_s,
        "0",
        "FAULT stall: freeze the whole event loop every this long (0: never)",
    ),
    Opt(
        "--stall-for",
        "ENGRAM_REF_STALL_FOR",
        parse_duration_s,
        "0",
        "length of each stall (e.g. 500ms)",
    ),
    Opt(
        "--crash-after",
        "ENGRAM_REF_CRASH_AFTER",
        parse_duration_s,
        "0",
        "FAULT crash: die by --crash-signal after this much uptime (0: never)",
    ),
    Opt(
        "--crash-after-ops",
        "ENGRAM_REF_CRASH_AFTER_OPS",
        _non_negative_int,
        "0",
        "FAULT crash: die by --crash-signal at this operation (0: never)",
    ),
    Opt(
        "--crash-signal",
        "ENGRAM_REF_CRASH_SIGNAL",
        parse_signal,
        "KILL",
        "signal of the crash: KILL, SEGV or ABRT",
    ),
    Opt(
        "--consolidation-interval",
        "ENGRAM_REF_CONSOLIDATION_INTERVAL",
        parse_duration_s,
        "60s",
        "per-space consolidation period",
    ),
    Opt(
        "--consolidation-jitter",
        "ENGRAM_REF_CONSOLIDATION_JITTER",
        parse_duration_s,
        "0",
        "FAULT cadence: each run lands uniformly within +- this of its due time",
    ),
    Opt(
        "--consolidation-stall-after",
        "ENGRAM_REF_CONSOLIDATION_STALL_AFTER",
        parse_duration_s,
        "0",
        "FAULT cadence: stop refreshing consolidation after this much uptime (0: never)",
    ),
    Opt(
        "--write-loss",
        "ENGRAM_REF_WRITE_LOSS",
        _fraction,
        "0",
        "FAULT: fraction of stores answered 201 but not kept",
    ),
    Opt(
        "--service-ms",
        "ENGRAM_REF_SERVICE_MS",
        _drifts,
        "0",
        "FAULT saturation: ms each operation holds its one worker (queueing above "
        "1000/MS per s); 'MS' or 'store=MS,recall=MS'",
    ),
    Opt(
        "--work-ms",
        "ENGRAM_REF_WORK_MS",
        _drifts,
        "0",
        "CPU each operation's own work costs, busy on the loop (--latency-scale stretches it); "
        "'MS' or 'recall=MS,spread=MS'",
    ),
    Opt(
        "--sustain",
        "ENGRAM_REF_SUSTAIN",
        _drifts,
        "0",
        "FAULT burst: operations per second each kind keeps up with on end, past its --burst "
        "(requests then wait their turn); 'N' or 'store=N,recall=N' (0: no limit)",
    ),
    Opt(
        "--burst",
        "ENGRAM_REF_BURST",
        _drifts,
        "0",
        "FAULT burst: operations each kind takes above its --sustain rate before they queue",
    ),
    Opt(
        "--space-create-time",
        "ENGRAM_REF_SPACE_CREATE_TIME",
        parse_duration_s,
        "0",
        "FAULT slow start: time POST /api/v1/spaces takes for a new space (existing: at once)",
    ),
    Opt(
        "--space-create-parallel",
        "ENGRAM_REF_SPACE_CREATE_PARALLEL",
        _positive_int,
        "2",
        "new spaces created at once; the rest wait (Engram: ~2)",
    ),
    Opt(
        "--file-map-size",
        "ENGRAM_REF_FILE_MAP_SIZE",
        parse_size_bytes,
        "0",
        "FAULT page cache: sparse file of this size mapped and read per space "
        "(RSS that is RssFile, not heap; e.g. 512M)",
    ),
    Opt(
        "--file-map-fill-time",
        "ENGRAM_REF_FILE_MAP_FILL_TIME",
        parse_duration_s,
        "0",
        "read each mapping through over this long instead of at once (RssFile keeps growing)",
    ),
    Opt(
        "--unhealthy-after",
        "ENGRAM_REF_UNHEALTHY_AFTER",
        parse_duration_s,
        "0",
        "FAULT self-report: from this long after start, /health and /api/v1/system/health "
        "answer 503 'unhealthy' with their whole body (Engram under load; 0: never)",
    ),
    Opt(
        "--latency-scale",
        "ENGRAM_REF_LATENCY_SCALE",
        _scale,
        "1",
        "FAULT slowness: each measured operation holds the loop F times as long (1.2: 1/5 more)",
    ),
)
STOCK_ENV = "ENGRAM_REF_STOCK"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; help lists each option's environment variable."""
    parser = argparse.ArgumentParser(
        prog="python -m soakd.reference",
        description="Engram-compatible reference target with fault knobs "
        "(see docs/reference-target.md). Durations: 60, 1.5s, 500ms, 2m.",
    )
    for opt in OPTIONS:
        env = f"env {opt.env}; " if opt.env else ""
        parser.add_argument(
            opt.flag,
            dest=opt.dest,
            default=None,
            help=f"{opt.help} [{env}default {opt.default}]",
        )
    parser.add_argument(
        "--stock",
        action="store_true",
        default=None,
        help=f"stock-Engram mode: every SPREAD -> 500, consolidation snapshot cached "
        f"forever [env {STOCK_ENV}=1]",
    )
    return parser


def parse_config(argv: Sequence[str] | None = None) -> ServerConfig:
    """Parse flags and environment into a ServerConfig (exit 2 on a bad value)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        raw = getattr(args, opt.dest)
        if raw is None and opt.env:
            raw = os.environ.get(opt.env) or None
        raw = opt.default if raw is None else raw
        try:
            values[opt.dest] = None if raw is None else opt.parse(raw)
        except ValueError as exc:
            parser.error(f"{opt.flag}: {exc}")
    stock = bool(args.stock) or os.environ.get(STOCK_ENV, "").lower() in ("1", "true", "yes")
    return _config(values, stock)


def _config(v: dict[str, Any], stock: bool) -> ServerConfig:
    ops = {
        op: OpFaults(
            drift_ms_per_min=v["latency_drift"].get(op, 0.0),
            error_rate=v["error_rate"].get(op, 0.0),
            error_status=int(v["error_status"].get(op, 500)),
            service_ms=v["service_ms"].get(op, 0.0),
            work_ms=v["work_ms"].get(op, 0.0),
            sustain_per_s=v["sustain"].get(op, 0.0),
            burst=v["burst"].get(op, 0.0),
        )
        for op in OPERATIONS
    }
    faults = FaultConfig(
        leak_bytes_per_store=v["leak_bytes_per_store"],
        ops=ops,
        stall_every_s=v["stall_every"],
        stall_for_s=v["stall_for"],
        crash_after_s=v["crash_after"],
        crash_after_ops=v["crash_after_ops"],
        crash_signal=v["crash_signal"],
        write_loss=v["write_loss"],
        space_create_s=v["space_create_time"],
        space_create_parallel=v["space_create_parallel"],
        file_map_bytes=v["file_map_size"],
        file_map_fill_s=v["file_map_fill_time"],
        unhealthy_after_s=v["unhealthy_after"],
        latency_scale=v["latency_scale"],
    )
    consolidation = ConsolidationConfig(
        interval_s=max(0.01, v["consolidation_interval"]),
        jitter_s=v["consolidation_jitter"],
        stall_after_s=v["consolidation_stall_after"],
    )
    return ServerConfig(
        host=v["host"],
        port=v["port"],
        data_dir=v["data_dir"],
        pid_file=v["pid_file"],
        api_key=v["api_key"],
        capacity=v["capacity"],
        persist_interval_s=max(0.1, v["persist_interval"]),
        text_scan_limit=v["text_scan_limit"],
        seed=v["seed"],
        stock=stock,
        consolidation=consolidation,
        faults=faults,
        log_level=v["log_level"],
    )


def _configure_logging(level: str) -> None:
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.WARNING)
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the reference server; return its exit status (0 on a clean stop, 2 on bad usage).

    argparse's exits (``--help``, a bad value) are returned, not raised, so that
    ``soakd reference-server`` can embed this function.
    """
    try:
        config = parse_config(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    _configure_logging(config.log_level)
    return uvloop.run(serve(config))
