"""report.html opened in real headless Chromium: charts render, no script errors (issue 7)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from soakd.report import write_reports
from soakd.report.synthetic import Knobs, make_run
from soakd.testing import chromium

CHART_IDS = (
    "chart-memory",
    "chart-latency-store",
    "chart-latency-recall",
    "chart-latency-spread",
    "chart-consolidation",
    "chart-throughput",
    "chart-errors",
    "chart-alerts",
    "chart-restarts",
)
DEMO = Knobs(duration_s=3600.0, crashes=1, alerts=True, p99_growth_pct=25.0, leak_pct_per_day=200.0)


_chromium = chromium


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("chromium")
    store, spec = make_run(base / "state", DEMO)
    result = write_reports(store, spec, base / "out", now=DEMO.started_at + DEMO.duration_s)
    store.close()
    return result.paths[2]


@pytest.mark.external
@pytest.mark.slow
def test_charts_render_without_script_errors(report_html: Path, tmp_path: Path) -> None:
    """Chromium's rendered DOM holds every chart with data, and the script ran cleanly."""
    proc = _chromium(tmp_path / "profile", "--dump-dom", report_html.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not [c for c in console if "Uncaught" in c or "Error" in c], console
    charts = re.findall(r'<svg class="chart[^"]*" id="([^"]+)"', dom)
    assert set(CHART_IDS) <= set(charts)
    ready = re.search(r'data-charts-ready="(\d+)"', dom)
    assert ready is not None, "the page's script did not run to its end"
    assert int(ready.group(1)) == len(charts)
    for chart_id in CHART_IDS:
        body = dom.split(f'id="{chart_id}"', 1)[1].split("</svg>", 1)[0]
        assert 'class="data' in body, f"{chart_id} has no data"
    assert re.search(r'<path class="data" d="M[\d.]+,[\d.]+(L[\d.]+,[\d.]+){50,}', dom)


@pytest.mark.external
@pytest.mark.slow
def test_screenshot_is_a_drawn_page(report_html: Path, tmp_path: Path) -> None:
    """A full-page screenshot is written (what docs/report-screenshot.png is made from)."""
    png = tmp_path / "shot.png"
    proc = _chromium(
        tmp_path / "profile",
        f"--screenshot={png}",
        "--window-size=1280,2400",
        "--hide-scrollbars",
        report_html.as_uri(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 50_000  # a blank page compresses to a few kB


def test_demo_knobs_fail_what_they_break(tmp_path: Path) -> None:
    """The screenshot's demo run fails leak, drift, crash and alert criteria, as drawn."""
    store, spec = make_run(tmp_path / "state", replace(DEMO, duration_s=1800.0))
    res = write_reports(store, spec, tmp_path / "out", now=DEMO.started_at + 1800.0)
    failed = {c.key for c in res.criteria if not c.passed}
    assert {"memory_leak", "p99_drift", "crashes", "alert:performance_degradation"} <= failed
