"""soakd baseline / compare (issue 20): real soakd and reference-target processes, real files."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from soakd.baseline.compare import Verdict, judge_p99, judge_throughput, parse_threshold
from soakd.baseline.measure import STRETCHES, latency_of
from soakd.baseline.model import Latency, Step, Throughput, from_doc, from_json, to_json
from soakd.baseline.plan import PlanError, plan_from_doc
from soakd.baseline.render import render_single_node
from soakd.baseline.runner import Tally
from soakd.baseline.search import held_throughput, judge, search
from soakd.baseline.soakfile import read_p99_file
from soakd.cli import main
from soakd.errors import SpecError
from soakd.judge import file_baseline_p99
from soakd.model import Op, OpResult, Outcome
from soakd.reference.harness import reference
from soakd.spec import load_spec_text
from soakd.spec.model import AlertKind
from soakd.stats import Histogram
from soakd.testing import free_port, soak_spec, soakd_command

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT.parent.parent / "shared/seed/000_d1853a7a72d84f66.txt"
CHILD_ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}

#: Short steps and windows: the scaled run stays well under a minute of real time.
FAST = """\
baseline:
  step_seconds: 0.5
  resolution: 0.5
  start_rate: 200
  latency_min_seconds: 0.5
  latency_min_requests: 400
"""


def _soakd(*args: str, timeout_s: float = 170.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        soakd_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=CHILD_ENV,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _plan_example_lines() -> list[str]:
    """The plan's "Single-Node Baselines (date)" example, as the lines our output must echo."""
    text = PLAN.read_text(encoding="utf-8") if PLAN.exists() else ""
    start = text.find("## Single-Node Baselines (")
    if start < 0:  # the worktree may live elsewhere: the example as the plan prints it
        return [
            "## Single-Node Baselines (2025-10-31)",
            "### Hardware",
            "- CPU: AMD Ryzen 9 5950X (16C/32T)",
            "- RAM: 64GB DDR4-3600",
            "- Storage: NVMe SSD",
            "### Store Operation",
            "- P50: 2.3ms",
            "- P95: 4.7ms",
            "- P99: 8.1ms",
            "- Throughput: 12,400 ops/sec",
            "### Recall Operation",
            "### Spread Operation (3 hops)",
        ]
    block = text[start : text.find("```", start)]
    return [line for line in block.splitlines() if line.strip()]


def _shape(line: str) -> str:
    """A line's form with its figures abstracted: "- P50: 2.3ms" -> "- P50: Nms"."""
    line = re.sub(r"\(\d{4}-\d{2}-\d{2}\)", "(DATE)", line)
    return re.sub(r"\d[\d,]*(\.\d+)?", "N", line)


# -- the scaled run ----------------------------------------------------------------------


