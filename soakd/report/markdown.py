"""report.md: the plan's "Soak Test Report" template (Task 5.5), filled in.

Sections in the template's order (Summary, Results, Memory Analysis,
Conclusion), with the acceptance criteria, the per-operation table, events,
alerts, the Go/No-Go checklist section and the weekly progress line between
Memory Analysis and Conclusion.
"""

from __future__ import annotations

from collections.abc import Sequence

from soakd.report import fmt
from soakd.report.model import Criterion, OpReport, ReportModel
from soakd.report.plan import GO_NO_GO_SECTION, go_no_go, progress_line

#: Events listed in the Markdown (all of them are in report.json).
MAX_EVENT_ROWS = 50
_PLURAL = {"store": "stores", "recall": "recalls", "spread": "spreads"}


def _c(criteria: Sequence[Criterion], key: str) -> Criterion | None:
    return next((c for c in criteria if c.key == key), None)


def _mark(c: Criterion | None) -> str:
    if c is None or not c.applicable:
        return "n/a"
    return c.verdict_text


def _summary(m: ReportModel) -> list[str]:
    rates = ", ".join(
        f"{w.rate_per_s:g} {_PLURAL.get(w.operation, w.operation)}/sec"
        for w in m.workload
        if w.rate_per_s is not None
    )
    achieved = ", ".join(f"{o.achieved_rate:.1f} {o.op}" for o in m.ops if o.op in _PLURAL)
    c = m.consolidation
    short = ""
    if m.duration_s + 1.0 < m.planned_s:
        short = f" — **shorter than the planned {fmt.span(m.planned_s)}**"
    lines = [
        "## Summary",
        f"- Duration: {fmt.span(m.duration_s)}{short} (status: {m.status})",
        f"- Workload: {rates or 'none'} (achieved per second: {achieved or 'n/a'})",
        f"- Spaces: {m.spaces} concurrent memory spaces",
    ]
    if c.configured:
        # the plan counts cycles per space ("10,080 cycles" = 7 days of 60 s)
        per_space = c.runs_observed / c.spaces_seen if c.spaces_seen else 0.0
        lines.append(
            f"- Consolidation: {per_space:,.0f} cycles per space ({c.expected_interval_s:g}s "
            f"cadence expected; {c.runs_observed:,} runs observed across {c.spaces_seen} spaces)"
        )
    ended = (
        f"ended {fmt.when(m.ended_at)}" if m.ended_at else f"last data {fmt.when(m.last_data_at)}"
    )
    lines += [
        f"- Run: `{m.run_id}` against {m.target_url}, started {fmt.when(m.started_at)}, {ended}",
        "",
    ]
    return lines


def _results(m: ReportModel, criteria: Sequence[Criterion]) -> list[str]:
    mem = m.memory
    leak = _c(criteria, "memory_leak")
    half = (mem.rss_max - mem.rss_min) / 2 if mem.rss_max is not None and mem.rss_min else None
    word = "NOT stable"
    series = mem.fit.series if mem.fit is not None else "anonymous memory"
    if leak is not None and leak.passed:
        following = mem.fit is not None and mem.fit.judged == "follows_data"
        word = (
            f"{series[:1].upper()}{series[1:]} growing with the stored data (no leak judged),"
            if following
            else f"{series[:1].upper()}{series[1:]} stable"
        )
    parts = mem.parts_last
    split = (
        f" (anonymous {fmt.bytes_h(parts.anon)}, file-backed {fmt.bytes_h(parts.file)}, "
        f"shared {fmt.bytes_h(parts.shmem)} at the end)"
        if parts is not None
        else ""
    )
    drift = _c(criteria, "p99_drift")
    drifts = ", ".join(f"{o.op} {o.drift_pct:+.1f} %" for o in m.ops if o.drift_pct is not None)
    c = m.consolidation
    success = f"{c.within_tolerance / c.intervals * 100:.1f}%" if c.intervals else "n/a"
    crashes = m.count("crash")
    bad = m.integrity.corrupted
    req_errors = sum(o.error_total for o in m.ops)
    dropped = sum(o.dropped for o in m.ops)
    cadence = (
        f"{fmt.num(c.interval_mean_s)}s ± {fmt.num(c.interval_stdev_s)}s cadence"
        if c.intervals
        else "no consolidation observed"
    )
    return [
        "## Results",
        f"- **Memory**: {word} at {fmt.bytes_h(mem.rss_mean)} RSS (±{fmt.bytes_h(half)})"
        f"{split}; peak {fmt.bytes_h(mem.rss_peak)} — {_mark(leak)}",
        f"- **Performance**: P99 latency {'stable' if drift and drift.passed else 'NOT stable'} "
        f"(<5% drift required; {drifts or 'not measurable'}) — {_mark(drift)}",
        f"- **Consolidation**: {success} of intervals within tolerance, {cadence} "
        f"— {_mark(_c(criteria, 'consolidation_cadence'))}",
        f"- **Errors**: {crashes} crashes, {bad} data corruption events, "
        f"{m.integrity.lost} lost writes ({m.integrity.checked:,} read back); "
        f"{req_errors:,} request errors, {dropped:,} dropped arrivals (no response)",
        "",
    ]


