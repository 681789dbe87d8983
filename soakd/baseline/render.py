"""single_node_baselines.md and distributed_targets.md, from a Baseline alone.

The layout is the plan's (Prerequisite 4, Task 4.3 and 4.4 examples): a
"## Single-Node Baselines (date)" heading, "### Hardware", then per operation
"### Store Operation" with P50 / P95 / P99 / Throughput lines -- one such
section per operation and workload, the workload named after a dash. Figures
the example has no room for (P99.9, the P99's 95 % bounds, request counts, the
search's bracket, RSS, CPU) follow in tables. Pure functions of the baseline:
the same JSON always renders the same bytes.
"""

from __future__ import annotations

from soakd.baseline.model import Baseline, Latency, OpBaseline, Workload, WorkloadKind

#: The plan's multipliers (Task 4.4): intra-partition, cross-partition, throughput.
INTRA_PARTITION = {"store": 2.0, "recall": 2.0, "spread": 2.0}
CROSS_PARTITION = {"store": 3.0, "recall": 3.0, "spread": 5.0}
NODES = 5
MAX_LINEAR_NODES = 16


def ms(value: float) -> str:
    """Three significant figures, as the plan writes them ("8.1ms", "34.7ms", "0.412ms")."""
    if value >= 100:
        return f"{value:,.0f}ms"
    return f"{value:.3g}ms"


def ops_per_s(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.3g}"


def _dataset(w: Workload) -> str:
    spaces = f"{len(w.spaces)} space" + ("" if len(w.spaces) == 1 else "s")
    return f"{w.memories:,} memories, {spaces}"


def workload_title(w: Workload) -> str:
    if w.kind is WorkloadKind.MIXED:
        names = "/".join(op for op, _ in w.shares)
        pct = "/".join(f"{round(100 * s)}" for _, s in w.shares)
        return f"mixed {names} {pct} on {w.dataset} ({_dataset(w)})"
    return f"{w.name} ({_dataset(w)})"


def _op_heading(op: OpBaseline, hops: int) -> str:
    title = f"{op.op.capitalize()} Operation"
    return f"{title} ({hops} hops)" if op.op == "spread" else title


def _hardware(b: Baseline) -> list[str]:
    m = b.machine
    cores = f"{m.cpu_threads}T"
    if m.cpu_cores_physical:
        cores = f"{m.cpu_cores_physical}C/{cores}"
    ram = f"{m.memory_bytes / 2**30:.0f}GB" if m.memory_bytes else "unknown"
    load = " ".join(f"{x:.2f}" for x in m.loadavg_start)
    return [
        "### Hardware",
        f"- CPU: {m.cpu_model} ({cores})",
        f"- RAM: {ram}",
        f"- Storage: {m.storage} ({m.filesystem})",
        f"- Kernel: {m.kernel}",
        f"- Load average when the run began: {load} (host {m.hostname})",
    ]


def _op_lines(w: Workload, op: OpBaseline) -> list[str]:
    lat = op.latency
    thr = op.throughput
    lines = []
    if lat is None:
        lines += ["- P50: n/a", "- P95: n/a", "- P99: n/a"]
    else:
        lines += [
            f"- P{q}: {ms(v)}" for q, v in ((50, lat.p50_ms), (95, lat.p95_ms), (99, lat.p99_ms))
        ]
    tail = ""
    if thr.per_s <= 0:
        tail = f" (no rate sustained: {thr.note})" if thr.note else " (no rate sustained)"
    elif w.kind is WorkloadKind.MIXED and w.total is not None:
        tail = f" ({thr.note}: {ops_per_s(w.total.per_s)} ops/sec)"
    lines.append(f"- Throughput: {ops_per_s(thr.per_s)} ops/sec{tail}")
    return lines


def _p99_cell(lat: Latency | None) -> str:
    if lat is None:
        return "n/a"
    bounds = f"[{lat.p99_lo_ms:.3g}, {lat.p99_hi_ms:.3g}]"
    return f"{lat.p99_ms:.3g} {bounds}" + ("" if lat.p99_bounded else " (unbounded)")


def _bracket(w: Workload, op: OpBaseline) -> str:
    thr = op.throughput
    hi = "none up to the maximum" if thr.hi_per_s is None else f"{thr.hi_per_s:,.4g}"
    steps = len(w.total.steps) if w.kind is WorkloadKind.MIXED and w.total else len(thr.steps)
    return f"{thr.per_s:,.4g} | {hi} | {steps}"


#: Baselines from this version on judged each latency run as a held step.
HELD_SINCE = 2
HELD_SENTENCE = (
    " Each latency run is judged as a step too: one that fails shows the steps found a burst"
    " rate, is tried again at half its rate, and caps the throughput (the notes below say so)."
)


