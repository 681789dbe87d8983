"""Reports written by a child process (python -m soakd.report) for live checkpoints."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from soakd.report import ReportExtras, write_reports
from soakd.report.subproc import ReportProcessError, write_reports_subprocess
from soakd.report.synthetic import Knobs, make_run

KNOBS = Knobs(duration_s=900.0, ended=False, integrity_checked=0)


async def test_child_report_matches_in_process(tmp_path: Path) -> None:
    """The child writes the same verdict and criteria as write_reports in process."""
    store, spec = make_run(tmp_path / "state", replace(KNOBS, leak_pct_per_day=300.0))
    now = KNOBS.started_at + 900.0
    extra = ReportExtras(integrity_checked=12, integrity_lost=0, integrity_corrupted=1)
    here = write_reports(store, spec, tmp_path / "here", now=now, extra=extra)
    store.close()
    child = await write_reports_subprocess(
        tmp_path / "state",
        tmp_path / "state" / "checkpoints",
        now=now,
        extra=extra,
        basename="checkpoint-midpoint",
        timeout_s=120.0,
    )
    assert [p.name for p in child.paths] == [
        "checkpoint-midpoint.json",
        "checkpoint-midpoint.md",
        "checkpoint-midpoint.html",
    ]
    assert all(p.stat().st_size > 0 for p in child.paths)
    assert child.verdict == here.verdict == "fail"
    assert [(c.key, c.passed) for c in child.criteria] == [(c.key, c.passed) for c in here.criteria]
    failed = {c.key for c in child.criteria if not c.passed}
    assert {"memory_leak", "data_corruption", "duration"} == failed


async def test_child_failure_is_reported(tmp_path: Path) -> None:
    """A state dir without a run makes the child fail with its error, not hang."""
    with pytest.raises(ReportProcessError, match="holds no soakd run"):
        await write_reports_subprocess(tmp_path, tmp_path / "out", now=0.0, timeout_s=120.0)
