"""The final and checkpoint reports: report.json, report.md and report.html.

Public API (the daemon and the CLI call these)::

    write_reports(reader, spec, out_dir, *, now, extra=None, basename="report") -> ReportResult
    checkpoint_due(started_at, planned_s, now, done) -> str | None
    await write_reports_subprocess(state_dir, out_dir, *, now, extra=None, basename="report")

See docs/report.md for the verdict rules and the report.json schema.
"""

from __future__ import annotations

import dataclasses

from soakd.model import RunInfo
from soakd.report.checkpoints import checkpoint_due
from soakd.report.data import ReportExtras, build_model
from soakd.report.model import SCHEMA_VERSION, Criterion, ReportModel
from soakd.report.subproc import ReportProcessError, write_reports_subprocess
from soakd.report.writer import ReportResult, atomic_write, write_reports
from soakd.spec.loader import load_spec_text
from soakd.spec.model import Spec

__all__ = [
    "SCHEMA_VERSION",
    "Criterion",
    "ReportExtras",
    "ReportModel",
    "ReportProcessError",
    "ReportResult",
    "atomic_write",
    "build_model",
    "checkpoint_due",
    "stored_spec",
    "write_reports",
    "write_reports_subprocess",
]


def stored_spec(info: RunInfo, source: str) -> Spec:
    """The spec a run was started with, as stored in its run store, at its planned duration."""
    spec = load_spec_text(info.spec_text, source)
    return dataclasses.replace(spec, duration_s=info.planned_duration_s)
