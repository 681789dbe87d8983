"""Build the :class:`~soakd.report.model.ReportModel` from a run store, once.

Reads everything through :class:`soakd.model.RunReader`, in bounded chunks
(see samplescan/opscan), so a report of a 7-day run stays well under 500 MB.
Works for a completed run, a stopped one, one still going and one whose soakd
was killed: the report's end is ``ended_at`` when the run recorded one, else
the time of the last data it holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from soakd.model import DRIVEN_OPS, Event, Op, RunInfo, RunReader, Sample
from soakd.report.fastread import FastReadError, open_store
from soakd.report.lttb import downsample
from soakd.report.model import (
    Gap,
    Integrity,
    MemoryParts,
    MemoryReport,
    OpReport,
    ReportModel,
    Stretch,
    WorkloadLine,
)
from soakd.report.opscan import scan_op
from soakd.report.samplescan import SampleScan, scan_samples
from soakd.report.timeline import (
    STALL_KINDS,
    alert_segments,
    consolidation_report,
    timeline_events,
)
from soakd.rules.evaluate import leak_ceiling
from soakd.rules.leak import LeakFit, leak_fit, memory_field
from soakd.rules.windows import Windows, default_windows
from soakd.spec.model import AlertKind, AlertRuleSpec, MemorySeries, Spec

log = structlog.get_logger()

#: Points per memory series in the HTML chart.
MEMORY_POINTS = 1200
#: Sample gaps listed one by one (the longest); the rest are only counted.
MAX_GAPS = 200
#: Latency windows per chart over the whole run.
LATENCY_WINDOWS = 400


@dataclass(frozen=True)
class ReportExtras:
    """What only the live daemon knows; the store's counters win when they are larger."""

    integrity_checked: int = 0
    integrity_lost: int = 0
    integrity_corrupted: int = 0
    target_rates: Mapping[str, float] = field(default_factory=dict)


def _counters(reader: RunReader) -> dict[str, int]:
    # RunStore has counters(); the RunReader protocol does not promise it.
    get = getattr(reader, "counters", None)
    if not callable(get):
        return {}
    raw = get()
    return {str(k): int(v) for k, v in dict(raw).items()}


def _report_end(
    info: RunInfo, reader: RunReader, events: Sequence[Event], now: float
) -> tuple[float, float | None]:
    """(the report's end, the last data time) for finished, live and killed runs."""
    last = getattr(reader, "last_sample_time", None)  # RunStore has it; the protocol does not
    last_t: float | None
    if callable(last):
        last_t = last()
    else:
        every = reader.samples()  # a plain RunReader (a test fake): small enough to read whole
        last_t = every[-1].t if every else None
    if events:
        last_t = max(events[-1].t, last_t) if last_t is not None else events[-1].t
    if info.ended_at is not None:
        return info.ended_at, last_t
    return (last_t if last_t is not None else now), last_t


def _longest_gaps(gaps: Sequence[tuple[float, float]]) -> tuple[Gap, ...]:
    """The MAX_GAPS longest gaps, in time order.

    A store thinned for disk space (one sample a minute) has a "gap" every
    minute; the report lists the ones that matter and counts the rest.
    """
    longest = sorted(gaps, key=lambda g: g[1] - g[0], reverse=True)[:MAX_GAPS]
    return tuple(Gap(a, b) for a, b in sorted(longest))


def _workload(spec: Spec) -> tuple[WorkloadLine, ...]:
    lines: list[WorkloadLine] = []
    for o in spec.operations:
        note = ""
        if o.spread is not None:
            note = f"max_hops {o.spread.max_hops}"
        elif o.recall is not None:
            note = f"by {o.recall.by}, max_results {o.recall.max_results}"
        lines.append(WorkloadLine(o.operation, o.rate_per_s, o.spaces, note))
    c = spec.consolidation
    if c is not None:
        lines.append(
            WorkloadLine("consolidation", None, c.spaces, f"observed every {c.interval_s:g} s")
        )
    return tuple(lines)


#: Seconds of samples read to find the RSS parts at each end of the run.
PARTS_LOOK_S = 120.0


def _parts(samples: Sequence[Sample], last: bool) -> MemoryParts | None:
    """The kernel's split of RSS from the first (or last) sample that has it."""
    for s in reversed(samples) if last else samples:
        if s.rss_anon_bytes is not None:
            return MemoryParts(
                s.t,
                s.rss_bytes,
                s.rss_anon_bytes,
                s.rss_file_bytes,
                s.rss_shmem_bytes,
                s.mem_available_bytes,
            )
    return None


