"""Tests of soakd.exporter: the exposition's names and values, promtool's lint, and the HTTP side.

``populate()`` fills every series with realistic data; tests/test_grafana.py,
tests/test_deploy.py and tests/test_prometheus_scrape.py import it to check that
the dashboard and the alert rules only query what the exporter really exposes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from soakd.exporter import LATENCY_BUCKETS_S, Exporter, parse_listen
from soakd.model import (
    Alert,
    AlertState,
    ConsolidationRun,
    Op,
    OpResult,
    Outcome,
    Sample,
)
from soakd.statusview import fetch_status, read_status_file, render_status, status_line

MS = 1_000_000  # nanoseconds per millisecond
T0 = 1_764_000_000.0  # a wall time in the run


def result(op: Op, response_ms: float, service_ms: float | None = None, **kw: object) -> OpResult:
    """An OpResult whose response and service times are as given (ms)."""
    service = response_ms if service_ms is None else service_ms
    done = 10_000 * MS
    return OpResult(
        op=op,
        space="space_01",
        intended_ns=done - int(response_ms * MS),
        sent_ns=done - int(service * MS),
        done_ns=done,
        outcome=kw.pop("outcome", Outcome.OK),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def sample(t: float, pid: int = 4242, rss: int = 1_200_000_000, **kw: object) -> Sample:
    """A full reading of the target and of soakd; override any field."""
    fields: dict[str, object] = {
        "rss_bytes": rss,
        "heap_bytes": rss * 3 // 4,
        "uss_bytes": rss - 50_000_000,
        "cpu_user_s": 100.0 + t / 10,
        "cpu_system_s": 20.0 + t / 50,
        "read_bytes": 10_000_000 + int(t) * 1000,
        "write_bytes": 50_000_000 + int(t) * 4000,
        "num_fds": 87,
        "num_threads": 24,
        "data_dir_bytes": 3_000_000_000,
        "memories": 1_500_000,
        "self_rss_bytes": 90_000_000,
        "self_cpu_s": 30.0 + t / 20,
        "loop_lag_s": 0.0008,
        "rss_anon_bytes": rss * 3 // 4,
        "rss_file_bytes": rss // 4,
        "rss_shmem_bytes": 0,
        "mem_available_bytes": 20_000_000_000,
    }
    fields.update(kw)
    return Sample(t=T0 + t, pid=pid, **fields)  # type: ignore[arg-type]


def populate(e: Exporter) -> Exporter:
    """Feed ``e`` a realistic slice of a run so that every family has samples."""
    for i in range(2000):
        e.on_result(result(Op.STORE, 2 + (i % 50) / 10, 1.5 + (i % 50) / 10))
        if i % 2 == 0:
            e.on_result(result(Op.RECALL, 8 + (i % 40) / 5))
        if i % 5 == 0:
            e.on_result(result(Op.SPREAD, 30 + (i % 30)))
        if i % 100 == 0:
            e.on_result(result(Op.READBACK, 1.2))
    e.on_result(result(Op.STORE, 120, outcome=Outcome.HTTP_ERROR, status=500))
    e.on_result(result(Op.RECALL, 30_000, outcome=Outcome.TIMEOUT))
    e.on_result(result(Op.SPREAD, 3, outcome=Outcome.CONNECTION))
    e.on_dropped(Op.STORE)
    e.on_late(Op.RECALL)
    for t in (0.0, 1.0, 2.0):
        e.on_sample(sample(t))
    runs = [("space_01", 60.3), ("space_02", 66.0)]
    for space, interval in runs:
        e.on_consolidation_run(
            ConsolidationRun(space, T0, "2026-11-24T16:00:00Z", T0 - 1, interval), 60.0, 5.0
        )
    e.on_consolidation_stall("space_03")
    e.on_target_restart()
    e.on_target_crash()
    e.set_alerts(
        [
            Alert("memory_leak", {}, AlertState.FIRING, T0, 12.5, "RSS +12.5 %/day"),
            Alert(
                "performance_degradation",
                {"op": "recall"},
                AlertState.PENDING,
                T0,
                0.25,
                "P99 +25 %",
            ),
            Alert("consolidation_failure", {"space": "space_01"}, AlertState.RESOLVED, T0, 0, ""),
        ]
    )
    e.set_progress(36 * 3600.0, 168 * 3600.0, "running")
    for op, p99 in ((Op.STORE, 0.006), (Op.RECALL, 0.015), (Op.SPREAD, 0.05)):
        e.set_baseline_p99(op, p99)
    e.set_leak_trend(12.5, 1736.0)
    return e


def new_exporter() -> Exporter:
    return Exporter(
        run_id="20261124-soak-7d",
        target="http://127.0.0.1:7432",
        status=lambda: {"run_id": "20261124-soak-7d", "hours_done": 36.0},
    )


def promtool_check_metrics(text: bytes) -> subprocess.CompletedProcess[bytes]:
    """Run `promtool check metrics` on an exposition (it reads stdin)."""
    return subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60, check=False
    )


def samples_of(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse an exposition into {(sample name, labels): value}."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: bytes, name: str, **labels: str) -> float:
    return samples_of(text)[(name, frozenset(labels.items()))]


def test_every_family_has_samples_when_populated() -> None:
    """A populated exporter exposes at least one sample in every family (so lint sees them all)."""
    text = populate(new_exporter()).exposition()
    empty = [f.name for f in text_string_to_metric_families(text.decode()) if not f.samples]
    assert empty == []


async def test_promtool_check_metrics_is_silent_on_a_live_exposition() -> None:
    """`promtool check metrics` prints nothing and exits 0 on what /metrics serves."""
    e = populate(new_exporter())
    host, port = await e.start("127.0.0.1:0")
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            body = await r.read()
    finally:
        await e.stop()
    assert b"soakd_response_seconds_bucket" in body
    proc = await asyncio.to_thread(promtool_check_metrics, body)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, b"")


def test_promtool_check_metrics_is_silent_before_any_data() -> None:
    """The exposition at start-up (nothing measured yet) lints clean too."""
    proc = promtool_check_metrics(new_exporter().exposition())
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, b"")


def test_promtool_lint_does_fail_on_a_bad_exposition() -> None:
    """The lint harness is not vacuous: promtool rejects a non-base unit and a _total gauge."""
    name = b"x_milliseconds_total"
    bad = b"# HELP %s t\n# TYPE %s gauge\n%s 1\n" % (name, name, name)
    proc = promtool_check_metrics(bad)
    assert proc.returncode != 0 and proc.stdout + proc.stderr


def test_no_created_series_and_base_units() -> None:
    """No *_created series; every latency is in seconds and every size in bytes."""
    text = populate(new_exporter()).exposition().decode()
    assert "_created" not in text
    for banned in ("_milliseconds", "_ms", "_percent", "_kb", "_mb"):
        assert banned not in text


def test_operations_are_counted_by_op_and_outcome() -> None:
    """Outcomes are keyed like the report's errors{}: ok, http_<status>, timeout, ..."""
    e = new_exporter()
    for _ in range(3):
        e.on_result(result(Op.STORE, 5))
    e.on_result(result(Op.STORE, 5, outcome=Outcome.HTTP_ERROR, status=503))
    e.on_result(result(Op.RECALL, 5, outcome=Outcome.INVALID))
    text = e.exposition()
    assert value(text, "soakd_operations_total", op="store", outcome="ok") == 3
    assert value(text, "soakd_operations_total", op="store", outcome="http_503") == 1
    assert value(text, "soakd_operations_total", op="recall", outcome="invalid_response") == 1


