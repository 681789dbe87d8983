"""The plan's spec, the demo and the example load into the expected frozen Spec."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
import yaml

from soakd.errors import SpecError
from soakd.spec import load_spec, load_spec_text, model
from soakd.spec.alerts import ANNOTATION_KEYS, STRUCTURED_KEYS
from soakd.spec.loader import TOP_KEYS
from soakd.spec.model import AlertKind, ReceiverType, RestartPolicy, Secret, spec_keys
from soakd.spec.sections import (
    EXPORTER_KEYS,
    INTEGRITY_KEYS,
    RECEIVER_KEYS,
    SAMPLING_KEYS,
    TARGET_KEYS,
)
from soakd.spec.workload import MONITORING_NAMES, OPERATION_KEYS

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
PLAN = CONFIG / "soak_test.yaml"

MINIMAL = "duration: 1h\nworkload:\n  - operation: store\n    rate: 10/s\n"


def test_plan_spec_every_key() -> None:
    """config/soak_test.yaml loads exactly as written, every key in the typed form."""
    spec = load_spec(PLAN)
    assert spec.duration_s == 168 * 3600
    ops = {o.operation: o for o in spec.operations}
    assert list(ops) == ["store", "recall", "spread"]
    assert (ops["store"].rate_per_s, ops["store"].spaces) == (100.0, 10)
    assert (ops["recall"].rate_per_s, ops["recall"].spaces) == (50.0, 10)
    assert ops["recall"].recall is not None
    assert (ops["spread"].rate_per_s, ops["spread"].spaces) == (20.0, 10)
    assert ops["spread"].spread is not None and ops["spread"].spread.max_hops == 5
    assert spec.consolidation is not None
    assert (spec.consolidation.interval_s, spec.consolidation.spaces) == (60.0, 10)
    assert spec.monitoring == (
        "memory_rss",
        "memory_heap",
        "cpu_percent",
        "disk_io",
        "consolidation_cadence",
        "query_latency_p99",
    )
    rules = {
        (a.name, a.kind, a.threshold)
        for a in spec.alerts
        if dict(a.annotations).get("implicit") != "true"
    }
    assert rules == {
        ("memory_leak", AlertKind.MEMORY_LEAK, 10.0),
        ("performance_degradation", AlertKind.PERFORMANCE_DEGRADATION, 20.0),
        ("consolidation_failure", AlertKind.CONSOLIDATION_FAILURE, 5.0),
    }
    implicit = {a.kind for a in spec.alerts if dict(a.annotations).get("implicit") == "true"}
    assert implicit == {
        AlertKind.CRASH,
        AlertKind.INTEGRITY,
        AlertKind.SOAKD_SATURATED,
        AlertKind.DISK_SPACE,
        AlertKind.TARGET_OVERLOADED,
        AlertKind.MEMORY_EXHAUSTION,
    }
    assert spec.space_count == 10
    assert re.fullmatch(r"[0-9a-f]{64}", spec.fingerprint)


def test_shared_plan_copy_is_the_one_tested() -> None:
    """The repo's copy of the plan's spec is byte-identical to the shared one when present."""
    shared = Path("/work/shared/soak_test.yaml")
    if shared.exists():  # outside the build machine only the repo copy exists
        assert shared.read_bytes() == PLAN.read_bytes()
    assert load_spec(PLAN).duration_s == 604800.0


def test_demo_spec() -> None:
    """config/demo.yaml is the plan's shape for 90 s against the reference server."""
    spec = load_spec(CONFIG / "demo.yaml")
    assert spec.duration_s == 90.0
    assert [(o.operation, o.rate_per_s, o.spaces) for o in spec.operations] == [
        ("store", 100.0, 10),
        ("recall", 50.0, 10),
        ("spread", 20.0, 10),
    ]
    spread = spec.operation("spread")
    assert spread is not None and spread.spread is not None and spread.spread.max_hops == 5
    assert spec.consolidation is not None and spec.consolidation.interval_s == 10.0
    kinds = {a.kind for a in spec.alerts}
    assert {AlertKind.CRASH, AlertKind.INTEGRITY, AlertKind.ERROR_RATE} <= kinds
    assert spec.target.url == "http://127.0.0.1:17432"
    assert spec.target.command is not None
    assert spec.target.command[:3] == ("{python}", "-m", "soakd.reference")
    assert "{port}" in spec.target.command
    assert spec.target.restart is RestartPolicy.NEVER
    assert spec.exporter.listen == "127.0.0.1:0"


