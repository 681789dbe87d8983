"""Tests of grafana/: the dashboard against Grafana's schema (grafana-foundation-sdk 0.0.21,
schemaVersion 42), its queries against soakd's real exposition, and the provisioning files."""

from __future__ import annotations

import enum
import importlib.util
import json
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.cog.runtime import Runtime
from grafana_foundation_sdk.models.dashboard import Dashboard
from test_exporter import new_exporter, populate, samples_of

GRAFANA = Path(__file__).resolve().parent.parent / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "soakd.json"
PROMQL_KEYWORDS = {"by", "on", "and", "or", "unless", "bool", "offset", "ignoring", "without"}
PROMQL_KEYWORDS |= {"group_left", "group_right", "inf", "nan"}

register_default_plugins()

# The SDK nudges towards its v2 (Kubernetes-style) dashboard; Grafana's file provisioning
# loads the classic JSON model (schemaVersion 42) that this dashboard is.
pytestmark = pytest.mark.filterwarnings("ignore:Prefer using dashboardv2:DeprecationWarning")


def dashboard_json() -> dict[str, typing.Any]:
    data: dict[str, typing.Any] = json.loads(DASHBOARD.read_text())
    return data


def exprs() -> list[str]:
    """Every PromQL expression of every panel."""
    return [t["expr"] for p in dashboard_json()["panels"] for t in p.get("targets", [])]


def load_builder() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- a checker of values against the SDK's generated (schema) types -----------------------------


def type_errors(obj: object, path: str = "dashboard") -> list[str]:
    """Every attribute of a schema object whose value does not fit its declared type."""
    cls = type(obj)
    hints = typing.get_type_hints(cls, globalns=vars(sys.modules[cls.__module__]))
    errors: list[str] = []
    for attr, hint in hints.items():
        errors += _fits(getattr(obj, attr, None), hint, f"{path}.{attr}")
    return errors


def _shape_of(hint: typing.Any) -> type | None:
    """The runtime class a type hint's values are instances of, when there is one."""
    shape = typing.get_origin(hint) or hint
    return shape if isinstance(shape, type) else None


def _fits(value: object, hint: typing.Any, path: str) -> list[str]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any or hint is object:
        return []
    if origin in (typing.Union, types.UnionType):
        # Judge a value by the arms of its own shape (list for Optional[list[...]], Panel for
        # Panel | RowPanel), not by whichever arm's complaint happens to be shortest.
        own = [a for a in args if (shape := _shape_of(a)) is not None and isinstance(value, shape)]
        results = [_fits(value, arm, path) for arm in own or args]
        return [] if any(not r for r in results) else min(results, key=len)
    if hint is type(None):
        return [] if value is None else [f"{path}: {value!r} is not None"]
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r} not in {args}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: {value!r} is not a list"]
        return [e for i, v in enumerate(value) for e in _fits(v, args[0], f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: {value!r} is not a dict"]
        return [e for k, v in value.items() for e in _fits(v, args[1], f"{path}[{k!r}]")]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        ok = isinstance(value, hint) or value in {m.value for m in hint}
        return [] if ok else [f"{path}: {value!r} is not a {hint.__name__}"]
    if hint is bool:
        return [] if isinstance(value, bool) else [f"{path}: {value!r} is not a bool"]
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{path}: {value!r} is not an int"]
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{path}: {value!r} is not a number"]
    if hint is str:
        return [] if isinstance(value, str) else [f"{path}: {value!r} is not a str"]
    if isinstance(hint, type):
        if not isinstance(value, hint):
            return [f"{path}: {type(value).__name__} is not a {hint.__name__}"]
        return type_errors(value, path)
    return [f"{path}: cannot check against {hint!r}"]


# -- tests --------------------------------------------------------------------------------------


def test_committed_dashboard_is_the_builders_output() -> None:
    """grafana/dashboards/soakd.json is exactly what grafana/build_dashboard.py generates."""
    assert load_builder().render() == DASHBOARD.read_text()


def test_dashboard_round_trips_through_the_schema_types() -> None:
    """Parsing into the SDK's Dashboard type and back loses nothing: no key the schema lacks."""
    data = dashboard_json()
    again = json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))
    assert again == data
    assert data["schemaVersion"] == 42


def test_dashboard_values_have_the_schema_types() -> None:
    """Every value in the parsed dashboard fits the type the schema declares for it."""
    assert type_errors(Dashboard.from_json(dashboard_json())) == []


