"""Prometheus exporter: soakd's numbers on `/metrics`, plus `/healthz` and `/status`.

The exporter owns its own :class:`prometheus_client.CollectorRegistry` (never
the global one) holding a single custom collector. Every series is built from
plain Python numbers at scrape time instead of ``prometheus_client`` metric
objects, for three reasons:

* the hot path (``on_result``, up to 10k calls/s) is a dict increment and a
  ``bisect`` into integer-nanosecond bucket bounds, with no locks: soakd calls
  it from the event loop, and scrapes run on the same loop, so nothing races;
* no ``*_created`` series appear, without flipping prometheus_client's
  process-wide ``disable_created_metrics()`` switch;
* a value that could not be read (``None`` in a :class:`~soakd.model.Sample`)
  is simply *not exposed*, so Prometheus marks it stale instead of recording a
  stale number or a NaN that would poison ``deriv()`` over the whole window.

Counters derived from cumulative process readings (the target's CPU seconds and
I/O bytes) count what the target used **while this soakd process watched it**:
the first reading sets the origin (delta 0), later readings add their increase,
and a reading from a new process (PID changed, or the value went down) adds the
new process's whole value, because it started from zero since the last sample.
So a target restart never makes the counter go down, and a soakd restart is an
ordinary counter reset that ``rate()`` handles, with no spike of the target's
lifetime-to-date CPU. See docs/observability.md for the full metric list.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from soakd.model import (
    Alert,
    AlertState,
    ConsolidationRun,
    Event,
    EventKind,
    Op,
    OpResult,
    Outcome,
    Sample,
)

log = structlog.get_logger(__name__)

#: Latency bucket upper bounds in seconds, 1 ms .. 60 s, roughly x1.5 apart so that
#: histogram_quantile() interpolates P99 to within ~25 % of a bucket (good enough to see
#: a +20 % degradation trend; soakd's own HDR histograms give the exact figures).
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0,
    30.0, 60.0,
)  # fmt: skip
_BUCKETS_NS: tuple[int, ...] = tuple(round(b * 1e9) for b in LATENCY_BUCKETS_S)
_BUCKET_LABELS: tuple[str, ...] = (*(repr(b) for b in LATENCY_BUCKETS_S), "+Inf")

#: The soakd version exposed in soakd_build_info.
try:
    from importlib.metadata import version as _pkg_version

    SOAKD_VERSION = _pkg_version("soakd")
except Exception:  # not installed (tests from a source tree): still expose something
    SOAKD_VERSION = "unknown"

_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")
_ALERT_OWN_LABELS = frozenset({"alertname", "alertstate", "severity"})
_OK = Outcome.OK
_EXPOSED_ALERT_STATES = (AlertState.PENDING, AlertState.FIRING)  # like Prometheus's ALERTS


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:9464`` for IPv6) into host and port; raise ValueError."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"listen address {listen!r} is not HOST:PORT")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} in {listen!r} is out of range")
    host = host.removeprefix("[").removesuffix("]")
    return host or "127.0.0.1", port


class _Histogram:
    """Prometheus-style histogram of nanosecond durations; exported in seconds."""

    __slots__ = ("counts", "sum_ns")

    def __init__(self) -> None:
        self.counts = [0] * (len(_BUCKETS_NS) + 1)  # last slot: above 60 s (+Inf)
        self.sum_ns = 0

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for label, count in zip(_BUCKET_LABELS, self.counts, strict=True):
            running += count
            out.append((label, float(running)))
        return out


class _Accumulator:
    """Turns cumulative per-process readings (that restart at 0 with the process) into a counter."""

    __slots__ = ("_count_first", "_last", "total")

    def __init__(self, *, count_first: bool) -> None:
        self._last: tuple[int | None, float] | None = None
        self._count_first = count_first  # True for soakd itself: its process is as new as we are
        self.total = 0.0

    def update(self, pid: int | None, value: float) -> None:
        prev = self._last
        self._last = (pid, value)
        if prev is None:
            self.total += value if self._count_first else 0.0
        elif pid != prev[0] or value < prev[1]:
            self.total += value  # a new process: everything it shows was used since the last look
        else:
            self.total += value - prev[1]


@dataclass(frozen=True, slots=True)
class _ConsolidationState:
    last_run_s: float
    last_interval_s: float | None
    drift_s: float | None


class Exporter:
    """Collects soakd's measurements and serves them over HTTP (implements ResultSink)."""

    def __init__(
        self, *, run_id: str, target: str, status: Callable[[], Mapping[str, object]]
    ) -> None:
        self._run_id = run_id
        self._target = target
        self._status = status
        self._outcomes: dict[tuple[str, str], int] = {}
        self._response: dict[str, _Histogram] = {}
        self._service: dict[str, _Histogram] = {}
        self._hists: dict[str, tuple[_Histogram, _Histogram]] = {}
        self._dropped: dict[str, int] = {}
        self._late: dict[str, int] = {}
        self._sample: Sample | None = None
        self._cpu = {m: _Accumulator(count_first=False) for m in ("user", "system")}
        self._io = {d: _Accumulator(count_first=False) for d in ("read", "write")}
        self._self_cpu = _Accumulator(count_first=True)
        self._restarts = 0
        self._crashes = 0
        self._consolidation: dict[str, _ConsolidationState] = {}
        self._consolidation_runs: dict[str, int] = {}
        self._stalls: dict[str, int] = {}
        self._expected_interval_s: float | None = None
        self._tolerance_s: float | None = None
        self._alerts: tuple[Alert, ...] = ()
        self._elapsed_s = 0.0
        self._planned_s = 0.0
        self._run_status = "starting"
        self._baseline_p99_s: dict[str, float] = {}
        self._leak_ratio_per_day: float | None = None
        self._leak_bytes_per_s: float | None = None
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_SoakdCollector(self))
        self._runner: web.AppRunner | None = None

    # -- the hot path ------------------------------------------------------------------------

    def on_result(self, r: OpResult) -> None:
        """Count one finished request and record its response and service times."""
        # Written for speed (called up to 10k times a second): no property calls on the
        # common path, one dict lookup per histogram pair, the observation inlined.
        # bisect_left: a value equal to a bound belongs to that bucket (le = "less or equal").
        op: str = r.op.value
        key = (op, "ok" if r.outcome is _OK else r.error_key)
        outcomes = self._outcomes
        outcomes[key] = outcomes.get(key, 0) + 1
        pair = self._hists.get(op)
        if pair is None:
            pair = self._hists[op] = (_Histogram(), _Histogram())
            self._response[op], self._service[op] = pair
        response, service = pair
        done = r.done_ns
        value = done - r.intended_ns
        response.counts[bisect.bisect_left(_BUCKETS_NS, value)] += 1
        response.sum_ns += value
        value = done - r.sent_ns
        service.counts[bisect.bisect_left(_BUCKETS_NS, value)] += 1
        service.sum_ns += value

    def on_dropped(self, op: Op) -> None:
        """An arrival was not sent because ``max_in_flight`` requests were already out."""
        self._dropped[op.value] = self._dropped.get(op.value, 0) + 1

    def on_late(self, op: Op) -> None:
        """An arrival was sent later than its schedule said (soakd fell behind)."""
        self._late[op.value] = self._late.get(op.value, 0) + 1

    # -- slower updates ----------------------------------------------------------------------

    def on_sample(self, s: Sample) -> None:
        """Keep the latest process reading; fold cumulative CPU and I/O into counters."""
        self._sample = s
        if s.pid is not None:
            for mode, value in (("user", s.cpu_user_s), ("system", s.cpu_system_s)):
                if value is not None:
                    self._cpu[mode].update(s.pid, value)
            for direction, count in (("read", s.read_bytes), ("write", s.write_bytes)):
                if count is not None:
                    self._io[direction].update(s.pid, float(count))
        if s.self_cpu_s is not None:
            self._self_cpu.update(None, s.self_cpu_s)

    def on_consolidation_run(
        self, run: ConsolidationRun, expected_interval_s: float, tolerance_s: float = 5.0
    ) -> None:
        """A new consolidation run was seen for ``run.space``."""
        self._consolidation_runs[run.space] = self._consolidation_runs.get(run.space, 0) + 1
        drift = None if run.interval_s is None else run.interval_s - expected_interval_s
        self._consolidation[run.space] = _ConsolidationState(
            last_run_s=run.generated_s, last_interval_s=run.interval_s, drift_s=drift
        )
        self._expected_interval_s = expected_interval_s
        self._tolerance_s = tolerance_s

    def on_consolidation_stall(self, space: str) -> None:
        """No consolidation run appeared in ``space`` for longer than the plan allows."""
        self._stalls[space] = self._stalls.get(space, 0) + 1

    def on_event(self, event: Event) -> None:
        """Count the events the metrics show (an EventSink)."""
        if event.kind == EventKind.TARGET_CRASH:
            self.on_target_crash()
        elif event.kind == EventKind.TARGET_RESTART:
            self.on_target_restart()
        elif event.kind == EventKind.CONSOLIDATION_STALLED:
            self.on_consolidation_stall(str(event.detail.get("space", "")))

    def on_target_restart(self) -> None:
        self._restarts += 1

    def on_target_crash(self) -> None:
        self._crashes += 1

    def set_alerts(self, alerts: Sequence[Alert]) -> None:
        """Replace the alert snapshot; only pending and firing ones are exposed (like ALERTS)."""
        self._alerts = tuple(a for a in alerts if a.state in _EXPOSED_ALERT_STATES)

    def set_progress(self, elapsed_s: float, planned_s: float, status: str) -> None:
        self._elapsed_s = elapsed_s
        self._planned_s = planned_s
        self._run_status = status

    def set_baseline_p99(self, op: Op, seconds: float) -> None:
        """The P99 the performance rule compares against (drawn beside the live P99)."""
        self._baseline_p99_s[op.value] = seconds

    def set_leak_trend(self, pct_per_day: float | None, bytes_per_s: float | None) -> None:
        """The memory_leak rule's judged trend; exposed as a ratio (0.10 = 10 %/day) and bytes/s."""
        self._leak_ratio_per_day = None if pct_per_day is None else pct_per_day / 100.0
        self._leak_bytes_per_s = bytes_per_s

    # -- serving -----------------------------------------------------------------------------

    @property
    def registry(self) -> CollectorRegistry:
        """The registry /metrics serves (for tests and for embedding)."""
        return self._registry

    def exposition(self) -> bytes:
        """The text (format 0.0.4) that /metrics serves."""
        return generate_latest(self._registry)

    async def start(self, listen: str) -> tuple[str, int]:
        """Bind ``HOST:PORT`` (port 0 picks one) and serve; return the bound address."""
        host, port = parse_listen(listen)
        app = web.Application()
        app.router.add_get("/metrics", self._handle_metrics)
        app.router.add_get("/healthz", self._handle_healthz)
        app.router.add_get("/status", self._handle_status)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0]
        log.info("exporter listening", host=bound[0], port=bound[1])
        return str(bound[0]), int(bound[1])

    async def stop(self) -> None:
        """Stop serving; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            async with asyncio.timeout(10.0):
                await runner.cleanup()

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        # Always the 0.0.4 text format: promtool can lint it and every Prometheus reads it.
        return web.Response(
            body=self.exposition(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def _handle_healthz(self, request: web.Request) -> web.Response:
        # Answering at all proves the event loop turns; that is what liveness means here.
        return web.Response(text="ok\n")

    async def _handle_status(self, request: web.Request) -> web.Response:
        try:
            body = json.dumps(dict(self._status()), default=str, indent=1)
        except Exception as exc:  # a bug in status() must not take the exporter down
            log.exception("status() failed")
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=500)
        return web.Response(text=body + "\n", content_type="application/json")

    # -- building the families (called by the collector at scrape time) ------------------------

    def families(self) -> Iterator[Metric]:
        """Every metric family, built from the current numbers."""
        yield from self._operation_families()
        yield from self._target_families()
        yield from self._consolidation_families()
        yield from self._run_families()
        yield from self._self_families()

    def _operation_families(self) -> Iterator[Metric]:
        ops = CounterMetricFamily(
            "soakd_operations",
            "Finished requests by operation and outcome.",
            labels=["op", "outcome"],
        )
        for (op, outcome), n in sorted(self._outcomes.items()):
            ops.add_metric([op, outcome], n)
        yield ops
        for name, doc, hists in (
            (
                "soakd_response_seconds",
                "Response time from the intended send instant (coordinated-omission free).",
                self._response,
            ),
            ("soakd_service_seconds", "Service time from the actual send.", self._service),
        ):
            fam = HistogramMetricFamily(name, doc, labels=["op"])
            for op, h in sorted(hists.items()):
                fam.add_metric([op], h.cumulative(), sum_value=h.sum_ns / 1e9)
            yield fam
        for name, doc, counts in (
            (
                "soakd_dropped_arrivals",
                "Arrivals not sent because max_in_flight requests were outstanding.",
                self._dropped,
            ),
            ("soakd_late_arrivals", "Arrivals sent later than scheduled.", self._late),
        ):
            fam_c = CounterMetricFamily(name, doc, labels=["op"])
            for op, n in sorted(counts.items()):
                fam_c.add_metric([op], n)
            yield fam_c
        base = GaugeMetricFamily(
            "soakd_baseline_p99_seconds",
            "Baseline P99 response time the degradation rule compares against.",
            labels=["op"],
        )
        for op, seconds in sorted(self._baseline_p99_s.items()):
            base.add_metric([op], seconds)
        yield base

    def _target_families(self) -> Iterator[Metric]:
        s = self._sample
        up = s is not None and s.pid is not None and s.rss_bytes is not None
        yield GaugeMetricFamily(
            "soakd_target_up", "1 when the target process could be read.", value=1.0 if up else 0.0
        )
        gauges = (
            ("soakd_target_resident_memory_bytes", "Target resident set size.", "rss_bytes"),
            ("soakd_target_heap_bytes", "Target anonymous memory (heap).", "heap_bytes"),
            (
                "soakd_target_resident_anon_bytes",
                "Target resident anonymous memory (RssAnon): the memory that can leak.",
                "rss_anon_bytes",
            ),
            (
                "soakd_target_resident_file_bytes",
                "Target resident file-backed memory (RssFile): reclaimable page cache.",
                "rss_file_bytes",
            ),
            (
                "soakd_target_resident_shmem_bytes",
                "Target resident shared memory (RssShmem).",
                "rss_shmem_bytes",
            ),
            (
                "soakd_target_available_memory_bytes",
                "Memory the target can still get: host MemAvailable or its cgroup's room.",
                "mem_available_bytes",
            ),
            ("soakd_target_unique_memory_bytes", "Target unique set size (USS).", "uss_bytes"),
            ("soakd_target_open_fds", "Open file descriptors of the target.", "num_fds"),
            ("soakd_target_threads", "Threads of the target.", "num_threads"),
            (
                "soakd_target_data_dir_bytes",
                "Size of the target's data directory.",
                "data_dir_bytes",
            ),
            ("soakd_target_memories", "Memories stored across the run's spaces.", "memories"),
        )
        for name, doc, attr in gauges:
            value = None if s is None else getattr(s, attr)
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=float(value))
        cpu = CounterMetricFamily(
            "soakd_target_cpu_seconds",
            "CPU seconds the target used while soakd watched it (survives target restarts).",
            labels=["mode"],
        )
        for mode, acc in self._cpu.items():
            cpu.add_metric([mode], acc.total)
        yield cpu
        io = CounterMetricFamily(
            "soakd_target_io_bytes",
            "Bytes the target read/wrote at the storage layer while soakd watched it.",
            labels=["direction"],
        )
        for direction, acc in self._io.items():
            io.add_metric([direction], acc.total)
        yield io
        yield CounterMetricFamily(
            "soakd_target_restarts", "Target restarts seen by soakd.", value=self._restarts
        )
        yield CounterMetricFamily(
            "soakd_target_crashes", "Target crashes seen by soakd.", value=self._crashes
        )
        for name, doc, leak in (
            (
                "soakd_target_memory_growth_ratio_per_day",
                "Target memory trend the memory_leak rule judges, per day (0.1 = 10 %/day).",
                self._leak_ratio_per_day,
            ),
            (
                "soakd_target_memory_growth_bytes_per_second",
                "Target memory trend the memory_leak rule judges (slope, bytes/s).",
                self._leak_bytes_per_s,
            ),
        ):
            if leak is not None:
                yield GaugeMetricFamily(name, doc, value=leak)

    def _consolidation_families(self) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "soakd_consolidation_runs", "Consolidation runs observed.", labels=["space"]
        )
        for space, n in sorted(self._consolidation_runs.items()):
            runs.add_metric([space], n)
        yield runs
        last = GaugeMetricFamily(
            "soakd_consolidation_last_run_timestamp_seconds",
            "generated_at of the latest consolidation run (UNIX seconds).",
            labels=["space"],
        )
        interval = GaugeMetricFamily(
            "soakd_consolidation_last_interval_seconds",
            "Seconds between the two latest consolidation runs.",
            labels=["space"],
        )
        drift = GaugeMetricFamily(
            "soakd_consolidation_drift_seconds",
            "Latest interval minus the expected interval (signed).",
            labels=["space"],
        )
        for space, st in sorted(self._consolidation.items()):
            last.add_metric([space], st.last_run_s)
            if st.last_interval_s is not None and st.drift_s is not None:
                interval.add_metric([space], st.last_interval_s)
                drift.add_metric([space], st.drift_s)
        yield from (last, interval, drift)
        stalls = CounterMetricFamily(
            "soakd_consolidation_stalls",
            "Times a space went without a consolidation run for too long.",
            labels=["space"],
        )
        for space, n in sorted(self._stalls.items()):
            stalls.add_metric([space], n)
        yield stalls
        for name, doc, value in (
            (
                "soakd_consolidation_expected_interval_seconds",
                "The consolidation interval the plan expects.",
                self._expected_interval_s,
            ),
            (
                "soakd_consolidation_tolerance_seconds",
                "Allowed drift of the consolidation interval.",
                self._tolerance_s,
            ),
        ):
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)

    def _run_families(self) -> Iterator[Metric]:
        alert = GaugeMetricFamily(
            "soakd_alert", "1 per pending or firing soakd alert (like Prometheus's ALERTS)."
        )
        for a in self._alerts:
            alert.add_sample("soakd_alert", _alert_labels(a), 1.0)
        yield alert
        yield GaugeMetricFamily(
            "soakd_run_elapsed_seconds", "Run time done so far.", value=self._elapsed_s
        )
        yield GaugeMetricFamily(
            "soakd_run_planned_seconds", "Planned run duration.", value=self._planned_s
        )
        info = GaugeMetricFamily(
            "soakd_run_info", "The run soakd is driving.", labels=["run_id", "target", "status"]
        )
        info.add_metric([self._run_id, self._target, self._run_status], 1.0)
        yield info
        build = GaugeMetricFamily("soakd_build_info", "soakd's version.", labels=["version"])
        build.add_metric([SOAKD_VERSION], 1.0)
        yield build

    def _self_families(self) -> Iterator[Metric]:
        s = self._sample
        for name, doc, value in (
            (
                "soakd_event_loop_lag_seconds",
                "How late soakd's event loop woke a timer (latest reading).",
                None if s is None else s.loop_lag_s,
            ),
            (
                "soakd_self_resident_memory_bytes",
                "soakd's own resident set size.",
                None if s is None else s.self_rss_bytes,
            ),
        ):
            if value is not None and not math.isnan(value):
                yield GaugeMetricFamily(name, doc, value=float(value))
        yield CounterMetricFamily(
            "soakd_self_cpu_seconds", "soakd's own CPU seconds.", value=self._self_cpu.total
        )


def _alert_labels(a: Alert) -> dict[str, str]:
    """ALERTS-style labels: alertname, alertstate, severity, then the alert's own (sanitised)."""
    labels: dict[str, str] = {}
    for name, value in a.labels.items():
        clean = _LABEL_NAME.sub("_", name)
        if clean[:1].isdigit():
            clean = "_" + clean
        if clean.startswith("__") or clean in _ALERT_OWN_LABELS:
            continue  # reserved by Prometheus, or set below
        labels[clean] = value
    labels.update(alertname=a.rule, alertstate=a.state.value, severity=a.severity)
    return labels


class _SoakdCollector(Collector):
    """Adapter: the registry asks, the exporter builds the families."""

    def __init__(self, exporter: Exporter) -> None:
        self._exporter = exporter

    def collect(self) -> Iterator[Metric]:
        return self._exporter.families()