def test_histograms_are_in_seconds_with_buckets_from_1ms_to_60s() -> None:
    """Response and service times land in the right seconds buckets; sum is in seconds."""
    e = new_exporter()
    e.on_result(result(Op.RECALL, response_ms=12, service_ms=4))
    e.on_result(result(Op.RECALL, response_ms=90_000, service_ms=90_000))  # beyond 60 s
    text = e.exposition()
    les = [
        dict(labels)["le"]
        for (name, labels) in samples_of(text)
        if name == "soakd_response_seconds_bucket"
    ]
    assert les[0] == "0.001" and les[-2] == "60.0" and les[-1] == "+Inf"
    assert len(les) == len(LATENCY_BUCKETS_S) + 1
    assert value(text, "soakd_response_seconds_bucket", op="recall", le="0.01") == 0
    assert value(text, "soakd_response_seconds_bucket", op="recall", le="0.015") == 1
    assert value(text, "soakd_service_seconds_bucket", op="recall", le="0.005") == 1
    assert value(text, "soakd_response_seconds_bucket", op="recall", le="60.0") == 1
    assert value(text, "soakd_response_seconds_bucket", op="recall", le="+Inf") == 2
    assert value(text, "soakd_response_seconds_sum", op="recall") == pytest.approx(90.012)
    assert value(text, "soakd_response_seconds_count", op="recall") == 2


