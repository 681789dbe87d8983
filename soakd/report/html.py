"""report.html: one self-contained page (inline CSS, SVG and a few lines of JS).

Charts: RSS and heap with the fitted trend; P50/P99/P99.9 per operation against
the baseline; consolidation intervals inside the ±tolerance band; throughput;
errors and drops; the alert timeline; restarts, crashes and gaps. Series were
downsampled with LTTB (peaks kept) when the model was built.

The script only adds a hover read-out of the time under the cursor and marks
``<body data-charts-ready="N">`` when it ran without error, which the Chromium
test checks. The page is complete without it.
"""

from __future__ import annotations

import html
import math
import statistics
from collections.abc import Sequence

from soakd.report import charts, fmt
from soakd.report.charts import Band, Bar, Chart, HLine, Marker, Series, Shade
from soakd.report.criteria import PLAN_P99_DRIFT_PCT
from soakd.report.model import Criterion, OpReport, ReportModel
from soakd.report.plan import GO_NO_GO_SECTION, go_no_go, progress_line

COLORS = {"store": "#1f77b4", "recall": "#2ca02c", "spread": "#9467bd", "readback": "#8c564b"}
_MB = 1e6

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1140px;color:#222}
h1{font-size:24px}h2{font-size:19px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 7px;
vertical-align:top}th{background:#f4f4f4}td.num{text-align:right}
.pass{color:#137333;font-weight:600}.fail{color:#c5221f;font-weight:600}.na{color:#777}
.verdict{font-size:20px;padding:10px 14px;border-radius:6px;display:inline-block}
.verdict.pass{background:#e6f4ea}.verdict.fail{background:#fce8e6}
svg.chart{width:100%;height:auto;background:#fff;margin:6px 0 14px}
.plot{fill:#fafafa;stroke:#bbb}.grid{stroke:#e6e6e6}.tick{font-size:11px;fill:#555}
.axis{font-size:12px;fill:#333}.title{font-size:14px;font-weight:600;fill:#222}
.legend{font-size:12px;fill:#333}.band{opacity:.25}.shade{opacity:.35}.empty{fill:#999}
#tip{position:fixed;pointer-events:none;background:#222;color:#fff;font-size:12px;
padding:2px 6px;border-radius:3px;display:none}
"""

_JS = """
(function(){
  var tip=document.getElementById('tip');
  var charts=document.querySelectorAll('svg.chart');
  var ready=0;
  charts.forEach(function(svg){
    if(svg.querySelector('.data,.empty')) ready++;
    svg.addEventListener('mousemove',function(ev){
      var r=svg.getBoundingClientRect(), vb=svg.viewBox.baseVal;
      var px=(ev.clientX-r.left)*vb.width/r.width;
      var left=+svg.dataset.left, w=+svg.dataset.width, x0=+svg.dataset.x0, x1=+svg.dataset.x1;
      if(px<left||px>left+w){tip.style.display='none';return;}
      var t=x0+(px-left)/w*(x1-x0);
      tip.textContent='+'+((t-x0)/3600).toFixed(2)+' h  '+new Date(t*1000).toISOString();
      tip.style.left=(ev.clientX+12)+'px'; tip.style.top=(ev.clientY+12)+'px';
      tip.style.display='block';
    });
    svg.addEventListener('mouseleave',function(){tip.style.display='none';});
  });
  document.body.setAttribute('data-charts-ready', String(ready));
})();
"""


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _markers(m: ReportModel) -> tuple[list[Marker], list[Shade]]:
    marks = [
        Marker(e.t, "#c5221f" if e.category == "crash" else "#e8710a", f"{e.kind}: {e.message}")
        for e in m.events
        if e.category in ("crash", "restart")
    ]
    shades = [Shade(g.start, g.end, "#bbbbbb", f"no samples for {g.seconds:.0f} s") for g in m.gaps]
    return marks, shades


def _trend(m: ReportModel) -> Series | None:
    fit = m.memory.fit
    if fit is None or fit.judged in ("insufficient", "follows_data"):
        return None
    start = fit.flat_since if fit.flat_since is not None else m.started_at + m.memory.warmup_s
    mb_h = fit.judged_mb_per_h if fit.judged_mb_per_h is not None else fit.mb_per_h
    slope = mb_h * _MB / 3600.0
    # drawn over the series it was fitted to (anonymous memory = the heap line)
    judged = m.memory.rss_series if fit.field == "rss_bytes" else m.memory.heap_series
    near = [v for t, v in judged if start <= t <= start + max(300.0, 0.05 * m.duration_s)]
    y0 = statistics.median(near) if near else fit.baseline_bytes
    if y0 is None:
        return None
    pts = [(start, y0 / _MB), (m.end, (y0 + slope * (m.end - start)) / _MB)]
    return Series(
        f"fitted trend {fit.judged_pct_per_day or fit.pct_per_day:+.2f} %/day",
        pts,
        "#d62728",
        dash="6 4",
    )


def memory_chart(m: ReportModel) -> Chart:
    marks, shades = _markers(m)
    series = [
        Series("RSS", [(t, v / _MB) for t, v in m.memory.rss_series], "#1f77b4"),
        Series("anonymous", [(t, v / _MB) for t, v in m.memory.heap_series], "#ff7f0e"),
    ]
    trend = _trend(m)
    if trend is not None:
        series.append(trend)
    return Chart(
        "chart-memory",
        "Memory: RSS and its anonymous part over time, with the fitted trend of the judged memory",
        "MB",
        m.started_at,
        m.end,
        series,
        markers=marks,
        shades=shades,
    )


def latency_chart(m: ReportModel, o: OpReport) -> Chart:
    marks, shades = _markers(m)
    pts = o.latency_series
    series = [
        Series("P50", [(p.t, p.p50) for p in pts], "#2ca02c"),
        Series("P99", [(p.t, p.p99) for p in pts], "#1f77b4"),
        Series("P99.9", [(p.t, p.p999) for p in pts], "#9467bd"),
    ]
    hlines: list[HLine] = []
    if o.baseline_p99_ms:
        hlines.append(HLine(o.baseline_p99_ms, "#555", f"baseline P99 {o.baseline_p99_ms:.3f} ms"))
        limit = o.baseline_p99_ms * (1 + PLAN_P99_DRIFT_PCT / 100)
        hlines.append(HLine(limit, "#c5221f", f"baseline P99 +{PLAN_P99_DRIFT_PCT:g} %"))
    for st, label in ((o.baseline, "baseline stretch"), (o.last, "last stretch")):
        if st is not None:
            shades.append(Shade(st.start, st.end, "#cfe2ff", label))
    return Chart(
        f"chart-latency-{o.op}",
        f"{o.op}: response time P50 / P99 / P99.9 (log scale)",
        "ms",
        m.started_at,
        m.end,
        series,
        hlines=hlines,
        markers=marks,
        shades=shades,
        y_log=True,
    )


def consolidation_chart(m: ReportModel) -> Chart:
    c = m.consolidation
    marks, shades = _markers(m)
    return Chart(
        "chart-consolidation",
        f"Consolidation intervals (all spaces) against {c.expected_interval_s:g} s ± "
        f"{c.tolerance_s:g} s",
        "s",
        m.started_at,
        m.end,
        [Series("interval", list(c.series), "#1f77b4", dots=True)],
        bands=[
            Band(
                c.expected_interval_s - c.tolerance_s,
                c.expected_interval_s + c.tolerance_s,
                "#2ca02c",
                "tolerance band",
            )
        ],
        hlines=[HLine(c.expected_interval_s, "#137333", "expected interval")],
        markers=marks,
        shades=shades,
        y_min=0.0,
    )


def throughput_chart(m: ReportModel) -> Chart:
    marks, shades = _markers(m)
    series = [
        Series(f"{o.op} ok/s", list(o.ok_rate_series), COLORS.get(o.op, "#333")) for o in m.ops
    ]
    hlines = [
        HLine(o.target_rate, COLORS.get(o.op, "#333"), f"{o.op} target {o.target_rate:g}/s")
        for o in m.ops
        if o.target_rate
    ]
    return Chart(
        "chart-throughput",
        "Throughput: successful requests per second (targets dashed)",
        "req/s",
        m.started_at,
        m.end,
        series,
        hlines=hlines,
        markers=marks,
        shades=shades,
        y_min=0.0,
    )


def errors_chart(m: ReportModel) -> Chart:
    marks, shades = _markers(m)
    series: list[Series] = []
    for o in m.ops:
        color = COLORS.get(o.op, "#333")
        series.append(Series(f"{o.op} errors/s", list(o.error_rate_series), color))
        series.append(Series(f"{o.op} dropped/s", list(o.drop_rate_series), color, dash="3 3"))
    return Chart(
        "chart-errors",
        "Errors and dropped arrivals per second",
        "per s",
        m.started_at,
        m.end,
        series,
        markers=marks,
        shades=shades,
        y_min=0.0,
    )


def alert_timeline(m: ReportModel) -> str:
    rows: list[str] = []
    bars: list[Bar] = []
    for s in m.alerts:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "alertname")
        row = s.rule + (f" {{{labels}}}" if labels else "")
        if row not in rows:
            rows.append(row)
        color = "#c5221f" if s.state == "firing" else "#f9ab00"
        end = s.end if s.end is not None else m.end
        bars.append(Bar(row, s.start, end, color, f"{s.rule} {s.state}: {s.summary}"))
    return charts.render_timeline(
        "chart-alerts",
        "Alert timeline (amber pending, red firing)",
        x0=m.started_at,
        x1=m.end,
        rows=rows or ["(no alerts)"],
        bars=bars,
    )


def restarts_timeline(m: ReportModel) -> str:
    rows = ["crashes", "restarts", "observation gaps"]
    bars: list[Bar] = []
    tick = max(m.duration_s / 400.0, 1.0)  # a visible width for an instant
    for e in m.events:
        if e.category == "crash":
            bars.append(Bar("crashes", e.t, e.t + tick, "#c5221f", e.message))
        elif e.category == "restart":
            bars.append(Bar("restarts", e.t, e.t + tick, "#e8710a", e.message))
        elif e.category == "gap":
            a, b = e.detail.get("from"), e.detail.get("to")
            if isinstance(a, int | float) and isinstance(b, int | float):
                bars.append(Bar("observation gaps", float(a), float(b), "#888", e.message))
    bars += [
        Bar("observation gaps", g.start, g.end, "#bbb", f"no samples for {g.seconds:.0f} s")
        for g in m.gaps
    ]
    return charts.render_timeline(
        "chart-restarts",
        "Crashes, restarts and gaps",
        x0=m.started_at,
        x1=m.end,
        rows=rows,
        bars=bars,
    )


def _criteria_table(criteria: Sequence[Criterion]) -> str:
    rows = []
    for c in criteria:
        cls, word = (
            ("na", "n/a")
            if not c.applicable
            else (("pass", c.verdict_text) if c.passed else ("fail", "FAIL"))
        )
        meas = (
            "n/a"
            if c.measured is None or not math.isfinite(c.measured)
            else f"{c.measured:,.2f} {c.unit}"
        )
        thr = "" if c.threshold is None else f"{c.comparison} {c.threshold:,.2f} {c.unit}"
        rows.append(
            f'<tr><td class="{cls}">{word}</td><td>{_e(c.name)}</td><td class="num">'
            f"{_e(meas)}</td><td>{_e(thr)}</td><td>{_e(c.detail)}</td></tr>"
        )
    return (
        "<table><tr><th></th><th>criterion</th><th>measured</th><th>threshold</th>"
        "<th>detail</th></tr>" + "".join(rows) + "</table>"
    )


def _ops_table(m: ReportModel) -> str:
    head = (
        "<tr><th>op</th><th>target/s</th><th>achieved/s</th><th>requests</th><th>errors</th>"
        "<th>dropped</th><th>no response</th><th>p50</th><th>p99</th><th>p99.9</th><th>max</th>"
        "<th>P99 drift</th></tr>"
    )
    rows = [
        f"<tr><td>{_e(o.op)}</td><td class=num>{fmt.num(o.target_rate, 1)}</td>"
        f"<td class=num>{o.achieved_rate:.2f}</td><td class=num>{o.count:,}</td>"
        f"<td class=num>{o.error_total:,}</td><td class=num>{o.dropped:,}</td>"
        f"<td class=num>{o.no_response_share:.1%}</td>"
        f"<td class=num>{fmt.ms(o.latency.p50_ms)}</td>"
        f"<td class=num>{fmt.ms(o.latency.p99_ms)}</td>"
        f"<td class=num>{fmt.ms(o.latency.p999_ms)}</td>"
        f"<td class=num>{fmt.ms(o.latency.max_ms)}</td>"
        f"<td class=num>{fmt.num(o.drift_pct, 1)} %</td></tr>"
        for o in m.ops
    ]
    note = (
        "<p>No response: the share of arrivals dropped because <code>max_in_flight</code> "
        "requests were outstanding at the target (failures of class <code>dropped</code>); "
        "their latency is in no percentile.</p>"
    )
    return "<table>" + head + "".join(rows) + "</table>" + note


def render(m: ReportModel, criteria: Sequence[Criterion], verdict: str, kind: str) -> str:
    """The whole report.html."""
    title = f"Soak Test Report ({fmt.title_span(m.planned_s)})" + (
        f" — checkpoint {kind}" if kind != "final" else ""
    )
    svgs = [charts.render(memory_chart(m))]
    svgs += [charts.render(latency_chart(m, o)) for o in m.ops]
    svgs += [
        charts.render(consolidation_chart(m)),
        charts.render(throughput_chart(m)),
        charts.render(errors_chart(m)),
        alert_timeline(m),
        restarts_timeline(m),
    ]
    checklist = "".join(
        f"<li>[{'x' if i.checked else ' '}] {_e(i.text)}</li>" for i in go_no_go(criteria)
    )
    failed = "; ".join(c.name for c in criteria if c.applicable and not c.passed)
    # No emoji in the page: headless browsers often lack the font (report.md keeps the plan's ✅).
    conclusion = (
        "PASS - System validated for continuous operation"
        if verdict == "pass"
        else f"FAIL - {failed}"
    )
    running = (
        f"<p>Run still in progress; data up to {_e(fmt.when(m.last_data_at))}.</p>"
        if m.status == "running"
        else ""
    )
    body = f"""<h1>{_e(title)}</h1>
<p>Run <code>{_e(m.run_id)}</code> against {_e(m.target_url)} —
started {_e(fmt.when(m.started_at))},
{_e(fmt.span(m.duration_s))} of the planned {_e(fmt.span(m.planned_s))}, status {_e(m.status)}.
Generated {_e(fmt.when(m.generated_at))}.</p>
{running}<p class="verdict {verdict}">{_e(conclusion)}</p>
<h2>Acceptance criteria</h2>{_criteria_table(criteria)}
<h2>Operations</h2>{_ops_table(m)}
<h2>Charts</h2>
{"".join(svgs)}
<h2>Go/No-Go: {_e(GO_NO_GO_SECTION)}</h2><ul>{checklist}</ul>
<h2>Weekly progress</h2><p>{_e(progress_line(m))}</p>
"""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} — {_e(m.run_id)}</title>
<style>{_CSS}</style></head>
<body data-verdict="{verdict}">
<div id="tip"></div>
{body}
<script>{_JS}</script>
</body></html>
"""
