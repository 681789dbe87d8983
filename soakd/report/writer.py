"""Write the three reports atomically: temp file in the target dir, fsync, rename.

A reader (a person, CI, the daemon's next checkpoint) sees either the previous
complete file or the new complete file, never a half-written one, even if soakd
is killed mid-write. The model is built once and rendered three times.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from soakd.model import RunReader
from soakd.report import html, jsonreport, markdown
from soakd.report.criteria import evaluate, verdict
from soakd.report.data import ReportExtras, build_model
from soakd.report.model import Criterion
from soakd.spec.model import Spec

log = structlog.get_logger()


@dataclass(frozen=True)
class ReportResult:
    verdict: str  # "pass" | "fail"
    paths: tuple[Path, ...]  # json, md, html
    criteria: tuple[Criterion, ...]


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step (same-directory temp file + rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; a report is meant to be read
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise
    # make the rename itself durable
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _kind(basename: str) -> str:
    """``report`` is the final report; ``checkpoint-midpoint`` is checkpoint ``midpoint``."""
    if basename.startswith("checkpoint-"):
        return basename.removeprefix("checkpoint-")
    return "final" if basename == "report" else basename


def write_reports(
    reader: RunReader,
    spec: Spec,
    out_dir: Path,
    *,
    now: float,
    extra: ReportExtras | None = None,
    basename: str = "report",
) -> ReportResult:
    """Build the model once and write ``<basename>.json``, ``.md`` and ``.html``.

    Blocking (reads the store, writes files): call it through ``asyncio.to_thread``.
    """
    model = build_model(reader, spec, now=now, extra=extra)
    criteria = evaluate(model, spec)
    result = verdict(criteria)
    kind = _kind(basename)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = (
        (out_dir / f"{basename}.json", jsonreport.render(model, criteria, result, kind)),
        (out_dir / f"{basename}.md", markdown.render(model, criteria, result, kind)),
        (out_dir / f"{basename}.html", html.render(model, criteria, result, kind)),
    )
    # Render all three before writing any, so a rendering bug leaves the old set intact.
    for path, text in texts:
        atomic_write(path, text)
    log.info("report_written", verdict=result, dir=str(out_dir), basename=basename)
    return ReportResult(result, tuple(p for p, _ in texts), criteria)