def test_a_value_on_a_bucket_bound_counts_in_that_bucket() -> None:
    """le means less-or-equal: exactly 5 ms is in the 0.005 bucket."""
    e = new_exporter()
    e.on_result(result(Op.STORE, 5))
    text = e.exposition()
    assert value(text, "soakd_response_seconds_bucket", op="store", le="0.005") == 1
    assert value(text, "soakd_response_seconds_bucket", op="store", le="0.003") == 0


def test_dropped_and_late_arrivals_are_counted_per_op() -> None:
    """on_dropped/on_late feed their own counters."""
    e = new_exporter()
    e.on_dropped(Op.STORE)
    e.on_dropped(Op.STORE)
    e.on_late(Op.SPREAD)
    text = e.exposition()
    assert value(text, "soakd_dropped_arrivals_total", op="store") == 2
    assert value(text, "soakd_late_arrivals_total", op="spread") == 1


def test_target_gauges_follow_the_latest_sample() -> None:
    """RSS, heap, fds, threads and data size come from the latest reading."""
    e = new_exporter()
    e.on_sample(sample(0.0, rss=1_000_000_000))
    e.on_sample(sample(1.0, rss=1_100_000_000, num_fds=90))
    text = e.exposition()
    assert value(text, "soakd_target_resident_memory_bytes") == 1_100_000_000
    assert value(text, "soakd_target_heap_bytes") == 825_000_000
    assert value(text, "soakd_target_open_fds") == 90
    assert value(text, "soakd_target_up") == 1


def test_rss_split_and_available_memory_are_gauges() -> None:
    """RssAnon, RssFile, RssShmem and available memory each have a gauge; unread ones none."""
    e = new_exporter()
    e.on_sample(
        Sample(
            t=T0,
            pid=42,
            rss_bytes=21 * 10**9,
            rss_anon_bytes=4 * 10**8,
            rss_file_bytes=2 * 10**10 + 6 * 10**8,
            rss_shmem_bytes=0,
            mem_available_bytes=23 * 10**9,
        )
    )
    text = e.exposition()
    assert value(text, "soakd_target_resident_anon_bytes") == 4 * 10**8
    assert value(text, "soakd_target_resident_file_bytes") == 2 * 10**10 + 6 * 10**8
    assert value(text, "soakd_target_resident_shmem_bytes") == 0
    assert value(text, "soakd_target_available_memory_bytes") == 23 * 10**9
    e.on_sample(Sample(t=T0 + 1, pid=42, rss_bytes=1))
    names = {name for name, _ in samples_of(e.exposition())}
    assert "soakd_target_resident_anon_bytes" not in names


def test_unreadable_fields_are_left_out_not_zeroed() -> None:
    """A None reading removes the series (Prometheus marks it stale) instead of exposing 0."""
    e = new_exporter()
    e.on_sample(sample(0.0))
    e.on_sample(Sample(t=T0 + 1, pid=None))
    text = e.exposition()
    names = {name for name, _ in samples_of(text)}
    assert "soakd_target_resident_memory_bytes" not in names
    assert "soakd_event_loop_lag_seconds" not in names
    assert value(text, "soakd_target_up") == 0


