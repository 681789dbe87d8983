"""Build grafana/dashboards/soakd.json with grafana-foundation-sdk (schemaVersion 42).

The dashboard is generated, not hand-edited, so that it is whatever the SDK's
schema types allow. Regenerate after a change with::

    .venv/bin/python grafana/build_dashboard.py

tests/test_grafana.py fails when the committed JSON differs from this script's
output, when it does not round-trip through the SDK's schema types, or when a
query names a metric that soakd's exporter does not expose.

One panel per quantity the plan monitors (memory_rss, memory_heap, cpu_percent,
disk_io, consolidation_cadence, query_latency_p99) plus the error and drop
rates, the alert timeline, run progress and soakd's own health.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import statetimeline as stl_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dash

OUT = Path(__file__).resolve().parent / "dashboards" / "soakd.json"
DATASOURCE = common.DataSourceRef(type_val="prometheus", uid="soakd-prometheus")
RATE = "$__rate_interval"
#: The window of the leak-trend fit; the same as deploy/soakd-rules.yml.
TREND_WINDOW = "6h"


class Section:
    """A row and the panels under it.

    Grafana strips panels nested inside an expanded row, so the row goes on the dashboard
    empty and its panels follow it at the top level (see build()).
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self.panels: list[Builder[dash.Panel]] = []

    def with_panel(self, panel: Builder[dash.Panel]) -> Section:
        self.panels.append(panel)
        return self


def query(expr: str, legend: str, ref: str = "A") -> prom_b.Dataquery:
    return (
        prom_b.Dataquery()
        .expr(expr)
        .legend_format(legend)
        .ref_id(ref)
        .range()
        .datasource(DATASOURCE)
    )