def test_example_spec_loads_and_sets_every_section() -> None:
    """config/example.yaml loads and exercises receivers, secrets and structured alerts."""
    spec = load_spec(CONFIG / "example.yaml")
    assert {r.type for r in spec.receivers} == set(ReceiverType)
    assert spec.target.api_key == Secret(env="ENGRAM_API_KEY")
    kinds = {a.kind for a in spec.alerts}
    assert kinds == set(AlertKind)
    threshold = next(a for a in spec.alerts if a.kind is AlertKind.THRESHOLD)
    assert threshold.metric == "p99_ms:store"
    assert threshold.labels == (("team", "storage"),)
    assert spec.sampling.min_free_disk_bytes == 512 * 1024**2


def _keys_in(node: yaml.Node, found: set[str]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            found.add(str(key.value))
            _keys_in(value, found)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _keys_in(item, found)


def _all_keys() -> set[str]:
    keys = set(TOP_KEYS) | set(TARGET_KEYS) | set(SAMPLING_KEYS) | set(INTEGRITY_KEYS)
    keys |= set(EXPORTER_KEYS) | set(RECEIVER_KEYS) | set(STRUCTURED_KEYS) | set(ANNOTATION_KEYS)
    for op_keys in OPERATION_KEYS.values():
        keys |= set(op_keys)
    return keys


def test_example_shows_every_key() -> None:
    """Every key the loader accepts appears in config/example.yaml (in YAML or a comment)."""
    text = (CONFIG / "example.yaml").read_text()
    found: set[str] = set()
    root = yaml.compose(text)
    assert root is not None
    _keys_in(root, found)
    commented = set(re.findall(r"#\s*([a-z_]+):", text))
    assert _all_keys() - found - commented == set()


def test_docs_describe_every_key_and_monitoring_name() -> None:
    """docs/spec.md names every key and every monitoring series in backticks."""
    docs = (ROOT / "docs" / "spec.md").read_text()
    missing = {k for k in _all_keys() | set(MONITORING_NAMES) if f"`{k}`" not in docs}
    assert missing == set()


def _doc_tables(text: str) -> list[set[str]]:
    """The keys of every ``| key | type | default | meaning |`` table of docs/spec.md."""
    tables: list[set[str]] = []
    current: set[str] | None = None
    for line in text.splitlines():
        if line.startswith("| key | type | default | meaning |"):
            current = set()
            tables.append(current)
        elif current is not None and not line.startswith("|---"):
            row = re.match(r"\| `([a-z_]+)` \|", line)
            if row is None:
                current = None
            else:
                current.add(row.group(1))
    return tables


def test_docs_reference_tables_list_exactly_the_models_keys() -> None:
    """Each section's table in docs/spec.md has every key the model declares, and no other.

    The model (soakd/spec/model.py) is where a key is declared (issue 19): a
    field added there is accepted by the loader at once, and fails here until
    the reference table says what it is; a key left in the table after the
    field is gone fails too.
    """
    tables = _doc_tables((ROOT / "docs" / "spec.md").read_text())
    sections: dict[str, tuple[str, ...]] = {
        "top level": spec_keys(model.Spec),
        "workload (store, recall, spread)": spec_keys(model.OperationSpec),
        "workload, recall only": spec_keys(model.RecallOptions),
        "workload, spread only": spec_keys(model.SpreadOptions),
        "workload, consolidation": OPERATION_KEYS["consolidation"],
        "receivers": spec_keys(model.ReceiverSpec),
        "target": spec_keys(model.TargetSpec),
        "sampling": spec_keys(model.SamplingSpec),
        "integrity": spec_keys(model.IntegritySpec),
        "exporter": spec_keys(model.ExporterSpec),
    }
    for name, keys in sections.items():
        want = set(keys)
        table = max(tables, key=lambda t, w=want: len(t & w))  # type: ignore[misc]
        assert (want - table, table - want) == (set(), set()), (
            f"docs/spec.md, {name}: (lacks, has but the model does not)"
        )


def test_overrides_apply_but_do_not_change_the_fingerprint(tmp_path: Path) -> None:
    """--duration/--target-url/--metrics-listen change the Spec, never its fingerprint."""
    plain = load_spec(PLAN)
    over = load_spec(
        PLAN,
        duration_s=600.0,
        target_url="http://127.0.0.1:9999",
        metrics_listen="127.0.0.1:0",
    )
    assert (over.duration_s, over.target.url, over.exporter.listen) == (
        600.0,
        "http://127.0.0.1:9999",
        "127.0.0.1:0",
    )
    assert over.fingerprint == plain.fingerprint
    assert load_spec(PLAN, metrics_listen="off").exporter.listen is None


def test_fingerprint_ignores_layout_but_not_content(tmp_path: Path) -> None:
    """Comments and layout leave the fingerprint alone; a changed rate changes it."""
    text = PLAN.read_text()
    base = load_spec_text(text).fingerprint
    relaid = "# a comment\n" + text.replace("rate: 100 ops/sec", "rate:   100/s  # same")
    assert load_spec_text(relaid).fingerprint == base
    assert load_spec_text(text.replace("100 ops/sec", "101 ops/sec")).fingerprint != base
    copy = tmp_path / "copy.yaml"
    shutil.copy(PLAN, copy)
    assert load_spec(copy).fingerprint == base


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"duration_s": -1.0}, "--duration"),
        ({"duration_s": float("inf")}, "--duration"),
        ({"target_url": "localhost:7432"}, "--target-url"),
        ({"metrics_listen": "nowhere"}, "--metrics-listen"),
    ],
)
def test_bad_overrides_are_spec_errors(kwargs: dict[str, object], path: str) -> None:
    """A bad override is a SpecError naming the flag."""
    with pytest.raises(SpecError) as caught:
        load_spec_text(MINIMAL, **kwargs)  # type: ignore[arg-type]
    assert [p.path for p in caught.value.problems] == [path]