def _details(b: Baseline) -> list[str]:
    lines = [
        "### Details",
        "",
        f"Latency was measured at {b.settings.latency_share:.0%} of the throughput found, timed"
        " from each request's intended send time (open model: a slow answer cannot delay the"
        " next request). P99 in brackets: its 95 % confidence bounds (order statistics, no"
        " latency model). Throughput: the highest fixed rate that passed (achieved"
        f" ≥ {b.settings.min_achieved:.0%} of offered, nothing dropped or failed, P99 under"
        f" {b.settings.p99_ceiling_ms:g} ms) and the lowest that failed."
        + (HELD_SENTENCE if b.version >= HELD_SINCE else ""),
        "",
        "| workload | operation | P50 ms | P95 ms | P99 ms [95 % bounds] | P99.9 ms | requests"
        " | at rate/s | throughput/s | first failing rate/s | search steps |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in b.workloads:
        for op in w.ops:
            lat = op.latency
            if lat is None:
                cells = "n/a | n/a | n/a | n/a | 0 | n/a"
            else:
                cells = (
                    f"{lat.p50_ms:.3g} | {lat.p95_ms:.3g} | {_p99_cell(lat)} | {lat.p999_ms:.3g}"
                    f" | {lat.requests:,} | {lat.rate_per_s:,.4g}"
                )
            lines.append(f"| {w.name} | {op.op} | {cells} | {_bracket(w, op)} |")
    lines += [
        "",
        "### Resources",
        "",
        "| workload | memories asked | held before | stored by this run | load s | held after"
        " | target RSS | of it anonymous | target CPU (cores) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w in b.workloads:
        r = w.resources
        rss = f"{r.rss_bytes / 2**20:,.0f} MiB" if r.rss_bytes is not None else "n/a"
        anon = f"{r.rss_anon_bytes / 2**20:,.0f} MiB" if r.rss_anon_bytes is not None else "n/a"
        cpu = f"{r.cpu_cores:.2f}" if r.cpu_cores is not None else "n/a"
        before = f"{w.load.memories_before:,}" if w.load.memories_before is not None else "n/a"
        after = f"{w.memories_after:,}" if w.memories_after is not None else "n/a"
        lines.append(
            f"| {w.name} | {w.memories:,} | {before} | {w.load.stored:,} | {w.load.seconds:.1f}"
            f" | {after} | {rss} | {anon} | {cpu} |"
        )
    notes = [f"- {w.name}: {w.resources.note}" for w in b.workloads if w.resources.note]
    notes += [f"- {w.name}: {w.total.note}" for w in b.workloads if w.total and w.total.note]
    notes += [
        f"- {w.name}/{op.op}: {op.throughput.note}"
        for w in b.workloads
        if w.kind is WorkloadKind.SIZE
        for op in w.ops
        if any(not s.passed for s in op.throughput.held)
    ]
    if notes:
        lines += ["", *notes]
    return lines


def render_single_node(b: Baseline) -> str:
    s = b.settings
    lines = [
        f"## Single-Node Baselines ({b.date()})",
        "",
        f"Measured by `soakd baseline` at {b.created_at} against the target ({b.target}) at"
        f" {b.target_url}; dataset scale {s.scale:g} of the plan's sizes.",
        "",
        *_hardware(b),
    ]
    for w in b.workloads:
        for op in w.ops:
            lines += ["", f"### {_op_heading(op, s.spread_hops)} — {workload_title(w)}"]
            lines += _op_lines(w, op)
    lines += ["", *_details(b)]
    return "\n".join(lines) + "\n"


def _limit(p99_ms: float, factor: float) -> str:
    return ms(p99_ms * factor)


def render_distributed(b: Baseline) -> str:
    lines = [
        "## Distributed Performance Targets",
        "",
        f"Derived from the single-node baselines of {b.date()} (`baseline.json`, {b.target})"
        " with the plan's multipliers: intra-partition < 2× the single-node P99, cross-partition"
        " < 3× (spread < 5×), 5 nodes = 5× the single-node throughput.",
    ]
    for w in b.workloads:
        timed = [op for op in w.ops if op.latency is not None]
        title = workload_title(w)
        lines += ["", f"### Intra-Partition (same node) — {title}"]
        for op in w.ops:
            f = INTRA_PARTITION.get(op.op, 2.0)
            lines.append(_target_line(op, f))
        lines += ["", f"### Cross-Partition (network hop) — {title}"]
        for op in w.ops:
            f = CROSS_PARTITION.get(op.op, 3.0)
            lines.append(_target_line(op, f))
        lines += ["", f"### Throughput — {title}"]
        if w.kind is WorkloadKind.MIXED and w.total is not None:
            figure = f"{ops_per_s(NODES * w.total.per_s)} ops/sec mixed"
        else:
            figure = ", ".join(
                f"{op.op.capitalize()} {ops_per_s(NODES * op.throughput.per_s)}" for op in w.ops
            )
            figure += " ops/sec"
        lines.append(f"- {NODES} nodes: {NODES}x baseline ({figure})")
        lines.append(f"- Linear scaling to {MAX_LINEAR_NODES} nodes")
        if not timed:
            lines.append("- (no operation sustained a rate: no latency targets derived)")
    return "\n".join(lines) + "\n"


def _target_line(op: OpBaseline, factor: float) -> str:
    name = op.op.capitalize()
    if op.latency is None:
        return f"- {name}: <{factor:g}x baseline (no baseline: no rate sustained)"
    return f"- {name}: <{factor:g}x baseline (P99 <{_limit(op.latency.p99_ms, factor)})"