def test_cpu_and_io_counters_never_go_down_across_a_target_restart() -> None:
    """Cumulative CPU/IO readings become counters that count a restarted target's usage too."""
    e = new_exporter()
    e.on_sample(sample(0.0, pid=1, cpu_user_s=500.0, read_bytes=1000))  # origin: counts 0
    e.on_sample(sample(1.0, pid=1, cpu_user_s=502.0, read_bytes=1500))  # +2 s, +500 B
    e.on_sample(sample(2.0, pid=2, cpu_user_s=0.5, read_bytes=100))  # new process: +0.5, +100
    e.on_sample(sample(3.0, pid=2, cpu_user_s=1.0, read_bytes=300))  # +0.5, +200
    text = e.exposition()
    assert value(text, "soakd_target_cpu_seconds_total", mode="user") == pytest.approx(3.0)
    assert value(text, "soakd_target_io_bytes_total", direction="read") == 800


def test_self_cpu_counts_from_process_start() -> None:
    """soakd's own CPU counter starts at its lifetime value (it is as new as the exporter)."""
    e = new_exporter()
    e.on_sample(sample(0.0, self_cpu_s=4.0))
    e.on_sample(sample(1.0, self_cpu_s=4.5))
    assert value(e.exposition(), "soakd_self_cpu_seconds_total") == pytest.approx(4.5)


def test_consolidation_series() -> None:
    """Runs, last run time, last interval, signed drift, expected interval and tolerance."""
    e = new_exporter()
    first = ConsolidationRun("space_01", T0, "x", T0 - 2, None)
    e.on_consolidation_run(first, 60.0)
    e.on_consolidation_run(ConsolidationRun("space_01", T0 + 58, "y", T0 + 56, 58.0), 60.0)
    e.on_consolidation_stall("space_02")
    text = e.exposition()
    assert value(text, "soakd_consolidation_runs_total", space="space_01") == 2
    assert value(text, "soakd_consolidation_last_run_timestamp_seconds", space="space_01") == (
        T0 + 56
    )
    assert value(text, "soakd_consolidation_last_interval_seconds", space="space_01") == 58.0
    assert value(text, "soakd_consolidation_drift_seconds", space="space_01") == -2.0
    assert value(text, "soakd_consolidation_stalls_total", space="space_02") == 1
    assert value(text, "soakd_consolidation_expected_interval_seconds") == 60.0
    assert value(text, "soakd_consolidation_tolerance_seconds") == 5.0


def test_alerts_are_exposed_like_prometheus_alerts() -> None:
    """Pending and firing alerts appear with alertname/alertstate/severity; others do not."""
    e = new_exporter()
    e.set_alerts(
        [
            Alert("memory_leak", {"1-bad.name": "x"}, AlertState.FIRING, T0, 1.0, "s"),
            Alert("error_rate", {"op": "store"}, AlertState.PENDING, T0, 1.0, "s", "ticket"),
            Alert("crash", {}, AlertState.RESOLVED, T0, None, "s"),
            Alert("integrity", {}, AlertState.INACTIVE, T0, None, "s"),
        ]
    )
    alerts = {labels for name, labels in samples_of(e.exposition()) if name == "soakd_alert"}
    assert alerts == {
        frozenset(
            {
                ("alertname", "memory_leak"),
                ("alertstate", "firing"),
                ("severity", "page"),
                ("_1_bad_name", "x"),
            }
        ),
        frozenset(
            {
                ("alertname", "error_rate"),
                ("alertstate", "pending"),
                ("severity", "ticket"),
                ("op", "store"),
            }
        ),
    }
    e.set_alerts([])
    assert not any(name == "soakd_alert" for name, _ in samples_of(e.exposition()))