def test_space_defaults() -> None:
    """Absent spaces default to the most named anywhere (consolidation too), else 1."""
    spec = load_spec_text(
        "duration: 1h\nworkload:\n"
        "  - {operation: store, rate: 1}\n"
        "  - {operation: recall, rate: 1, spaces: 3}\n"
        "  - {operation: consolidation, spaces: 4}\n"
    )
    assert [o.spaces for o in spec.operations] == [4, 3]
    assert spec.consolidation is not None and spec.consolidation.spaces == 4
    assert load_spec_text(MINIMAL).operations[0].spaces == 1
    assert load_spec_text(MINIMAL).space_count == 1


def test_operation_options_and_defaults() -> None:
    """Per-operation options are read; unspecified ones keep the model's defaults."""
    spec = load_spec_text(
        "duration: 90s\nworkload:\n"
        "  - {operation: store, rate: 6000/min, max_in_flight: 64, timeout: 2s}\n"
        "  - {operation: recall, rate: 5, max_results: 3, threshold: 0.25, by: text}\n"
        "  - {operation: spread, rate: 1, max_hops: 6, decay: 0.5, threshold: 0.2}\n"
        "  - {operation: consolidation, interval: 5m, poll_interval: 1s, tolerance: 10s}\n"
    )
    store, recall, spread = spec.operations
    assert (store.rate_per_s, store.max_in_flight, store.timeout_s) == (100.0, 64, 2.0)
    assert recall.recall is not None
    assert (recall.recall.max_results, recall.recall.threshold, recall.recall.by) == (
        3,
        0.25,
        "text",
    )
    assert spread.spread is not None
    assert dataclasses.astuple(spread.spread) == (6, 0.5, 0.2)
    assert spec.consolidation is not None
    assert dataclasses.astuple(spec.consolidation) == (300.0, 1, 1.0, 10.0)