@pytest.mark.slow
def test_scaled_baseline_writes_three_files_in_the_plans_format(tmp_path: Path) -> None:
    """--scale 0.01 against the launched reference target: JSON + two Markdown files;
    the Markdown has every line form of the plan's example; --render reproduces both."""
    spec = tmp_path / "fast.yaml"
    spec.write_text(FAST)
    out = tmp_path / "out"
    done = _soakd("baseline", str(spec), "--scale", "0.01", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["baseline.json", "distributed_targets.md", "single_node_baselines.md"]

    b = from_json((out / "baseline.json").read_text())
    sizes = {w.name: (w.memories, len(w.spaces)) for w in b.workloads}
    assert sizes == {
        "small": (100, 1),
        "medium": (1000, 5),
        "large": (10000, 10),
        "mixed": (10000, 10),
    }
    for w in b.workloads:
        assert [o.op for o in w.ops] == ["store", "recall", "spread"]
        assert w.memories_after is not None and w.memories_after >= w.memories
        assert w.resources.rss_bytes and w.resources.rss_anon_bytes
        assert w.resources.cpu_cores is not None and w.resources.cpu_cores > 0
        for o in w.ops:
            assert o.throughput.per_s > 0, (w.name, o.op, o.throughput)
            assert o.latency is not None and o.latency.p99_bounded
            assert o.latency.requests >= 400
            assert o.latency.p99_lo_ms <= o.latency.p99_ms <= o.latency.p99_hi_ms
            if w.total is None:  # a size: the operation's own latency run, judged as a step
                held = o.throughput.held
                assert held and held[-1].rate_per_s == o.latency.rate_per_s, held
    mixed = b.workload("mixed")
    assert mixed is not None and [s for _, s in mixed.shares] == [0.7, 0.2, 0.1]
    assert mixed.total is not None and mixed.total.held, mixed.total  # the latency run, judged
    assert b.version == 2

    single = (out / "single_node_baselines.md").read_text()
    ours = {_shape(line) for line in single.splitlines()}
    for line in _plan_example_lines():
        if line.startswith("- ") and ":" in line and line.split(":")[0] in ("- RAM", "- Storage"):
            assert any(o.startswith(line.split(":")[0] + ": ") for o in ours), line
            continue
        if line.startswith("- CPU:"):
            assert any(re.match(r"- CPU: .+ \(NC/NT\)$", o) for o in ours), line
            continue
        if line.startswith("### ") and "Operation" in line:
            assert any(o.startswith(_shape(line) + " — ") for o in ours), line
            continue
        assert _shape(line) in ours, line
    distributed = (out / "distributed_targets.md").read_text()
    assert distributed.startswith("## Distributed Performance Targets\n")
    for heading in ("### Intra-Partition (same node) — ", "### Cross-Partition (network hop) — "):
        assert distributed.count(heading) == 4
    small = b.workload("small")
    assert small is not None and small.ops[0].latency is not None
    store_p99 = small.ops[0].latency.p99_ms
    assert f"- Store: <2x baseline (P99 <{2 * store_p99:.3g}ms)" in distributed
    assert f"- Store: <3x baseline (P99 <{3 * store_p99:.3g}ms)" in distributed

    again = tmp_path / "again"
    done = _soakd("baseline", "--render", str(out / "baseline.json"), "--out", str(again))
    assert done.returncode == 0, done.stderr
    for name in ("single_node_baselines.md", "distributed_targets.md"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    assert to_json(b) == (out / "baseline.json").read_text()


# -- the gate end to end -----------------------------------------------------------------

GATE = """\
baseline:
  sizes: [{name: small, memories: 500, spaces: 1}]
  mixed: null
  operations: [recall, spread]
  step_seconds: 0.5
  resolution: 0.25
  start_rate: 200
  latency_min_seconds: 1
  latency_min_requests: 2000
"""


@pytest.mark.slow
def test_a_much_slower_build_is_a_regression_end_to_end(tmp_path: Path) -> None:
    """A baseline of the reference target, then one with --latency-scale 3 at the first one's
    rates (--rates-from): the gate exits 1 and names the regressions.

    The issue's +20 % (and same-target-clean) hit rates are measured by
    bench/baseline_gate.py, not asserted here: on this shared 2-core box run-to-run noise
    exceeds 20 % (docs/baseline.md, "Measured here").
    """
    spec = tmp_path / "gate.yaml"
    spec.write_text(GATE)
    old = tmp_path / "old"
    done = _soakd("baseline", str(spec), "--out", str(old))
    assert done.returncode == 0, done.stderr[-3000:]
    slow = tmp_path / "slow"
    done = _soakd(
        "baseline",
        str(spec),
        "--out",
        str(slow),
        "--rates-from",
        str(old / "baseline.json"),
        "--reference-arg=--latency-scale",
        "--reference-arg=3",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    b_old = from_json((old / "baseline.json").read_text())
    b_slow = from_json((slow / "baseline.json").read_text())
    for o_old, o_slow in zip(b_old.workloads[0].ops, b_slow.workloads[0].ops, strict=True):
        assert o_old.latency is not None and o_slow.latency is not None
        assert o_slow.latency.rate_per_s == o_old.latency.rate_per_s  # --rates-from
    gate = _soakd("compare", str(old / "baseline.json"), str(slow / "baseline.json"))
    assert gate.returncode == 1, gate.stdout
    assert "**REGRESSION**" in gate.stdout and "regression(s)**" in gate.stdout


# -- compare: exit codes and bad input (in-process, on real files) -------------------------


def _latency(p99: float, lo: float, hi: float, n: int = 5000) -> Latency:
    return Latency(100.0, 50.0, n, 0, 0, p99 / 3, p99 / 2, p99, p99 * 2, lo, hi, True)


def _doc(tmp_path: Path) -> dict[str, Any]:
    """A small real baseline document: the one checked into the tests' data."""
    doc = json.loads((ROOT / "tests/data/baseline_small.json").read_text())
    assert isinstance(doc, dict)
    return doc


def _write(tmp_path: Path, name: str, doc: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_compare_identical_is_clean_and_a_shifted_p99_is_a_regression(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = _doc(tmp_path)
    old = _write(tmp_path, "old.json", doc)
    assert main(["compare", old, old]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### Baseline comparison")
    assert "| workload | operation | metric | old | new | change | verdict |" in out
    worse = copy.deepcopy(doc)
    lat = worse["workloads"][0]["ops"][0]["latency"]
    for key in ("p99_ms", "p99_lo_ms", "p99_hi_ms"):
        lat[key] = lat[key] * 1.5
    new = _write(tmp_path, "new.json", worse)
    assert main(["compare", old, new]) == 1
    out = capsys.readouterr().out
    assert "**REGRESSION**" in out and "**1 regression(s)**" in out
    # within the threshold: 1.5x is a 50 % step, so a 60 % threshold lets it pass
    assert main(["compare", old, new, "--max-regression", "60%"]) == 0


def test_compare_notes_baselines_taken_in_different_sittings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Drift between sittings is not in the bounds: compare says how far apart the two were."""
    doc = _doc(tmp_path)
    old = _write(tmp_path, "old.json", doc)
    near = _write(tmp_path, "near.json", {**doc, "created_at": "2026-12-06T01:46:13Z"})
    far = _write(tmp_path, "far.json", {**doc, "created_at": "2026-12-06T04:36:13Z"})
    assert main(["compare", old, near]) == 0
    assert "apart" not in capsys.readouterr().out
    assert main(["compare", old, far]) == 0  # a note, not a verdict
    assert "- taken 3.0 h apart (2026-12-06T01:36:13Z vs 2026-12-06T04:36:13Z)" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["workloads"][0]["ops"][1]["latency"].__setitem__("p99_ms", "fast"),
            "workloads[0].ops[1].latency.p99_ms: expected a number, got string 'fast'",
        ),
        (lambda d: d.pop("machine"), "machine: missing"),
        (lambda d: d.__setitem__("version", 99), "version: this soakd reads versions 1, 2, got 99"),
        (lambda d: d.__setitem__("schema", "x"), "schema: expected 'soakd-baseline', got 'x'"),
        (
            lambda d: d["workloads"][0].__setitem__("kind", "huge"),
            "workloads[0].kind: 'huge' is not one of size, mixed",
        ),
    ],
)
def test_compare_bad_input_exits_2_naming_the_json_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate: Any, message: str
) -> None:
    good = _write(tmp_path, "good.json", _doc(tmp_path))
    doc = _doc(tmp_path)
    mutate(doc)
    bad = _write(tmp_path, "bad.json", doc)
    assert main(["compare", good, bad]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: {message}" in err
    assert "Traceback" not in err


def test_compare_unreadable_files_and_bad_threshold_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _write(tmp_path, "good.json", _doc(tmp_path))
    missing = str(tmp_path / "nope.json")
    assert main(["compare", good, missing]) == 2
    assert f"{missing}: cannot read: No such file or directory" in capsys.readouterr().err
    notjson = tmp_path / "x.json"
    notjson.write_text("{oops")
    assert main(["compare", str(notjson), good]) == 2
    assert f"{notjson}: $: not JSON" in capsys.readouterr().err
    assert main(["compare", good, good, "--max-regression", "lots"]) == 2
    assert "--max-regression: expected a percentage like 5%, got 'lots'" in capsys.readouterr().err
    other = _doc(tmp_path)
    other["settings"]["scale"] = 0.5
    assert main(["compare", good, _write(tmp_path, "other.json", other)]) == 2
    assert "different datasets: scale 1 vs 0.5" in capsys.readouterr().err


def test_render_of_bad_json_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _doc(tmp_path)
    del doc["workloads"][0]["ops"][0]["throughput"]["steps"]
    bad = _write(tmp_path, "bad.json", doc)
    assert main(["baseline", "--render", bad]) == 2
    assert f"{bad}: workloads[0].ops[0].throughput.steps: missing" in capsys.readouterr().err


def test_json_round_trip_is_exact(tmp_path: Path) -> None:
    text = (ROOT / "tests/data/baseline_small.json").read_text()
    b = from_json(text)
    assert from_json(to_json(b)) == b
    assert from_doc(json.loads(to_json(b))) == b
    held = (_step(100, True), _step(50, False, "p99 412.0 ms > ceiling 100 ms"))
    op = b.workloads[0].ops[0]
    with_held = replace(op, throughput=replace(op.throughput, held=held))
    w = replace(b.workloads[0], ops=(with_held, *b.workloads[0].ops[1:]))
    b2 = replace(b, version=2, workloads=(w, *b.workloads[1:]))
    assert from_json(to_json(b2)) == b2


def test_a_version_1_baseline_reads_with_no_held_runs() -> None:
    """Committed baselines from before held runs were judged (version 1) still gate."""
    doc = json.loads((ROOT / "tests/data/baseline_small.json").read_text())
    assert doc["version"] == 1 and "held" not in json.dumps(doc)
    b = from_doc(doc)
    assert all(op.throughput.held == () for w in b.workloads for op in w.ops)
    # its Markdown does not claim a check that was not made
    assert "judged as a step too" not in render_single_node(b)
    assert "judged as a step too" in render_single_node(replace(b, version=2))


def _step(rate: float, passed: bool, why: str = "ok", seconds: float = 20.0) -> Step:
    return Step(rate, seconds, 10, 10, 0, 0, rate, 1.0, passed, why)


def test_a_held_rate_that_fails_caps_the_throughput_found_in_short_steps() -> None:
    found = Throughput(400, 400, 440, (_step(400, True, seconds=3),))
    # held at half and it passed: the figure stands, the run is kept
    same = held_throughput(found, [_step(200, True)], 3)
    assert (same.per_s, same.hi_per_s, same.note) == (400, 440, "")
    assert same.held == (_step(200, True),)
    # 200/s failed when held, 100/s passed: the target sustains [100, 200)
    why = "achieved 61.0 % of offered (< 99 %)"
    burst = held_throughput(found, [_step(200, False, why), _step(100, True)], 3)
    assert (burst.per_s, burst.lo_per_s, burst.hi_per_s) == (100, 100, 200)
    assert burst.note == (
        f"held 20 s, 200/s failed ({why}; p99 1.0 ms): the 3-s steps' 400/s was a burst rate;"
        " 100/s held"
    )
    assert burst.steps == found.steps and len(burst.held) == 2
    # nothing held: no figure, never the burst one
    runs = [_step(r, False, "p99 900.0 ms > ceiling 100 ms") for r in (200, 100, 50)]
    none = held_throughput(replace(found, note="left out of the mix: spread"), runs, 3)
    assert (none.per_s, none.hi_per_s) == (0, 50)
    assert none.note.startswith("left out of the mix: spread; held 20 s, 50/s failed")
    assert none.note.endswith("no held rate passed")
    # --rates-from held a rate above what this build's steps found: the bracket only narrows
    slow = Throughput(150, 150, 170, ())
    gate = held_throughput(slow, [_step(200, False, why)], 3)
    assert (gate.per_s, gate.hi_per_s, gate.note) == (150, 170, "")
    capped = held_throughput(Throughput(150, 150, None, ()), [_step(200, False, why)], 3)
    assert (capped.per_s, capped.hi_per_s) == (150, 200)


# -- the rules, one by one ------------------------------------------------------------------


def test_p99_regression_needs_bounds_apart_by_the_threshold() -> None:
    old = _latency(10.0, 9.5, 10.5)
    assert judge_p99(old, _latency(11.0, 10.4, 11.6), 0.05)[0] is Verdict.SAME  # overlap
    # lower bound 11.1 <= 10.5 * 1.05 = 11.025? no: 11.1 > 11.025 -> regression
    assert judge_p99(old, _latency(11.6, 11.1, 12.0), 0.05)[0] is Verdict.REGRESSION
    assert judge_p99(old, _latency(11.5, 11.0, 12.0), 0.05)[0] is Verdict.SAME
    assert judge_p99(old, _latency(8.0, 7.5, 8.5), 0.05)[0] is Verdict.IMPROVED
    assert judge_p99(old, None, 0.05)[0] is Verdict.REGRESSION
    unbounded = Latency(1, 1, 100, 0, 0, 1, 1, 30, 30, 20, 30, False)
    assert judge_p99(old, unbounded, 0.05)[0] is Verdict.NOT_JUDGED


def test_throughput_regression_needs_brackets_apart_by_the_threshold() -> None:
    old = Throughput(1000, 1000, 1100, ())
    assert judge_throughput(old, Throughput(800, 800, 1000, ()), 0.05)[0] is Verdict.SAME
    assert judge_throughput(old, Throughput(800, 800, 940, ()), 0.05)[0] is Verdict.REGRESSION
    assert judge_throughput(old, Throughput(1300, 1300, None, ()), 0.05)[0] is Verdict.IMPROVED
    assert judge_throughput(old, Throughput(1100, 1100, 1200, ()), 0.05)[0] is Verdict.SAME


def test_threshold_forms() -> None:
    assert parse_threshold("5%") == 0.05
    assert parse_threshold("12.5") == 0.125
    with pytest.raises(ValueError, match="expected 0-100"):
        parse_threshold("150%")


async def test_search_brackets_the_capacity_and_confirms_it() -> None:
    """A fake target that sustains up to 730/s: doubling, bisection, one confirming step."""
    tried: list[float] = []

    async def trial(rate: float) -> Step:
        tried.append(rate)
        ok = rate <= 730
        return Step(rate, 1, 10, 10, 0, 0, rate, 1.0, ok, "ok" if ok else "too fast")

    thr = await search(trial, start_rate=100, max_rate=10_000, resolution=0.1)
    assert thr.lo_per_s <= 730 < (thr.hi_per_s or 0)
    assert (thr.hi_per_s or 0) / thr.lo_per_s <= 1.1
    assert tried[:4] == [100, 200, 400, 800]
    assert tried[-1] == thr.per_s  # confirmed
    assert len(thr.steps) == len(tried)


async def test_search_falls_back_when_the_figure_fails_its_second_try() -> None:
    seen: dict[float, int] = {}

    async def trial(rate: float) -> Step:
        seen[rate] = seen.get(rate, 0) + 1
        ok = rate <= 400 or (rate <= 566 and seen[rate] == 1)  # 566 passes once, by luck
        return Step(rate, 1, 10, 10, 0, 0, rate, 1.0, ok, "ok" if ok else "too fast")

    thr = await search(trial, start_rate=100, max_rate=10_000, resolution=0.5)
    assert (thr.per_s, thr.hi_per_s) == (400, 566)


async def test_a_start_rate_that_passes_once_by_luck_steps_down_not_to_zero() -> None:
    """The start (200/s) passes once, then fails its second try, with nothing tried below
    it: the search halves to a rate that passes twice (a loaded CI box did this to spread,
    and the search reported 'no rate' for a target that sustains 150/s)."""
    seen: dict[float, int] = {}

    async def trial(rate: float) -> Step:
        seen[rate] = seen.get(rate, 0) + 1
        ok = rate <= 150 or (rate == 200 and seen[rate] == 1)
        return Step(rate, 1, 10, 10, 0, 0, rate, 1.0, ok, "ok" if ok else "too fast")

    thr = await search(trial, start_rate=200, max_rate=10_000, resolution=0.5)
    assert thr.per_s == 141 and thr.hi_per_s == 200, thr  # 100 passed, 141 bisected, confirmed
    assert seen[141] == 2


async def test_search_reports_no_rate_with_the_reason() -> None:
    async def trial(rate: float) -> Step:
        return Step(rate, 1, 10, 0, 10, 0, 0, None, False, "10 failed: http_500 x10")

    thr = await search(trial, start_rate=100, max_rate=1000, resolution=0.1)
    assert thr.per_s == 0 and "http_500" in thr.note


def test_the_documented_mixed_form_reads_though_yaml_takes_on_for_true() -> None:
    """`mixed: {on: large, ...}` as the docs write it: PyYAML (YAML 1.1) reads the key `on`
    as the boolean true; the plan still reads it as the size the mix runs on."""
    doc = yaml.safe_load(
        "baseline:\n"
        "  sizes: [{name: small, memories: 10, spaces: 1}, {name: big, memories: 20, spaces: 2}]\n"
        "  mixed: {on: small, shares: {store: 0.7, recall: 0.3}}\n"
    )
    assert True in doc["baseline"]["mixed"]  # what the parser hands over
    mixed = plan_from_doc(doc).mixed
    assert mixed is not None and mixed.on == "small"
    assert mixed.shares == (("store", 0.7), ("recall", 0.3))


def test_a_mixed_steps_failures_name_their_operations() -> None:
    store, recall = Tally("store", offered=100, ok=20), Tally("recall", offered=30, ok=10)
    store.errors["unanswered"] = 80
    recall.errors["unanswered"] = 20
    step = judge(130, 1, [store, recall], min_achieved=0.99, p99_ceiling_ms=100)
    assert step.why == "100 failed: store unanswered x80; recall unanswered x20"
    alone = judge(100, 1, [store], min_achieved=0.99, p99_ceiling_ms=100)
    assert alone.why == "80 failed: unanswered x80"
    short = judge(1, 2000, [Tally("store", offered=2000, ok=1979, ok_in_window=1979)],
                  min_achieved=0.99, p99_ceiling_ms=100)  # fmt: skip
    assert short.why == "achieved 98.9 % of offered (< 99 %)"  # 98.95 %, never "99.0"


def test_plan_spec_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PlanError, match=r"baseline.sizes\[0\].memories: expected a number"):
        plan_from_doc({"baseline": {"sizes": [{"name": "a", "memories": "x", "spaces": 1}]}})
    with pytest.raises(PlanError, match=r"unknown key\(s\) \['stepseconds'\]"):
        plan_from_doc({"baseline": {"stepseconds": 1}})
    with pytest.raises(PlanError, match=r"baseline\.mixed\.shares\.write: not one of"):
        plan_from_doc({"baseline": {"mixed": {"shares": {"write": 1}}}})
    with pytest.raises(PlanError, match=r"baseline\.mixed: unknown key\(s\) \['size'\]"):
        plan_from_doc({"baseline": {"mixed": {"size": "large"}}})
    spec = tmp_path / "bad.yaml"
    spec.write_text("baseline:\n  latency_share: 2\n")
    assert main(["baseline", str(spec)]) == 2
    assert "latency_share: expected a number in [0.01, 1.0], got 2" in capsys.readouterr().err
    assert main(["baseline", "--scale", "0"]) == 2
    assert "--scale must be in (0, 1000]" in capsys.readouterr().err


# -- item 4: the soak's performance_degradation baseline from a baseline.json ---------------


def _soak_with_baseline(path: str) -> str:
    rule = f'{{name: p99_up, phrase: "P99 latency increases >20%", baseline_file: "{path}"}}'
    return soak_spec(free_port(), alerts=[rule, 'crash: "any crash"'])


def test_soak_reads_p99_per_operation_from_a_baseline_json(tmp_path: Path) -> None:
    """P99 per operation from the mixed workload first, else the size with the most spaces."""
    data = ROOT / "tests/data/baseline_small.json"
    doc = json.loads(data.read_text())
    size = doc["workloads"][0]
    mixed = copy.deepcopy(size)
    mixed.update(name="mixed", kind="mixed", shares=[["store", 0.8], ["recall", 0.2]])
    mixed["ops"] = [o for o in mixed["ops"] if o["op"] in ("store", "recall")]
    mixed["ops"][0]["latency"].update(p99_ms=1.5, p99_lo_ms=1.0, p99_hi_ms=2.0)
    doc["workloads"].append(mixed)
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(doc))
    text = _soak_with_baseline(str(path))
    spec = load_spec_text(text, "<test>")
    rule = next(r for r in spec.alerts if r.name == "p99_up")
    assert rule.kind is AlertKind.PERFORMANCE_DEGRADATION and rule.baseline_file == str(path)
    got = file_baseline_p99(spec)
    sizes = {o["op"]: o["latency"]["p99_ms"] for o in size["ops"]}
    assert got == {
        Op.STORE: 1.5,  # from the mix
        Op.RECALL: mixed["ops"][1]["latency"]["p99_ms"],  # from the mix
        Op.SPREAD: sizes["spread"],  # not in the mix: from the size workload
    }
    plain = tmp_path / "plain.json"
    plain.write_text('{"baseline_p99_ms": {"store": 8.1, "recall": 15.2}}')
    assert read_p99_file(plain) == {"store": 8.1, "recall": 15.2}


def test_a_bad_baseline_file_is_a_spec_error_with_its_yaml_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "soakd-baseline", "version": 1}')
    with pytest.raises(SpecError) as info:
        load_spec_text(_soak_with_baseline(str(bad)), "<test>")
    problem = info.value.problems[0]
    assert problem.path == "alerts[0].baseline_file"
    assert problem.line is not None
    assert "created_at: missing" in problem.message
    with pytest.raises(SpecError, match="cannot read"):
        load_spec_text(_soak_with_baseline(str(tmp_path / "none.json")), "<test>")


# -- an attached target: resumable load, its process found by port ---------------------------

TINY = """\
baseline:
  sizes: [{name: tiny, memories: 300, spaces: 2}]
  mixed: null
  operations: [recall]
  step_seconds: 0.3
  resolution: 1.0
  start_rate: 200
  latency_min_seconds: 0.2
  latency_min_requests: 400
"""


@pytest.mark.slow
def test_attached_target_second_run_does_not_reload(tmp_path: Path) -> None:
    """--target-url: the target's PID is found by its port (RSS, CPU); a second run finds
    the dataset there (per-space counts) and stores nothing to load it."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    with reference("--seed", "3") as ref:
        loads = []
        for run in ("first", "second"):
            out = tmp_path / run
            done = _soakd("baseline", str(spec), "--target-url", ref.url, "--out", str(out))
            assert done.returncode == 0, done.stderr[-3000:]
            b = from_json((out / "baseline.json").read_text())
            assert b.target == "attached" and b.target_url == ref.url
            w = b.workloads[0]
            assert w.spaces == ("bl_tiny_01", "bl_tiny_02")
            assert w.resources.pid == ref.pid and w.resources.rss_bytes
            loads.append(w.load)
        assert (loads[0].memories_before, loads[0].stored) == (0, 300)
        assert loads[1].stored == 0
        assert loads[1].memories_before is not None and loads[1].memories_before >= 300
        assert "nothing to load" in done.stderr


def test_a_stretch_slower_than_the_rest_widens_the_p99_bounds() -> None:
    """The order-statistic bounds of a steady run, widened when one stretch ran slower."""
    steady, bumpy = Tally("recall"), Tally("recall")
    for t in (steady, bumpy):
        t.stretches = [Histogram() for _ in range(STRETCHES)]
        t.stretch_ns = 1_000_000_000
    for i in range(4000):
        ms = 1.0 + (i % 100) / 100.0  # 1.00 .. 1.99 ms, the same in every stretch
        for t, slow in ((steady, 1.0), (bumpy, 3.0 if i >= 3000 else 1.0)):
            sent = (i // 1000) * 10**9  # stretch i // 1000
            done = sent + int(ms * slow * 1e6)
            t.on_result(OpResult(Op.RECALL, "s", sent, sent, done, Outcome.OK))
    a, b = latency_of(steady, 100.0, 40.0), latency_of(bumpy, 100.0, 40.0)
    assert len(a.p99_stretches_ms) == STRETCHES == len(b.p99_stretches_ms)
    assert a.p99_hi_ms < 2.1
    assert b.p99_hi_ms >= max(b.p99_stretches_ms) > 5.0  # the slow last stretch


async def test_a_lucky_pass_far_above_resumes_the_search_below_it() -> None:
    """Capacity 1000/s; 1600/s passes once by luck: the search bisects again under it."""
    seen: dict[float, int] = {}

    async def trial(rate: float) -> Step:
        seen[rate] = seen.get(rate, 0) + 1
        ok = rate <= 1000 or (rate == 1600 and seen[rate] == 1)
        return Step(rate, 1, 10, 10, 0, 0, rate, 1.0, ok, "ok" if ok else "too fast")

    thr = await search(trial, start_rate=100, max_rate=10_000, resolution=0.1)
    assert thr.lo_per_s <= 1000 < (thr.hi_per_s or 0)
    assert (thr.hi_per_s or 0) / thr.lo_per_s <= 1.1
    assert seen[thr.per_s] >= 1 and seen[1600] == 2
