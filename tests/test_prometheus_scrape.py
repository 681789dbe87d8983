"""A real Prometheus 2.42 (/usr/bin/prometheus) scrapes a running soakd exporter on 127.0.0.1.

One Prometheus serves all the checks (it takes a few seconds to start): soakd's latency and RSS
come back through PromQL, deploy/soakd-rules.yml loads and evaluates cleanly against the live
series, and every dashboard query runs without error.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from test_exporter import new_exporter, populate, result, sample
from test_grafana import exprs

from soakd.exporter import Exporter
from soakd.model import Op
from soakd.testing import async_wait_for, free_port

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PROMETHEUS = "/usr/bin/prometheus"

# One Prometheus for the module: the tests share its event loop, where the exporter serves.
pytestmark = [pytest.mark.slow, pytest.mark.external, pytest.mark.asyncio(loop_scope="module")]


@dataclass
class Running:
    exporter: Exporter
    api: str  # Prometheus's base URL
    session: aiohttp.ClientSession

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        async with self.session.get(self.api + path, params=params) as r:
            body: dict[str, Any] = await r.json()
            return body

    async def query(self, expr: str) -> dict[str, Any]:
        return await self.get("/api/v1/query", query=expr)


def write_config(tmp_path: Path, exporter_port: int) -> Path:
    """A config scraping the exporter every second, with the deploy rules beside it."""
    shutil.copy(DEPLOY / "soakd-rules.yml", tmp_path / "soakd-rules.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["soakd-rules.yml"],
        "scrape_configs": [
            {
                "job_name": "soakd",
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
            }
        ],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    tmp_path = tmp_path_factory.mktemp("prometheus")
    exporter = populate(new_exporter())
    _, exporter_port = await exporter.start("127.0.0.1:0")
    config = write_config(tmp_path, exporter_port)
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=log,
        stderr=log,
    )
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        yield Running(exporter, f"http://127.0.0.1:{port}", session)
    finally:
        await session.close()
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.wait_for(proc.wait(), 30)
        log.close()
        await exporter.stop()


Probe = Callable[[], Awaitable[list[dict[str, Any]]]]


async def eventually(probe: Probe, what: str, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Poll ``probe`` until it returns a non-empty list (bounded by ``timeout_s``)."""
    typed: Callable[[], Awaitable[list[dict[str, Any]]]] = probe
    result: list[dict[str, Any]] = await async_wait_for(typed, timeout_s, 0.25, what)
    return result


def query_probe(r: Running, expr: str) -> Probe:
    return lambda: series_of(r, expr)


async def series_of(r: Running, expr: str) -> list[dict[str, Any]]:
    """The result vector of an instant query, or [] while it is still empty or erroring."""
    try:
        body = await r.query(expr)
    except aiohttp.ClientError:
        return []  # Prometheus still starting
    result: list[dict[str, Any]] = body.get("data", {}).get("result", [])
    return result


async def test_prometheus_scrapes_soakd_latency_and_rss(running: Running) -> None:
    """PromQL through the HTTP API returns soakd's latency histogram and the target's RSS."""
    latency = await eventually(
        query_probe(running, 'soakd_response_seconds_bucket{op="store",le="+Inf"}'),
        "latency series in Prometheus",
    )
    assert latency[0]["metric"]["job"] == "soakd"
    assert float(latency[0]["value"][1]) == 2001  # 2000 ok + 1 http_500 store results
    rss = await eventually(query_probe(running, "soakd_target_resident_memory_bytes"), "RSS")
    assert float(rss[0]["value"][1]) == 1_200_000_000

    # A new reading reaches Prometheus on the next scrape: the exporter is live, not a snapshot.
    running.exporter.on_sample(sample(3.0, rss=1_300_000_000))

    async def updated() -> list[dict[str, Any]]:
        now = await series_of(running, "soakd_target_resident_memory_bytes")
        return now if now and float(now[0]["value"][1]) == 1_300_000_000 else []

    await eventually(updated, "RSS update scraped", 30.0)

    # Results arriving between scrapes give rate() something to work on: the P99 of store
    # from the histogram lands in the bucket that holds the new 5 ms results.
    for _ in range(500):
        running.exporter.on_result(result(Op.STORE, 5))
    p99 = (
        'histogram_quantile(0.99, sum by (op, le) (rate(soakd_response_seconds_bucket{op="store"}'
        "[1m])))"
    )

    async def finite_p99() -> list[dict[str, Any]]:
        now = await series_of(running, p99)
        return now if now and math.isfinite(float(now[0]["value"][1])) else []

    (store,) = await eventually(finite_p99, "a finite P99 of store", 30.0)
    assert 0.003 < float(store["value"][1]) <= 0.005


async def test_deploy_rules_evaluate_cleanly_on_live_series(running: Running) -> None:
    """Prometheus loads deploy/soakd-rules.yml and every rule evaluates with health ok."""
    await eventually(query_probe(running, "soakd_target_resident_memory_bytes"), "a scrape")

    async def evaluated_with_drift_alert() -> list[dict[str, Any]]:
        # Wait for an evaluation that saw the scraped data: the drift of space_02 (66 s
        # against 60 ± 5 s) breaches the plan, so that alert must then be active.
        body = await running.get("/api/v1/rules")
        rules = [rule for g in body["data"]["groups"] for rule in g["rules"]]
        drift = [r for r in rules if r["name"] == "SoakConsolidationDrift"]
        return rules if drift and drift[0]["alerts"] else []

    rules = await eventually(evaluated_with_drift_alert, "the drift alert evaluated", 30.0)
    assert {r["name"] for r in rules} >= {"SoakTargetMemoryLeak", "SoakLatencyDegraded"}
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    drift = next(r for r in rules if r["name"] == "SoakConsolidationDrift")
    assert [a["labels"]["space"] for a in drift["alerts"]] == ["space_02"]


async def test_every_dashboard_query_runs_on_prometheus(running: Running) -> None:
    """Each Grafana panel query (with $__rate_interval = 1m) runs without error."""
    await eventually(query_probe(running, "soakd_target_resident_memory_bytes"), "a scrape")
    for expr in exprs():
        body = await running.query(expr.replace("$__rate_interval", "1m"))
        assert body["status"] == "success", (expr, body)