def test_target_sampling_integrity_exporter_keys() -> None:
    """Every target, sampling, integrity and exporter key lands in its field."""
    spec = load_spec_text(
        MINIMAL + "target:\n"
        "  url: https://engram.example:8443\n"
        "  api_key: {file: /run/secrets/engram}\n"
        "  command: [engram, start, -p, 8443]\n"
        "  env: {ENGRAM_DATA_DIR: /data, PORT: 8443}\n"
        "  cwd: /srv\n"
        "  data_dir: /data\n"
        "  restart: on-failure\n"
        "  restart_max: 2\n"
        "  restart_backoff: 500ms\n"
        "  startup_timeout: 1m\n"
        "  max_connections: 8\n"
        "sampling: {interval: 2s, uss_interval: 5m, stats_interval: 30s, flush_interval: 1s,"
        " min_free_disk: 1GiB}\n"
        "integrity: {sample_fraction: 0.5, delay: 1s, max_pending: 100, space_capacity: 500}\n"
        "exporter: {listen: '[::1]:9464'}\n"
        "seed: 12\nname: nightly-1\n"
    )
    t = spec.target
    assert t.url == "https://engram.example:8443"
    assert t.api_key == Secret(file="/run/secrets/engram")
    assert t.command == ("engram", "start", "-p", "8443")
    assert t.env == (("ENGRAM_DATA_DIR", "/data"), ("PORT", "8443"))
    assert (t.cwd, t.data_dir, t.restart, t.restart_max) == (
        "/srv",
        "/data",
        RestartPolicy.ON_FAILURE,
        2,
    )
    assert (t.restart_backoff_s, t.startup_timeout_s, t.max_connections) == (0.5, 60.0, 8)
    assert dataclasses.astuple(spec.sampling) == (2.0, 300.0, 30.0, 1.0, 1024**3)
    assert dataclasses.astuple(spec.integrity) == (0.5, 1.0, 100, 500)
    assert spec.exporter.listen == "[::1]:9464"
    assert (spec.seed, spec.name) == (12, "nightly-1")


@pytest.mark.parametrize(
    ("target", "field", "value"),
    [
        ("{pid: 4242}", "pid", 4242),
        ("{pid_file: /tmp/engram.pid}", "pid_file", "/tmp/engram.pid"),
        ("{systemd_unit: engram.service}", "systemd_unit", "engram.service"),
    ],
)
def test_target_locators(target: str, field: str, value: object) -> None:
    """pid, pid_file and systemd_unit each select how the target is found."""
    spec = load_spec_text(MINIMAL + f"target: {target}\n")
    assert getattr(spec.target, field) == value


def test_exporter_null_turns_it_off() -> None:
    """exporter.listen: null means no exporter."""
    assert load_spec_text(MINIMAL + "exporter: {listen: null}\n").exporter.listen is None
    assert load_spec_text(MINIMAL + "exporter:\n").exporter.listen == "127.0.0.1:9464"