def test_the_schema_checks_do_catch_bad_dashboards() -> None:
    """Negative control: an unknown key breaks the round trip, a mistyped value the type check."""
    data = dashboard_json()
    data["panels"][1]["fieldConfig"]["defaults"]["custom_typo"] = 1
    again = json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))
    assert again != data
    data = dashboard_json()
    data["panels"][1]["gridPos"]["h"] = "8"
    data["panels"][1]["title"] = 42
    errors = type_errors(Dashboard.from_json(data))
    assert any("grid_pos.h" in e for e in errors) and any(".title" in e for e in errors)


def test_panels_are_known_types_with_prometheus_targets() -> None:
    """Every panel type is a registered Grafana panel; every target queries the provisioned
    Prometheus datasource."""
    datasource = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    known = set(Runtime().panelcfg_variants) | {"row"}
    for panel in dashboard_json()["panels"]:
        assert panel["type"] in known, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}
            assert target["expr"].strip()


def test_panels_do_not_overlap() -> None:
    """Grid positions tile the 24-column grid without overlap."""
    cells: set[tuple[int, int]] = set()
    for panel in dashboard_json()["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, panel["title"]
        cells |= mine


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (labels, ranges, functions removed)."""
    text = re.sub(r'"[^"]*"', "", expr)  # string literals
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)  # label matchers, ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text)
    return {n for n in names if n.lower() not in PROMQL_KEYWORDS}


def test_metric_name_extraction() -> None:
    """The extractor finds selectors and skips functions, labels and keywords."""
    expr = (
        'histogram_quantile(0.99, sum by (op, le) (rate(a_bucket{x="y"}[5m]))) '
        "> on(op) group_left() 1.2 * b or vector(0)"
    )
    assert metric_names(expr) == {"a_bucket", "b"}


def test_every_metric_the_dashboard_queries_is_exposed() -> None:
    """Each metric a panel queries is a sample name in a populated, real exposition."""
    exposed = {name for name, _ in samples_of(populate(new_exporter()).exposition())}
    queried = set().union(*(metric_names(e) for e in exprs()))
    assert queried and queried - exposed == set()


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """promtool accepts every panel expression (as recording rules, $__rate_interval = 1m)."""
    rules = [
        {"record": f"soakd:dashboard_query_{i}", "expr": e.replace("$__rate_interval", "1m")}
        for i, e in enumerate(exprs())
    ]
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run(
        ["promtool", "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


#: The plan's monitoring list (shared/soak_test.yaml) and the metric each one's panel shows.
MONITORED = {
    "memory_rss": "soakd_target_resident_memory_bytes",
    "memory_heap": "soakd_target_heap_bytes",
    "cpu_percent": "soakd_target_cpu_seconds_total",
    "disk_io": "soakd_target_io_bytes_total",
    "consolidation_cadence": "soakd_consolidation_last_interval_seconds",
    "query_latency_p99": "soakd_response_seconds_bucket",
}


@pytest.mark.parametrize("quantity", sorted(MONITORED))
def test_a_panel_for_every_monitored_quantity(quantity: str) -> None:
    """Each quantity the plan monitors has a panel querying its metric."""
    assert any(MONITORED[quantity] in metric_names(e) for e in exprs())


def test_the_issues_panels_are_there() -> None:
    """Leak trend, P99 against baseline, the ±5 s band, errors, drops and the alert timeline."""
    all_exprs = "\n".join(exprs())
    assert "predict_linear(soakd_target_resident_memory_bytes" in all_exprs
    assert "deriv(soakd_target_resident_memory_bytes" in all_exprs
    assert "histogram_quantile(0.99" in all_exprs and "soakd_baseline_p99_seconds" in all_exprs
    assert "soakd_consolidation_tolerance_seconds" in all_exprs
    assert 'soakd_operations_total{outcome!="ok"}' in all_exprs
    assert "soakd_dropped_arrivals_total" in all_exprs
    timeline = [p for p in dashboard_json()["panels"] if p["type"] == "state-timeline"]
    assert timeline and "soakd_alert" in timeline[0]["targets"][0]["expr"]


def test_provisioning_files() -> None:
    """The datasource points at the soak box's Prometheus; the provider loads JSON from a path."""
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://127.0.0.1:9090")
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "soakd.yml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