def timeseries(
    title: str, unit: str, description: str, *queries: prom_b.Dataquery, width: int = 12
) -> ts_b.Panel:
    panel = (
        ts_b.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(8)
        .line_width(1)
        .fill_opacity(5)
        .legend(
            common_b.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
    )
    for q in queries:
        panel = panel.with_target(q)
    return panel


def limit_line(panel: ts_b.Panel, value: float, color: str = "red") -> ts_b.Panel:
    """Draw the plan's limit as a dashed threshold line."""
    return panel.thresholds(
        dash_b.ThresholdsConfig()
        .mode(dash.ThresholdsMode.ABSOLUTE)
        .steps(
            [dash.Threshold(value=None, color="green"), dash.Threshold(value=value, color=color)]
        )
    ).thresholds_style(
        common_b.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
    )


def dashed() -> dash.DynamicConfigValue:
    """An override property: draw the series dashed (limits, bands, trends)."""
    return dash.DynamicConfigValue(
        id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
    )


def stat(title: str, unit: str, description: str, expr: str, legend: str) -> stat_b.Panel:
    return (
        stat_b.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(6)
        .height(4)
        .with_target(query(expr, legend).instant())
    )


def run_row() -> Section:
    return (
        Section("Run")
        .with_panel(
            stat(
                "Soak progress (hours)",
                "h",
                "Hours of the run done (the weekly review's 'C/168 hours complete').",
                "soakd_run_elapsed_seconds / 3600",
                "done",
            )
        )
        .with_panel(
            stat(
                "Soak progress",
                "percentunit",
                "Share of the planned duration done.",
                "soakd_run_elapsed_seconds / soakd_run_planned_seconds",
                "progress",
            )
        )
        .with_panel(
            stat(
                "Firing alerts",
                "short",
                "soakd alerts firing now.",
                'count(soakd_alert{alertstate="firing"}) or vector(0)',
                "firing",
            )
        )
        .with_panel(
            stat(
                "Target crashes + restarts",
                "short",
                "Crashes and restarts of Engram seen since soakd started.",
                "soakd_target_crashes_total + soakd_target_restarts_total",
                "crashes+restarts",
            )
        )
    )


ANON = "soakd_target_resident_anon_bytes"


def memory_row() -> Section:
    rss = "soakd_target_resident_memory_bytes"
    memory = timeseries(
        "Engram memory: RSS and heap, with the RSS trend",
        "bytes",
        f"RSS of the target and its parts: anonymous (heap, RssAnon: what can leak, the leak "
        f"rule's basis) and file-backed (RssFile: page cache of mapped files, reclaimable); "
        f"the dashed line is the least-squares RSS trend over {TREND_WINDOW} (predict_linear).",
        query(rss, "RSS", "A"),
        query("soakd_target_heap_bytes", "heap (anonymous)", "B"),
        query("soakd_target_resident_file_bytes", "file-backed (RssFile)", "D"),
        query(f"predict_linear({rss}[{TREND_WINDOW}], 0)", f"RSS trend ({TREND_WINDOW} fit)", "C"),
    ).override_by_name(f"RSS trend ({TREND_WINDOW} fit)", [dashed()])
    growth = limit_line(
        timeseries(
            "RSS growth per day (leak alert > 10 %/day)",
            "percentunit",
            "Slope as a fraction per day: of RSS (Prometheus's deriv()), of anonymous memory "
            "(what the leak alert judges) and soakd's own estimate. The dashed line is the "
            "plan's memory_leak limit.",
            query(
                f"deriv({rss}[{TREND_WINDOW}]) * 86400 / avg_over_time({rss}[{TREND_WINDOW}])",
                "Prometheus deriv()",
                "A",
            ),
            query("soakd_target_memory_growth_ratio_per_day", "soakd estimate", "B"),
            query(
                f"deriv({ANON}[{TREND_WINDOW}]) * 86400 / avg_over_time({ANON}[{TREND_WINDOW}])",
                "anonymous memory deriv() (judged)",
                "C",
            ),
        ),
        0.10,
    )
    return Section("Memory").with_panel(memory).with_panel(growth)


def resources_row() -> Section:
    cpu = timeseries(
        "Engram CPU",
        "percentunit",
        "CPU used by the target, 100 % = one core (cpu_percent in the plan).",
        query(f"rate(soakd_target_cpu_seconds_total[{RATE}])", "{{mode}}", "A"),
        query(f"sum(rate(soakd_target_cpu_seconds_total[{RATE}]))", "total", "B"),
        width=8,
    )
    disk = timeseries(
        "Engram disk I/O",
        "Bps",
        "Bytes read and written by the target at the storage layer (disk_io in the plan).",
        query(f"rate(soakd_target_io_bytes_total[{RATE}])", "{{direction}}", "A"),
        width=8,
    )
    handles = timeseries(
        "Engram fds, threads and data size",
        "short",
        "Open file descriptors and threads (steady growth is a leak too), memories stored.",
        query("soakd_target_open_fds", "open fds", "A"),
        query("soakd_target_threads", "threads", "B"),
        query("soakd_target_memories", "memories stored", "C"),
        width=8,
    )
    return Section("CPU and disk").with_panel(cpu).with_panel(disk).with_panel(handles)


def latency_row() -> Section:
    p99 = f"histogram_quantile(0.99, sum by (op, le) (rate(soakd_response_seconds_bucket[{RATE}])))"
    latency = timeseries(
        "P99 response time per operation against its baseline",
        "s",
        "P99 from the intended send (coordinated-omission free), the baseline soakd measured "
        "at the start, and the +20 % performance_degradation limit (dashed).",
        query(p99, "{{op}} P99", "A"),
        query("max by (op) (soakd_baseline_p99_seconds)", "{{op}} baseline", "B"),
        query("1.2 * max by (op) (soakd_baseline_p99_seconds)", "{{op}} limit (+20 %)", "C"),
        width=24,
    ).override_by_regexp(".* limit .*", [dashed()])
    service = timeseries(
        "P99 service time per operation",
        "s",
        "P99 from the actual send. Far below the response-time P99 means soakd queued "
        "arrivals (the target stalled or soakd fell behind).",
        query(
            "histogram_quantile(0.99, sum by (op, le) "
            f"(rate(soakd_service_seconds_bucket[{RATE}])))",
            "{{op}} P99 service",
            "A",
        ),
    )
    throughput = timeseries(
        "Achieved rate per operation",
        "reqps",
        "Finished requests per second; should sit on the plan's fixed rates.",
        query(f"sum by (op) (rate(soakd_operations_total[{RATE}]))", "{{op}}", "A"),
    )
    return Section("Latency").with_panel(latency).with_panel(service).with_panel(throughput)


def consolidation_row() -> Section:
    band = "soakd_consolidation_expected_interval_seconds"
    tol = "soakd_consolidation_tolerance_seconds"
    interval = timeseries(
        "Consolidation interval per space (60 s ± 5 s band)",
        "s",
        "Seconds between consecutive consolidation runs per space, inside the band the "
        "consolidation_failure alert allows.",
        query("soakd_consolidation_last_interval_seconds", "{{space}}", "A"),
        query(f"{band} + {tol}", "upper bound", "B"),
        query(f"{band} - {tol}", "lower bound", "C"),
    ).override_by_regexp("(upper|lower) bound", [dashed()])
    drift = limit_line(
        timeseries(
            "Consolidation drift and stalls",
            "s",
            "Latest interval minus the expected one (alert beyond ±5 s); stalls: no run seen "
            "for too long.",
            query("abs(soakd_consolidation_drift_seconds)", "{{space}} |drift|", "A"),
            query(f"sum(increase(soakd_consolidation_stalls_total[{RATE}]))", "stalls", "B"),
        ),
        5.0,
    )
    return Section("Consolidation").with_panel(interval).with_panel(drift)


def errors_row() -> Section:
    errors = limit_line(
        timeseries(
            "Error rate per operation",
            "percentunit",
            "Share of requests that did not succeed (the plan expects zero).",
            query(
                f'sum by (op) (rate(soakd_operations_total{{outcome!="ok"}}[{RATE}])) '
                f"/ sum by (op) (rate(soakd_operations_total[{RATE}]))",
                "{{op}}",
                "A",
            ),
            width=8,
        ),
        0.01,
    )
    by_outcome = timeseries(
        "Errors by outcome",
        "reqps",
        "Failed requests per second by operation and outcome (http_<status>, timeout, ...).",
        query(
            f'sum by (op, outcome) (rate(soakd_operations_total{{outcome!="ok"}}[{RATE}]))',
            "{{op}} {{outcome}}",
            "A",
        ),
        width=8,
    )
    drops = timeseries(
        "Dropped and late arrivals",
        "reqps",
        "Arrivals dropped because max_in_flight requests were outstanding at the target (the "
        "target is not keeping up: target_overloaded) or sent late because soakd's loop was "
        "behind (soakd_saturated): non-zero means the offered load was below the plan.",
        query(f"sum by (op) (rate(soakd_dropped_arrivals_total[{RATE}]))", "{{op}} dropped", "A"),
        query(f"sum by (op) (rate(soakd_late_arrivals_total[{RATE}]))", "{{op}} late", "B"),
        width=8,
    )
    return Section("Errors and drops").with_panel(errors).with_panel(by_outcome).with_panel(drops)


def alerts_row() -> Section:
    states = (
        stl_b.Panel()
        .title("Alert timeline")
        .description("soakd's alerts over time: pending (amber) and firing (red).")
        .datasource(DATASOURCE)
        .span(24)
        .height(8)
        .with_target(
            query(
                'max by (alertname) (soakd_alert{alertstate="firing"}) * 2 '
                'or max by (alertname) (soakd_alert{alertstate="pending"})',
                "{{alertname}}",
                "A",
            )
        )
        .mappings(
            [
                dash.ValueMap(
                    options={
                        "1": dash.ValueMappingResult(text="pending", color="orange", index=0),
                        "2": dash.ValueMappingResult(text="firing", color="red", index=1),
                    }
                )
            ]
        )
    )
    return Section("Alerts").with_panel(states)


def self_row() -> Section:
    health = timeseries(
        "soakd itself: event-loop lag and CPU",
        "s",
        "How late soakd's event loop runs timers, and soakd's CPU (cores). A busy soakd "
        "understates the target's latency.",
        query("soakd_event_loop_lag_seconds", "event-loop lag", "A"),
        query(f"rate(soakd_self_cpu_seconds_total[{RATE}])", "CPU (cores)", "B"),
    )
    memory = timeseries(
        "soakd itself: memory",
        "bytes",
        "soakd's own RSS: bounded by design (HDR histograms, bounded queues).",
        query("soakd_self_resident_memory_bytes", "RSS", "A"),
    )
    return Section("soakd").with_panel(health).with_panel(memory)


def build() -> dash.Dashboard:
    board = (
        dash_b.Dashboard("soakd: Engram soak test")
        .uid("soakd-engram-soak")
        .description(
            "The 7-day Engram soak run by soakd: memory and leak trend, CPU, disk, latency "
            "against baseline, consolidation cadence, errors, drops and alerts."
        )
        .tags(["soakd", "engram", "soak"])
        .timezone("utc")
        .time("now-24h", "now")
        .refresh("1m")
        .readonly()
        .tooltip(dash.DashboardCursorSync.CROSSHAIR)
    )
    sections = (
        run_row(),
        memory_row(),
        resources_row(),
        latency_row(),
        consolidation_row(),
        errors_row(),
        alerts_row(),
        self_row(),
    )
    for section in sections:
        board = board.with_row(dash_b.Row(section.title))
        for panel in section.panels:
            board = board.with_panel(panel)
    built = board.build()
    # Stable panel ids (Grafana would invent them; links and alert annotations use them).
    for number, item in enumerate(built.panels or [], start=1):
        item.id_val = number
    return built


def render() -> str:
    """The dashboard as the JSON text committed in grafana/dashboards/soakd.json."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main() -> int:
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
