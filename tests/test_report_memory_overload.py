"""The report's memory verdict and overload figures (issue 17), on synthetic run stores.

Which memory was judged and each part of RSS are shown; a PASS beside a figure
beyond its threshold says why first; dropped arrivals are failures of class
``dropped``, stated as the share that got no response, and fail performance.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from soakd.model import Sample
from soakd.report import build_model
from soakd.report import markdown as md
from soakd.report.criteria import _explained, evaluate, memory_leak
from soakd.report.html import render as render_html
from soakd.report.jsonreport import render as render_json
from soakd.report.model import Criterion
from soakd.report.synthetic import Knobs, make_run
from soakd.rules import leak_fit
from soakd.store import Batch

KNOBS = Knobs(duration_s=1800.0)
MB = 1_000_000
GB = 1_000_000_000


def test_the_report_names_the_judged_memory_and_shows_each_part(tmp_path: Path) -> None:
    """Samples with the kernel's split: the memory criterion says anonymous memory was
    judged; the report shows RSS = anonymous + file-backed + shared and what is available."""
    store, spec = make_run(tmp_path / "state", KNOBS)
    end = KNOBS.started_at + KNOBS.duration_s
    batch = Batch()
    batch.samples.extend(
        Sample(
            t=end + i,
            pid=1,
            rss_bytes=21 * GB,
            heap_bytes=400 * MB,
            rss_anon_bytes=400 * MB,
            rss_file_bytes=20 * GB + 600 * MB,
            rss_shmem_bytes=0,
            mem_available_bytes=23 * GB,
        )
        for i in range(3)
    )
    store.write(batch)
    model = build_model(store, spec, now=end + 10.0)
    crit = {c.key: c for c in evaluate(model, spec)}
    assert crit["memory_leak"].name.startswith("Zero memory leaks (anonymous memory")
    assert "anonymous 0.40 GB + file-backed 20.60 GB" in crit["memory_leak"].detail
    text = md.render(model, tuple(crit.values()), "fail", "final")
    assert "file-backed 20.6 GB" in text or "file-backed 19.2 GiB" in text, text
    doc = json.loads(render_json(model, tuple(crit.values()), "fail", "final"))
    assert doc["memory"]["judged"] == "anonymous memory"
    assert doc["memory"]["parts_last"]["file_bytes"] == 20 * GB + 600 * MB


def test_a_pass_beyond_the_threshold_says_why_first(tmp_path: Path) -> None:
    """A steep but noisy anonymous-memory trend (R² < 0.8) passes, and its verdict reads
    "PASS — trend not significant (R² …)" before the figure, never a bare PASS."""
    store, spec = make_run(tmp_path / "state", KNOBS)
    model = build_model(store, spec, now=KNOBS.started_at + KNOBS.duration_s + 5.0)
    noisy = [
        Sample(
            t=KNOBS.started_at + e,
            pid=1,
            heap_bytes=300 * MB + e * 3000 + (60 * MB if int(e / 5) % 2 else 0),
        )
        for e in range(0, 3600, 5)
    ]
    fit = leak_fit(noisy, 360.0, field="heap_bytes")
    model = dataclasses.replace(model, memory=dataclasses.replace(model.memory, fit=fit))
    c = memory_leak(model, spec)
    assert c.passed and c.measured is not None and c.threshold is not None
    assert c.measured > c.threshold and c.beyond_threshold
    assert c.verdict_text.startswith("PASS — trend not significant (R² 0.")
    assert c.detail.startswith("trend not significant")
    row = next(line for line in md._criteria([c]) if "Zero memory leaks" in line)
    assert row.startswith("| ✅ PASS — trend not significant")


def test_every_pass_beyond_its_threshold_has_a_reason() -> None:
    """Whatever the criterion, a PASS beside a figure beyond its threshold gets a note;
    one within it, or a FAIL, is left as it is."""
    beyond = Criterion("x", "x", True, 12.0, 10.0, "%/day", "<=", "d", "plan")
    assert beyond.beyond_threshold
    assert _explained(beyond).verdict_text.startswith("PASS — ")
    within = dataclasses.replace(beyond, measured=9.0)
    assert _explained(within).verdict_text == "PASS"
    failed = dataclasses.replace(beyond, passed=False)
    assert _explained(failed).verdict_text == "FAIL"


def test_dropped_arrivals_are_failures_and_fail_performance(tmp_path: Path) -> None:
    """Store dropped 30 % of its arrivals: failures of class dropped, the share without a
    response is stated in the latency section, and P99 stability cannot pass."""
    store, spec = make_run(tmp_path / "state", KNOBS)
    model = build_model(store, spec, now=KNOBS.started_at + KNOBS.duration_s + 5.0)
    ops = tuple(
        dataclasses.replace(o, dropped=(o.count * 3) // 7) if o.op == "store" else o
        for o in model.ops
    )
    model = dataclasses.replace(model, ops=ops)
    crit = {c.key: c for c in evaluate(model, spec)}
    assert not crit["p99_drift"].passed
    assert crit["p99_drift"].detail.startswith("store: 30.0% of arrivals got no response")
    store_op = next(o for o in model.ops if o.op == "store")
    assert store_op.failures["dropped"] == store_op.dropped
    text = md.render(model, tuple(crit.values()), "fail", "final")
    assert "Arrivals that got no response" in text
    assert "store 30.0% (" in text
    page = render_html(model, tuple(crit.values()), "fail", "final")
    assert "<td class=num>30.0%</td>" in page and "No response:" in page
    doc = json.loads(render_json(model, tuple(crit.values()), "fail", "final"))
    assert abs(doc["operations"]["store"]["no_response_share"] - 0.3) < 0.001
    assert doc["operations"]["store"]["failures"]["dropped"] == store_op.dropped