def test_run_progress_and_info() -> None:
    """Elapsed/planned seconds and one soakd_run_info series carrying the current status."""
    e = new_exporter()
    e.set_progress(3600.0, 604_800.0, "running")
    e.set_progress(604_800.0, 604_800.0, "completed")
    text = e.exposition()
    assert value(text, "soakd_run_elapsed_seconds") == 604_800.0
    assert value(text, "soakd_run_planned_seconds") == 604_800.0
    infos = [dict(lab) for name, lab in samples_of(text) if name == "soakd_run_info"]
    assert infos == [
        {"run_id": "20261124-soak-7d", "target": "http://127.0.0.1:7432", "status": "completed"}
    ]


def test_baseline_and_leak_trend() -> None:
    """The baseline P99 per op and the leak trend (ratio per day and bytes per second)."""
    e = new_exporter()
    e.set_baseline_p99(Op.RECALL, 0.015)
    e.set_leak_trend(12.5, 1736.0)
    text = e.exposition()
    assert value(text, "soakd_baseline_p99_seconds", op="recall") == 0.015
    assert value(text, "soakd_target_memory_growth_ratio_per_day") == pytest.approx(0.125)
    assert value(text, "soakd_target_memory_growth_bytes_per_second") == 1736.0
    e.set_leak_trend(None, None)
    names = {name for name, _ in samples_of(e.exposition())}
    assert "soakd_target_memory_growth_ratio_per_day" not in names


def test_restarts_and_crashes_are_counters() -> None:
    """on_target_restart/on_target_crash count up."""
    e = new_exporter()
    e.on_target_restart()
    e.on_target_restart()
    e.on_target_crash()
    text = e.exposition()
    assert value(text, "soakd_target_restarts_total") == 2
    assert value(text, "soakd_target_crashes_total") == 1


async def test_healthz_and_status_over_http() -> None:
    """/healthz answers ok; /status serves status() as JSON; unknown paths are 404."""
    e = new_exporter()
    host, port = await e.start("127.0.0.1:0")
    try:
        base = f"http://{host}:{port}"
        async with aiohttp.ClientSession() as s:
            async with s.get(base + "/healthz") as r:
                assert (r.status, await r.text()) == (200, "ok\n")
            async with s.get(base + "/status") as r:
                assert r.status == 200
                assert await r.json() == {"run_id": "20261124-soak-7d", "hours_done": 36.0}
            async with s.get(base + "/nope") as r:
                assert r.status == 404
    finally:
        await e.stop()
        await e.stop()  # twice is fine


async def test_a_failing_status_callable_gives_500_not_a_dead_exporter() -> None:
    """A bug in status() answers 500 with the error; /metrics keeps working."""

    def broken() -> dict[str, object]:
        raise RuntimeError("boom")

    e = Exporter(run_id="r", target="t", status=broken)
    host, port = await e.start("127.0.0.1:0")
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://{host}:{port}/status") as r:
                assert r.status == 500
                assert "boom" in (await r.json())["error"]
            async with s.get(f"http://{host}:{port}/metrics") as r:
                assert r.status == 200
    finally:
        await e.stop()


