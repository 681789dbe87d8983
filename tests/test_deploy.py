"""Tests of deploy/: the systemd unit, Prometheus config and rules, Alertmanager, compose file.

Each file is checked by the tool that will load it on the soak box (promtool,
amtool, systemd-analyze), and the rules' metric names against a live exposition.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

# tests/ is on sys.path under pytest's default import mode; populate() lives there.
from test_exporter import new_exporter, populate, samples_of

from soakd.errors import ExitCode
from soakd.spec.model import ExporterSpec

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "soakd.service"


def run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


def unit_settings() -> dict[str, list[str]]:
    """The unit's Key=Value lines (comments dropped), every value of repeated keys kept."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def runnable_unit_copy(tmp_path: Path, extra: str = "") -> Path:
    """The unit with ExecStart pointing at a binary that exists here.

    `systemd-analyze verify` checks that ExecStart's program exists, and
    /opt/soakd/.venv/bin/soakd only exists on the soak box; everything else in the
    copy is the real unit (plus ``extra`` lines appended to [Service], for the
    negative control).
    """
    text = UNIT.read_text().replace("/opt/soakd/.venv/bin/soakd", "/usr/bin/true")
    if extra:
        text = text.replace("[Install]", extra + "\n[Install]")
    copy = tmp_path / "soakd.service"
    copy.write_text(text)
    return copy


def test_systemd_analyze_verify_prints_nothing(tmp_path: Path) -> None:
    """`systemd-analyze verify` (which exits 0 even on errors) prints nothing for the unit.

    It runs on a copy whose ExecStart is /usr/bin/true, because verify also
    complains that /opt/soakd/.venv/bin/soakd does not exist on this machine.
    """
    proc = run("systemd-analyze", "verify", str(runnable_unit_copy(tmp_path)))
    assert proc.stdout + proc.stderr == ""


def test_systemd_analyze_verify_does_complain_about_a_bad_key(tmp_path: Path) -> None:
    """Negative control: verify prints something for an unknown key, so silence means clean."""
    proc = run("systemd-analyze", "verify", str(runnable_unit_copy(tmp_path, "NoSuchKey=1")))
    assert "NoSuchKey" in proc.stdout + proc.stderr


def test_unit_security_exposure_is_at_most_2_5() -> None:
    """`systemd-analyze security --offline=true` rates the unit's exposure 2.5 or lower."""
    proc = run("systemd-analyze", "security", "--offline=true", str(UNIT))
    match = re.search(r"Overall exposure level for soakd\.service: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= 2.5


def test_unit_settings_match_soakd() -> None:
    """Type=notify with a watchdog, exit codes as soakd.errors names them, state directory."""
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] == ["30s"]
    assert s["Restart"] == ["on-abnormal"]
    assert s["SuccessExitStatus"] == [str(int(ExitCode.STOPPED))]
    prevent = s["RestartPreventExitStatus"][0].split()
    assert prevent == [str(int(ExitCode.USAGE)), str(int(ExitCode.STARTUP))]
    assert s["StateDirectory"] == ["soakd"]
    assert s["ExecStart"][0].endswith("--state-dir ${STATE_DIRECTORY}")
    assert any(v.startswith("-/etc/soakd/soakd.env") for v in s["EnvironmentFile"])
    assert s["LoadCredential"]


def test_unit_may_still_read_the_targets_proc() -> None:
    """The hardening keeps what reading another user's /proc/PID needs, and no hidepid."""
    s = unit_settings()
    caps = set(s["CapabilityBoundingSet"][0].split())
    assert caps == {"CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"}
    assert set(s["AmbientCapabilities"][0].split()) == caps
    assert s.get("ProtectProc", ["default"]) == ["default"]
    assert s.get("ProcSubset", ["all"]) == ["all"]  # psutil reads /proc/stat for boot time
    assert s["NoNewPrivileges"] == ["yes"] and s["ProtectSystem"] == ["strict"]


