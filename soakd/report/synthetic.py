"""Synthetic run stores for the report's tests, benchmark and screenshot.

Writes a realistic state dir through the real :class:`soakd.store.RunStore`:
1 s process samples, per-operation interval records with real encoded HDR
histograms, consolidation runs per space, events, alert transitions and
integrity counters, with knobs that reproduce each failure the report must
catch (leak, P99 drift, cadence drift, crashes, lost/corrupted writes).

To keep a 7-day store quick to generate, a few histograms per operation are
encoded once per latency level and reused; the report still decodes every
record.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from soakd.hdr import Histogram
from soakd.model import (
    DRIVEN_OPS,
    AlertState,
    AlertTransition,
    ConsolidationRun,
    Event,
    EventKind,
    IntervalRecord,
    Op,
    RunInfo,
    Sample,
)
from soakd.spec.alerts import with_implicit_rules
from soakd.spec.model import (
    AlertKind,
    AlertRuleSpec,
    ConsolidationSpec,
    OperationSpec,
    SamplingSpec,
    Spec,
    SpreadOptions,
)
from soakd.store import Batch, RunStore

#: Latency levels encoded per operation (the drift knob walks through them).
LEVELS = 12
_RATES = {Op.STORE: 100.0, Op.RECALL: 50.0, Op.SPREAD: 20.0}
_BASE_MS = {Op.STORE: 2.0, Op.RECALL: 4.0, Op.SPREAD: 8.0}


@dataclass(frozen=True)
class Knobs:
    """What the synthetic run looks like; the defaults are a clean run."""

    duration_s: float = 600.0
    planned_s: float | None = None  # default: duration_s
    sample_interval_s: float = 1.0
    stats_interval_s: float = 10.0
    rss_start_bytes: float = 1.2e9
    leak_pct_per_day: float = 0.0
    p99_growth_pct: float = 0.0  # P99 at the end relative to the start
    consolidation_interval_s: float = 60.0
    consolidation_extra_s: float = 0.0  # added to every interval in the second half
    spaces: int = 10
    crashes: int = 0
    integrity_checked: int = 5000
    integrity_lost: int = 0
    integrity_corrupted: int = 0
    status: str = "completed"
    ended: bool = True  # False: a killed run (no ended_at)
    alerts: bool = False  # write a pending->firing->resolved alert episode
    samples_per_hist: int = 400
    seed: int = 7
    started_at: float = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def spec_for(k: Knobs) -> Spec:
    """The plan's workload (soak_test.yaml) with the plan's three alert phrases."""
    planned = k.planned_s if k.planned_s is not None else k.duration_s
    return Spec(
        duration_s=planned,
        operations=(
            OperationSpec("store", 100.0, k.spaces),
            OperationSpec("recall", 50.0, k.spaces),
            OperationSpec("spread", 20.0, k.spaces, spread=SpreadOptions(max_hops=5)),
        ),
        consolidation=ConsolidationSpec(
            interval_s=k.consolidation_interval_s, spaces=k.spaces, tolerance_s=5.0
        ),
        # as the loader builds them: the plan's three plus the implicit rules
        alerts=with_implicit_rules(
            (
                AlertRuleSpec(
                    "memory_leak", AlertKind.MEMORY_LEAK, 10.0, phrase="RSS increases >10% per day"
                ),
                AlertRuleSpec(
                    "performance_degradation",
                    AlertKind.PERFORMANCE_DEGRADATION,
                    20.0,
                    phrase="P99 latency increases >20%",
                ),
                AlertRuleSpec(
                    "consolidation_failure",
                    AlertKind.CONSOLIDATION_FAILURE,
                    5.0,
                    phrase="Cadence drift >5s",
                ),
            ),
            SamplingSpec().min_free_disk_bytes,
        ),
        sampling=SamplingSpec(interval_s=k.sample_interval_s, stats_interval_s=k.stats_interval_s),
        name="synthetic",
        fingerprint="synthetic",
    )


def spec_text(k: Knobs) -> str:
    """The YAML :func:`spec_for` stands for (stored in the run, read by ``soakd report``)."""
    planned = k.planned_s if k.planned_s is not None else k.duration_s
    return f"""# synthetic run (soakd.report.synthetic)
name: synthetic
duration: {planned:g}s
workload:
  - operation: store
    rate: 100 ops/sec
    spaces: {k.spaces}
  - operation: recall
    rate: 50 ops/sec
    spaces: {k.spaces}
  - operation: consolidation
    interval: {k.consolidation_interval_s:g}s
    spaces: {k.spaces}
  - operation: spread
    rate: 20 ops/sec
    max_hops: 5
alerts:
  - memory_leak: "RSS increases >10% per day"
  - performance_degradation: "P99 latency increases >20%"
  - consolidation_failure: "Cadence drift >5s"