def _ops_table(ops: Sequence[OpReport]) -> list[str]:
    lines = [
        "### Operations",
        "",
        "| operation | target/s | achieved/s | requests | errors | dropped | late | p50 | p95 "
        "| p99 | p99.9 | max | P99 drift |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in ops:
        lat = o.latency
        lines.append(
            f"| {o.op} | {fmt.num(o.target_rate, 1)} | {o.achieved_rate:.2f} | {o.count:,} "
            f"| {o.error_total:,} | {o.dropped:,} | {o.late:,} | {fmt.ms(lat.p50_ms)} "
            f"| {fmt.ms(lat.p95_ms)} | {fmt.ms(lat.p99_ms)} | {fmt.ms(lat.p999_ms)} "
            f"| {fmt.ms(lat.max_ms)} | {fmt.num(o.drift_pct, 1)} % |"
        )
    errs = [
        f"{o.op}: " + ", ".join(f"{k} {n:,}" for k, n in o.failures.items())
        for o in ops
        if o.failures
    ]
    silent = ", ".join(
        f"{o.op} {o.no_response_share:.1%} ({o.dropped:,} of {o.count + o.dropped:,})"
        for o in ops
        if o.op in _PLURAL
    )
    lines += [
        "",
        "Latency is measured from each request's intended send time (no coordinated "
        "omission)." + (" Failures by class: " + "; ".join(errs) + "." if errs else ""),
        "",
        f"Arrivals that got no response (dropped because `max_in_flight` requests were "
        f"outstanding at the target; failures of class `dropped`, in no percentile above): "
        f"{silent or 'none'}.",
        "",
    ]
    return lines


def _criteria(criteria: Sequence[Criterion]) -> list[str]:
    lines = [
        "## Acceptance Criteria",
        "",
        "| | criterion | measured | threshold | detail |",
        "|---|---|---|---|---|",
    ]
    for c in criteria:
        icon = "n/a" if not c.applicable else ("✅ " if c.passed else "❌ ") + c.verdict_text
        meas = fmt.num(c.measured) + f" {c.unit}" if c.measured is not None else "n/a"
        thr = f"{c.comparison} {fmt.num(c.threshold)} {c.unit}" if c.threshold is not None else ""
        lines.append(f"| {icon} | {c.name} | {meas} | {thr} | {_cell(c.detail)} |")
    return [*lines, ""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _memory(m: ReportModel) -> list[str]:
    mem = m.memory
    lines = [
        "## Memory Analysis",
        "- Valgrind / heaptrack: not run by soakd (it watches the target from outside); "
        f"the verdict below is the {mem.fit.series if mem.fit else 'memory'} trend "
        "(anonymous memory unless the memory_leak rule chose total RSS: file-backed pages "
        "of mapped files are reclaimable page cache).",
    ]
    for label, p in (("after warm-up", mem.parts_first), ("at the end", mem.parts_last)):
        if p is not None:
            lines.append(
                f"- RSS {label}: {fmt.bytes_h(p.rss)} = anonymous {fmt.bytes_h(p.anon)} + "
                f"file-backed {fmt.bytes_h(p.file)} + shared {fmt.bytes_h(p.shmem)}; "
                f"available to the target {fmt.bytes_h(p.available)}"
            )
    fit = mem.fit
    if fit is not None:
        lines.append(
            f"- Judged: {fit.series} trend ({fit.judged}): {fit.pct_per_day:+.2f} %/day, "
            f"{fit.mb_per_h:+.3f} MB/h, "
            f"R² {fit.r2:.2f}, baseline {fmt.bytes_h(fit.baseline_bytes)} after a "
            f"{mem.warmup_s:g} s warm-up" + (f", {fit.points} points judged" if fit.points else "")
        )
        if fit.data_growing:
            lines.append(
                f"- Stored memories {fit.memories_first} -> {fit.memories_last}; marginal "
                f"{fit.series} per memory {fmt.bytes_h(fit.marginal_bytes_per_memory)} "
                f"(a leak above {fmt.bytes_h(fit.bytes_per_memory_ceiling)}: 4 x what a "
                "memory costs)"
            )
    if mem.rss_fit is not None and mem.rss_fit is not fit:
        r = mem.rss_fit
        lines.append(
            f"- Total RSS trend (not judged): {r.pct_per_day:+.2f} %/day, "
            f"{r.mb_per_h:+.3f} MB/h, R² {r.r2:.2f}"
        )
    if mem.heap_fit is not None:
        h = mem.heap_fit
        lines.append(
            f"- Heap (anonymous memory) trend: {h.pct_per_day:+.2f} %/day, "
            f"{h.mb_per_h:+.3f} MB/h, R² {h.r2:.2f}; first {fmt.bytes_h(mem.heap_first)}, "
            f"last {fmt.bytes_h(mem.heap_last)}, peak {fmt.bytes_h(mem.heap_peak)}"
        )
    lines.append(
        f"- RSS after warm-up: first {fmt.bytes_h(mem.rss_first)}, last "
        f"{fmt.bytes_h(mem.rss_last)}, min {fmt.bytes_h(mem.rss_min)}, max "
        f"{fmt.bytes_h(mem.rss_max)}; {mem.readable:,} of {mem.samples:,} samples readable; "
        f"mean CPU {fmt.num(mem.cpu_mean_pct, 1)} %"
    )
    return [*lines, ""]


def _events(m: ReportModel) -> list[str]:
    shown = [e for e in m.events if e.category != "other"][:MAX_EVENT_ROWS]
    lines = ["## Crashes, Restarts and Gaps", ""]
    if not shown and not m.gaps:
        return [*lines, "None.", ""]
    lines += ["| time | kind | message |", "|---|---|---|"]
    lines += [f"| {fmt.when(e.t)} | {e.kind} | {_cell(e.message)} |" for e in shown]
    lines += [
        f"| {fmt.when(g.start)} | sample gap | no samples for {g.seconds:.0f} s |"
        for g in m.gaps[:MAX_EVENT_ROWS]
    ]
    if m.gaps_total > len(m.gaps[:MAX_EVENT_ROWS]):
        lines += ["", f"{m.gaps_total} sample gaps in all, {m.gaps_total_s:.0f} s without samples."]
    return [*lines, ""]


def _alerts(m: ReportModel) -> list[str]:
    lines = ["## Alerts", ""]
    if not m.alerts:
        return [*lines, "No alert left the inactive state.", ""]
    lines += ["| rule | state | from | to | summary |", "|---|---|---|---|---|"]
    lines += [
        f"| {s.rule} | {s.state} | {fmt.when(s.start)} | "
        f"{fmt.when(s.end) if s.end else 'still active'} | {_cell(s.summary)} |"
        for s in m.alerts[:MAX_EVENT_ROWS]
    ]
    return [*lines, ""]


def _plan_forms(m: ReportModel, criteria: Sequence[Criterion]) -> list[str]:
    lines = ["## Go/No-Go Checklist", "", f"### {GO_NO_GO_SECTION}"]
    lines += [f"- [{'x' if i.checked else ' '}] {i.text}" for i in go_no_go(criteria)]
    dur = _c(criteria, "duration")
    done = dur is not None and dur.passed
    lines += ["", "## Weekly Progress", f"- [{'x' if done else ' '}] {progress_line(m)}", ""]
    return lines


def _conclusion(m: ReportModel, criteria: Sequence[Criterion], verdict: str) -> list[str]:
    failed = [c.name for c in criteria if c.applicable and not c.passed]
    lines = ["## Conclusion"]
    if m.status == "running":
        lines.append(
            f"⏳ Run still in progress (data up to {fmt.when(m.last_data_at)}): "
            "verdict so far below."
        )
    if verdict == "pass":
        lines.append("✅ PASS - System validated for continuous operation")
    else:
        lines.append("❌ FAIL - " + "; ".join(failed))
    return [*lines, ""]


def render(m: ReportModel, criteria: Sequence[Criterion], verdict: str, kind: str) -> str:
    """The whole report.md."""
    title = f"# Soak Test Report ({fmt.title_span(m.planned_s)})"
    if kind != "final":
        title += f" — checkpoint {kind}"
    parts = [
        [title, "", f"Generated {fmt.when(m.generated_at)} by soakd.", ""],
        _summary(m),
        _results(m, criteria),
        _ops_table(m.ops),
        _criteria(criteria),
        _memory(m),
        _events(m),
        _alerts(m),
        _plan_forms(m, criteria),
        _conclusion(m, criteria, verdict),
    ]
    return "\n".join(line for part in parts for line in part)