async def test_binding_a_taken_port_raises_oserror() -> None:
    """A port in use fails start() with OSError (the daemon maps it to exit 3)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        e = new_exporter()
        with pytest.raises(OSError):
            await e.start(f"127.0.0.1:{port}")
        await e.stop()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:80", ("localhost", 80)),
        (":9464", ("127.0.0.1", 9464)),
    ],
)
def test_parse_listen_accepts_host_port(text: str, expected: tuple[str, int]) -> None:
    """HOST:PORT, bracketed IPv6, and an empty host meaning loopback."""
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9464", "host:", "host:port", "host:70000"])
def test_parse_listen_rejects_garbage(text: str) -> None:
    """Anything that is not HOST:PORT with a valid port is a ValueError."""
    with pytest.raises(ValueError, match=r"listen|port"):
        parse_listen(text)


def test_promtool_is_installed() -> None:
    """The lint tests need promtool on PATH (Debian package `prometheus`)."""
    assert shutil.which("promtool")


# -- soakd status: the weekly-review view of /status ----------------------------------------------

STATUS = {
    "run_id": "20261124-soak-7d",
    "status": "running",
    "started_at": 1_764_000_000.0,
    "elapsed_s": 131_400.0,
    "planned_s": 604_800.0,
    "hours_done": 36.5,
    "hours_planned": 168,
    "verdict_so_far": "fail",
    "firing_alerts": [
        {
            "alertname": "memory_leak",
            "severity": "page",
            "summary": "RSS grows 12.5 %/day (limit 10 %)",
            "since": 1_764_090_000.0,
        }
    ],
    "operations": {
        "store": {
            "target_rate": 100.0,
            "achieved_rate": 99.98,
            "count": 13_140_000,
            "errors": 2,
            "dropped": 0,
            "p99_ms": 6.25,
        },
        "recall": {
            "target_rate": 50.0,
            "achieved_rate": 50.0,
            "count": 6_570_000,
            "errors": 0,
            "dropped": 0,
            "p99_ms": 14.5,
        },
    },
    "target": {"pid": 4242, "rss_bytes": 1_288_490_189, "restarts": 0},
    "consolidation": {
        "runs_observed": 21_900,
        "last_interval_s": 60.3,
        "max_drift_s": 1.4,
        "stalls": 0,
    },
}


def test_status_view_starts_with_the_plans_progress_line() -> None:
    """The first line is the weekly template's 'Soak test: C/168 hours complete'."""
    text = render_status(STATUS)
    assert text.splitlines()[0] == "Soak test: 36.5/168 hours complete (21.7 %)"


def test_status_view_shows_verdict_alerts_rates_and_p99() -> None:
    """Verdict so far, firing alerts, and rate and P99 per operation are all on the page."""
    text = render_status(STATUS)
    assert "Verdict so far: FAIL" in text
    assert "Run:            20261124-soak-7d (running), started 2025-11-24 16:00 UTC" in text
    assert "Firing alerts (1):" in text
    assert "[page] memory_leak  since 2025-11-25 17:00 UTC  RSS grows 12.5 %/day" in text
    store = next(line for line in text.splitlines() if line.startswith("store "))
    assert store.split() == ["store", "100.0", "100.0", "13140000", "2", "0", "6.25"]
    assert "RSS 1.20 GiB" in text and "max drift 1.4 s" in text


def test_status_line_for_systemd() -> None:
    """The STATUS= text is one line with hours, verdict and firing alerts."""
    assert status_line(STATUS) == ("36.5/168 hours complete (21.7 %), verdict fail, 1 alert firing")
    assert status_line({}) == "?/? hours complete, verdict pending, 0 alerts firing"


def test_status_view_survives_missing_and_odd_keys() -> None:
    """A sparse or malformed mapping renders with '?' instead of raising."""
    text = render_status({"elapsed_s": 7200, "planned_s": 604_800, "operations": {"store": 3}})
    assert text.splitlines()[0] == "Soak test: 2/168 hours complete (1.2 %)"
    assert "Firing alerts: none" in text
    assert "Verdict so far: PENDING" in text
    assert render_status({}).splitlines()[0] == "Soak test: ?/? hours complete"


async def test_soakd_status_url_fetches_and_renders_a_live_status() -> None:
    """fetch_status(URL) reads a running exporter's /status; the view renders it."""
    e = Exporter(run_id="r", target="t", status=lambda: STATUS)
    host, port = await e.start("127.0.0.1:0")
    try:
        fetched = await fetch_status(f"http://{host}:{port}")
    finally:
        await e.stop()
    assert fetched == STATUS
    assert render_status(fetched) == render_status(STATUS)


def test_status_file_is_read_back(tmp_path: Path) -> None:
    """read_status_file loads the same JSON from a state dir snapshot."""
    path = tmp_path / "status.json"
    path.write_text(json.dumps(STATUS))
    assert read_status_file(path) == STATUS