def test_structured_alert_forms() -> None:
    """Name-to-options and full structured alerts carry for/window/severity/labels."""
    spec = load_spec_text(
        MINIMAL + "alerts:\n"
        "  - leak: {phrase: 'RSS increases >10% per day', for: 10m, window: 6h, severity: ticket}\n"
        "  - name: errs\n"
        "    kind: error_rate\n"
        "    threshold: 2%\n"
        "    operations: [store]\n"
        "    annotations: {summary: too many errors}\n"
        "  - {name: drift, kind: consolidation_failure, threshold: 5s}\n"
        "  - {name: boom, kind: crash}\n"
        "  - {name: fds, kind: threshold, metric: num_fds, condition: '>=', threshold: 1000}\n"
        "  - {name: slow, kind: performance_degradation, threshold: 50, metric: p50_ms}\n"
        "  - {name: leak2, kind: memory_leak, abs_mb_per_h: 10}\n"
        "  - {name: disk, kind: disk_space, threshold: 2GB}\n"
        "  - {name: sat, kind: soakd_saturated, threshold: 0.05}\n"
        "  - {name: er, kind: threshold, metric: 'error_rate:store', threshold: 0.1}\n"
        "  - inline: 'any crash'\n"
        "    for: 30s\n"
        "    severity: warning\n"
    )
    by_name = {a.name: a for a in spec.alerts}
    leak = by_name["leak"]
    assert (leak.kind, leak.for_s, leak.window_s, leak.severity) == (
        AlertKind.MEMORY_LEAK,
        600.0,
        21600.0,
        "ticket",
    )
    errs = by_name["errs"]
    assert (errs.threshold, errs.operations) == (0.02, ("store",))
    assert errs.annotations == (("summary", "too many errors"),)
    assert by_name["drift"].threshold == 5.0
    assert by_name["boom"].threshold == 0.0
    assert (by_name["fds"].metric, by_name["fds"].condition) == ("num_fds", ">=")
    assert by_name["slow"].metric == "p50_ms"
    assert (by_name["leak2"].abs_mb_per_h, by_name["leak2"].threshold) == (10.0, 0.0)
    assert (by_name["disk"].threshold, by_name["disk"].condition) == (2e9, "<")
    assert by_name["sat"].threshold == 0.05
    assert by_name["er"].metric == "error_rate:store"
    inline = by_name["inline"]
    assert (inline.kind, inline.for_s, inline.severity) == (AlertKind.CRASH, 30.0, "warning")


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    """A spec path that cannot be read is a SpecError, not an OSError."""
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path / "nope.yaml")
    assert caught.value.problems[0].path == "(file)"
    assert "cannot read" in caught.value.problems[0].message


def _field_keys(cls: type, renames: dict[str, str | None]) -> set[str]:
    """The YAML key each dataclass field is set from (unit suffix dropped)."""
    keys: set[str] = set()
    for f in dataclasses.fields(cls):
        if f.name in renames:
            key = renames[f.name]
        else:
            key = f.name.removesuffix("_s").removesuffix("_bytes")
        if key is not None:
            keys.add(key)
    return keys


def test_every_model_field_is_settable_from_yaml() -> None:
    """A field added to a spec dataclass without a YAML key fails here."""
    from soakd.spec import model

    cases: list[tuple[type, tuple[str, ...], dict[str, str | None]]] = [
        (model.TargetSpec, TARGET_KEYS, {}),
        (model.SamplingSpec, SAMPLING_KEYS, {}),
        (model.IntegritySpec, INTEGRITY_KEYS, {}),
        (model.ExporterSpec, EXPORTER_KEYS, {}),
        (model.ReceiverSpec, RECEIVER_KEYS, {"url_secret": "url"}),
        (model.AlertRuleSpec, STRUCTURED_KEYS, {}),
        (model.RecallOptions, OPERATION_KEYS["recall"], {}),
        (model.SpreadOptions, OPERATION_KEYS["spread"], {}),
        (
            model.OperationSpec,
            OPERATION_KEYS["recall"],
            {"rate_per_s": "rate", "recall": None, "spread": None},
        ),
        (model.ConsolidationSpec, OPERATION_KEYS["consolidation"], {}),
        (
            model.Spec,
            TOP_KEYS,
            {"operations": "workload", "consolidation": "workload", "fingerprint": None},
        ),
    ]
    for cls, keys, renames in cases:
        assert _field_keys(cls, renames) - set(keys) == set(), cls.__name__


def test_implicit_rule_yields_to_the_specs_own() -> None:
    """A spec that names a crash rule keeps it; only the kinds it leaves out are added."""
    text = PLAN.read_text() + '  - crash: "any restart"\n'
    spec = load_spec_text(text, "plan+crash.yaml")
    crash = [a for a in spec.alerts if a.kind is AlertKind.CRASH]
    assert len(crash) == 1
    assert dict(crash[0].annotations).get("implicit") is None
    disk = next(a for a in spec.alerts if a.kind is AlertKind.DISK_SPACE)
    assert disk.threshold == spec.sampling.min_free_disk_bytes