def _memory(
    scan: SampleScan,
    start: float,
    end: float,
    warmup_s: float,
    *,
    rule: AlertRuleSpec | None = None,
    reader: RunReader | None = None,
) -> MemoryReport:
    fit: LeakFit | None = None
    heap_fit: LeakFit | None = None
    rss_fit: LeakFit | None = None
    # What the memory_leak rule judges (anonymous memory unless it chose RSS), so the
    # report's verdict and the page agree; total RSS is fitted too, for the reader.
    series = rule.memory if rule is not None else MemorySeries.ANON
    ceiling = leak_ceiling(rule)
    if scan.fit_samples:
        field_ = memory_field(scan.fit_samples, series)

        def fit_of(name: str) -> LeakFit:
            return leak_fit(
                scan.fit_samples,
                warmup_s,
                run_started=start,
                now=end,
                field=name,
                bytes_per_memory_ceiling=ceiling,
            )

        fit = fit_of(field_)
        rss_fit = fit if field_ == "rss_bytes" else fit_of("rss_bytes")
        heap_fit = fit if field_ == "heap_bytes" else fit_of("heap_bytes")
    first = last = None
    if reader is not None:
        post = start + warmup_s
        first = _parts(reader.samples(since=post, until=post + PARTS_LOOK_S), last=False)
        last = _parts(reader.samples(since=max(post, end - PARTS_LOOK_S), until=end), last=True)
    return MemoryReport(
        samples=scan.count,
        readable=scan.readable,
        warmup_s=warmup_s,
        rss_mean=scan.post_sum / scan.post_n if scan.post_n else None,
        rss_min=scan.post_min,
        rss_max=scan.post_max,
        rss_first=scan.post_first,
        rss_last=scan.post_last,
        rss_peak=scan.rss_peak,
        heap_first=scan.heap_first,
        heap_last=scan.heap_last,
        heap_peak=scan.heap_peak,
        cpu_mean_pct=scan.cpu_mean_pct,
        memories_last=scan.memories_last,
        fit=fit,
        heap_fit=heap_fit if scan.heap_peak is not None else None,
        rss_series=tuple(downsample(scan.t, scan.rss, MEMORY_POINTS)),
        heap_series=tuple(downsample(scan.t, scan.heap, MEMORY_POINTS)),
        rss_fit=rss_fit,
        parts_first=first,
        parts_last=last,
    )


def _ops(
    reader: RunReader,
    conn: sqlite3.Connection | None,
    spec: Spec,
    extra: ReportExtras,
    *,
    start: float,
    end: float,
    windows: Windows,
) -> tuple[OpReport, ...]:
    """One :class:`OpReport` per operation that has records (driven ones get P99 drift)."""
    span = max(end - start, 1.0)
    baseline = Stretch(start + windows.warmup_s, start + windows.warmup_s + windows.baseline_s)
    last = Stretch(max(baseline.end, end - windows.perf_window_s), end)
    stats_s = spec.sampling.stats_interval_s
    out: list[OpReport] = []
    for op in Op:
        o = spec.operation(op.value)
        rate = extra.target_rates.get(op.value, o.rate_per_s if o is not None else None)
        driven = op in DRIVEN_OPS
        rep = scan_op(
            reader,
            conn,
            op,
            start=start,
            end=end,
            window_s=max(stats_s, span / LATENCY_WINDOWS),
            target_rate=rate,
            baseline=baseline if driven else None,
            last=last if driven and last.end > last.start else None,
            stats_interval_s=stats_s,
        )
        if rep is not None:
            out.append(rep)
    return tuple(out)


def build_model(
    reader: RunReader, spec: Spec, *, now: float, extra: ReportExtras | None = None
) -> ReportModel:
    """Read the run once and reduce it to a :class:`ReportModel`."""
    extra = extra or ReportExtras()
    info = reader.run_info()
    start = info.started_at
    events = reader.events()
    end, last_data = _report_end(info, reader, events, now)
    planned = info.planned_duration_s or spec.duration_s
    windows = default_windows(planned)
    interval_s = spec.sampling.interval_s

    def scan_all(fast: bool) -> SampleScan:
        return scan_samples(
            reader,
            start=start,
            end=end,
            warmup_end=start + windows.warmup_s,
            gap_min_s=max(5.0 * interval_s, 15.0),
            fast=fast,
        )

    try:
        samples = scan_all(True)
    except FastReadError:
        log.warning("report_fast_read_failed", exc_info=True)
        samples = scan_all(False)
    conn = open_store(reader)
    try:
        ops = _ops(reader, conn, spec, extra, start=start, end=end, windows=windows)
    except FastReadError:
        log.warning("report_fast_read_failed", exc_info=True)
        ops = _ops(reader, None, spec, extra, start=start, end=end, windows=windows)
    finally:
        if conn is not None:
            conn.close()
    counters = _counters(reader)
    segments, fired = alert_segments(reader.alert_history())
    return ReportModel(
        run_id=info.run_id,
        name=spec.name,
        target_url=info.target_url or spec.target.url,
        spec_fingerprint=info.spec_fingerprint,
        status=info.status,
        started_at=start,
        ended_at=info.ended_at,
        end=end,
        generated_at=now,
        last_data_at=last_data,
        planned_s=planned,
        workload=_workload(spec),
        spaces=spec.space_count,
        ops=ops,
        # the leak fit's own (longer) warm-up, as the memory_leak alert uses
        memory=_memory(
            samples,
            start,
            end,
            windows.leak_warmup_s,
            rule=next((r for r in spec.alerts if r.kind is AlertKind.MEMORY_LEAK), None),
            reader=reader,
        ),
        consolidation=consolidation_report(
            spec,
            reader.consolidation_runs(),
            end=end,
            stall_events=sum(1 for e in events if e.kind in STALL_KINDS),
            stall_counter=counters.get("consolidation_stalls", 0),
        ),
        integrity=Integrity(
            checked=max(counters.get("integrity_checked", 0), extra.integrity_checked),
            lost=max(counters.get("integrity_lost", 0), extra.integrity_lost),
            corrupted=max(counters.get("integrity_corrupted", 0), extra.integrity_corrupted),
        ),
        events=timeline_events(events, samples.pid_changes),
        gaps=_longest_gaps(samples.gaps),
        gaps_total=len(samples.gaps),
        gaps_total_s=sum(b - a for a, b in samples.gaps),
        alerts=segments,
        alerts_fired=fired,
        stats_interval_s=spec.sampling.stats_interval_s,
        warmup_s=windows.warmup_s,
    )