"""


def _blobs(op: Op, rng: random.Random, n: int) -> list[tuple[bytes, bytes, bytes]]:
    """Per latency level: (response, service, lag) encodings; level i is (1 + i/(LEVELS-1))x."""
    out = []
    for level in range(LEVELS):
        scale = 1.0 + level / (LEVELS - 1)
        resp, serv, lag = Histogram(), Histogram(), Histogram()
        for _ in range(n):
            service_ms = _BASE_MS[op] * scale * rng.lognormvariate(0.0, 0.35)
            lag_ms = rng.expovariate(1.0 / 0.3)
            serv.record_ns(int(service_ms * 1e6))
            lag.record_ns(int(lag_ms * 1e6))
            resp.record_ns(int((service_ms + lag_ms) * 1e6))
        out.append((resp.encode(), serv.encode(), lag.encode()))
    return out


def _level(k: Knobs, frac: float) -> int:
    """Latency level for a point ``frac`` (0..1) through the run."""
    if k.p99_growth_pct <= 0:
        return 0
    top = min(LEVELS - 1, round(k.p99_growth_pct / 100.0 * (LEVELS - 1)))
    return min(top, int(frac * (top + 1)))


def _samples(k: Knobs, rng: random.Random, t0: float, t1: float) -> list[Sample]:
    out = []
    start = k.started_at
    growth_per_s = k.rss_start_bytes * k.leak_pct_per_day / 100.0 / 86400.0
    t = t0
    while t < t1:
        el = t - start
        # a GC-like sawtooth of +-0.4 % plus noise, on top of the (leak) trend
        saw = ((el % 300.0) / 300.0 - 0.5) * 0.008 * k.rss_start_bytes
        rss = k.rss_start_bytes + growth_per_s * el + saw + rng.gauss(0.0, 2e6)
        out.append(
            Sample(
                t=t,
                pid=4242 + _crashes_before(k, t),
                rss_bytes=int(rss),
                heap_bytes=int(rss * 0.7),
                cpu_user_s=el * 0.35,
                cpu_system_s=el * 0.05,
                num_fds=120,
                num_threads=24,
                memories=100_000,
            )
        )
        t += k.sample_interval_s
    return out


def _crash_times(k: Knobs) -> list[float]:
    return [k.started_at + k.duration_s * (i + 1) / (k.crashes + 1) for i in range(k.crashes)]


def _crashes_before(k: Knobs, t: float) -> int:
    return sum(1 for c in _crash_times(k) if c <= t)


def _consolidation(k: Knobs, rng: random.Random) -> list[ConsolidationRun]:
    runs: list[ConsolidationRun] = []
    for s in range(k.spaces):
        space = f"space_{s + 1:02d}"
        t = k.started_at + rng.uniform(1.0, k.consolidation_interval_s)
        prev: float | None = None
        while t < k.started_at + k.duration_s:
            stamp = f"2026-01-01T00:00:00.{s:03d}Z"
            runs.append(ConsolidationRun(space, t, stamp, t, None if prev is None else t - prev))
            prev = t
            extra = k.consolidation_extra_s if t - k.started_at > k.duration_s / 2 else 0.0
            t += k.consolidation_interval_s + rng.gauss(0.0, 0.3) + extra
    runs.sort(key=lambda r: r.t)
    return runs


def _events(k: Knobs) -> list[Event]:
    ev = [Event(k.started_at, EventKind.RUN_STARTED, "run synthetic started")]
    for i, t in enumerate(_crash_times(k)):
        ev.append(Event(t, EventKind.TARGET_CRASH, f"target PID {4242 + i} killed by SIGSEGV"))
        ev.append(Event(t + 2.0, EventKind.TARGET_RESTART, f"target restarted as PID {4243 + i}"))
    return ev


def _alerts(k: Knobs) -> list[AlertTransition]:
    if not k.alerts:
        return []
    t = k.started_at + k.duration_s * 0.4
    lab = {"alertname": "performance_degradation", "op": "spread"}
    s = "P99 latency of spread increased 27 % over baseline"
    return [
        AlertTransition(
            t, "performance_degradation", lab, AlertState.INACTIVE, AlertState.PENDING, 21.0, s
        ),
        AlertTransition(
            t + 60, "performance_degradation", lab, AlertState.PENDING, AlertState.FIRING, 27.0, s
        ),
        AlertTransition(
            t + 900, "performance_degradation", lab, AlertState.FIRING, AlertState.RESOLVED, 3.0, s
        ),
    ]


def make_run(state_dir: Path, k: Knobs = Knobs()) -> tuple[RunStore, Spec]:
    """Create and fill a run store in ``state_dir``; returns it open, with its spec."""
    rng = random.Random(k.seed)
    spec = spec_for(k)
    start = k.started_at
    end = start + k.duration_s
    info = RunInfo(
        run_id="synthetic-run",
        spec_fingerprint=spec.fingerprint,
        spec_text=spec_text(k),
        started_at=start,
        planned_duration_s=spec.duration_s,
        target_url="http://127.0.0.1:7432",
    )
    store = RunStore.create(state_dir, info)
    blobs = {op: _blobs(op, rng, k.samples_per_hist) for op in DRIVEN_OPS}
    chunk_s = 3600.0
    t = start
    while t < end:
        t1 = min(end, t + chunk_s)
        batch = Batch(samples=_samples(k, rng, t, t1))
        it = start + math.ceil((t - start) / k.stats_interval_s) * k.stats_interval_s
        while it + k.stats_interval_s <= t1 + 1e-9:
            lvl = _level(k, (it - start) / k.duration_s)
            for op in DRIVEN_OPS:
                resp, serv, lag = blobs[op][lvl]
                n = int(_RATES[op] * k.stats_interval_s)
                err = 1 if op is Op.SPREAD and rng.random() < 0.05 else 0
                batch.intervals.append(
                    IntervalRecord(
                        op,
                        it,
                        it + k.stats_interval_s,
                        n,
                        n - err,
                        {"http_500": err} if err else {},
                        0,
                        0,
                        resp,
                        serv,
                        lag,
                    )
                )
            it += k.stats_interval_s
        store.write(batch)
        t = t1
    store.write(
        Batch(
            consolidation_runs=_consolidation(k, rng),
            events=_events(k),
            alert_transitions=_alerts(k),
            counters={
                "integrity_checked": k.integrity_checked,
                "integrity_lost": k.integrity_lost,
                "integrity_corrupted": k.integrity_corrupted,
            },
        )
    )
    if k.ended:
        store.set_status(k.status, end)
    return store, spec