def test_promtool_check_config() -> None:
    """`promtool check config deploy/prometheus.yml` passes (rule file found beside it)."""
    proc = run("promtool", "check", "config", str(DEPLOY / "prometheus.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_prometheus_scrapes_soakds_default_listen_address() -> None:
    """The soakd job scrapes the address the spec's exporter listens on by default."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "soakd")
    assert job["static_configs"][0]["targets"] == [ExporterSpec().listen]
    assert config["rule_files"] == ["soakd-rules.yml"]


def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts the alerting rules."""
    proc = run("promtool", "check", "rules", str(DEPLOY / "soakd-rules.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_test_rules() -> None:
    """The rules' unit tests pass: each alert fires on a breach and not on its neighbour."""
    proc = run("promtool", "test", "rules", "soakd-rules.test.yml", cwd=DEPLOY)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rules_cover_the_plans_alerts() -> None:
    """There is a rule for each of the plan's three alerts and for crashes and errors."""
    rules = yaml.safe_load((DEPLOY / "soakd-rules.yml").read_text())["groups"][0]["rules"]
    by_name = {r["alert"]: r for r in rules}
    assert "> 0.10" in by_name["SoakTargetMemoryLeak"]["expr"]
    assert "1.20 * soakd_baseline_p99_seconds" in by_name["SoakLatencyDegraded"]["expr"]
    assert "soakd_consolidation_drift_seconds" in by_name["SoakConsolidationDrift"]["expr"]
    assert {"SoakTargetCrashed", "SoakErrorRate"} <= set(by_name)
    assert all(r["labels"]["severity"] in {"page", "warning"} for r in rules)


def test_every_metric_the_rules_query_is_exposed() -> None:
    """Each soakd_* name in a rule expression is a sample name of a populated exposition."""
    exposed = {name for name, _ in samples_of(populate(new_exporter()).exposition())}
    text = (DEPLOY / "soakd-rules.yml").read_text()
    queried = set(re.findall(r"\bsoakd_[a-z0-9_]+", text))
    assert queried, "no soakd metric found in the rules"
    assert queried - exposed == set()


def test_amtool_check_config() -> None:
    """`amtool check-config deploy/alertmanager.yml` passes."""
    proc = run("amtool", "check-config", str(DEPLOY / "alertmanager.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=memory_leak", "severity=page"], "pager"),
        (["alertname=SoakdSaturated", "severity=warning"], "team"),
    ],
)
def test_alertmanager_routes_pages_to_the_pager(labels: list[str], receiver: str) -> None:
    """severity=page goes to the pager webhook; everything else to the team's webhook."""
    config = str(DEPLOY / "alertmanager.yml")
    proc = run("amtool", "config", "routes", "test", f"--config.file={config}", *labels)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == receiver


def test_compose_runs_prometheus_alertmanager_and_grafana_on_loopback() -> None:
    """Three services on the host network, listening on 127.0.0.1, mounting files that exist."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"prometheus", "alertmanager", "grafana"}
    for name, svc in services.items():
        assert svc["network_mode"] == "host", name
        assert ":latest" not in svc["image"] and ":" in svc["image"], name
        for volume in svc["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
    assert "--web.listen-address=127.0.0.1:9090" in services["prometheus"]["command"]
    assert "--web.listen-address=127.0.0.1:9093" in services["alertmanager"]["command"]
    assert "--cluster.listen-address=" in services["alertmanager"]["command"]
    assert services["grafana"]["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"


def test_compose_mounts_match_the_grafana_provisioning() -> None:
    """Grafana's dashboard provider path is where compose mounts grafana/dashboards."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    provider_file = DEPLOY.parent / "grafana" / "provisioning" / "dashboards" / "soakd.yml"
    provider = yaml.safe_load(provider_file.read_text())["providers"][0]
    assert mounts["../grafana/dashboards"] == provider["options"]["path"]
    assert mounts["../grafana/provisioning"] == "/etc/grafana/provisioning"


def test_env_example_is_a_valid_environment_file() -> None:
    """Every non-comment line of soakd.env.example is KEY=VALUE with a shell-safe key."""
    lines = (DEPLOY / "soakd.env.example").read_text().splitlines()
    settings = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    assert settings
    for line in settings:
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", line), line
