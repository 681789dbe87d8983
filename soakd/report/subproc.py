"""Write reports in a child process, so a checkpoint does not disturb the live run.

A 7-day report costs ~9 s of CPU. Run in a thread of the daemon
(``asyncio.to_thread``), it shares the GIL with the event loop that paces the
load, and the loop's lateness lands in the measured response times. Measured on
this 2-core machine (``bench/report_7day.py --lateness``: a 10 ms asyncio
ticker, three rounds, 7-day store):

============================  ==========  ==========
while ...                     p99         max
============================  ==========  ==========
nothing runs                  2.5-7 ms    4-24 ms
a report runs in a thread     19-40 ms    39-99 ms
a report runs in a child      3-13 ms     4-35 ms
============================  ==========  ==========

:func:`write_reports_subprocess` runs the same code in ``python -m
soakd.report`` (at a lower CPU priority) and reads the result back from the
JSON it wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path

from soakd.report.data import ReportExtras
from soakd.report.model import Criterion
from soakd.report.writer import ReportResult


class ReportProcessError(RuntimeError):
    """The report child failed or timed out."""


def _criteria(doc: dict[str, object]) -> tuple[Criterion, ...]:
    raw = doc.get("criteria")
    out: list[Criterion] = []
    for c in raw if isinstance(raw, list) else []:
        out.append(
            Criterion(
                key=str(c["key"]),
                name=str(c["name"]),
                passed=bool(c["passed"]),
                measured=None if c["measured"] is None else float(c["measured"]),
                threshold=None if c["threshold"] is None else float(c["threshold"]),
                unit=str(c["unit"]),
                comparison=str(c["comparison"]),
                detail=str(c["detail"]),
                source=str(c["source"]),
                applicable=bool(c["applicable"]),
            )
        )
    return tuple(out)


def result_from_json(out_dir: Path, basename: str) -> ReportResult:
    """Rebuild a :class:`ReportResult` from the files a report run left in ``out_dir``."""
    paths = tuple(out_dir / f"{basename}.{ext}" for ext in ("json", "md", "html"))
    doc = json.loads(paths[0].read_text(encoding="utf-8"))
    return ReportResult(str(doc["verdict"]), paths, _criteria(doc))


async def write_reports_subprocess(
    state_dir: Path,
    out_dir: Path,
    *,
    now: float,
    extra: ReportExtras | None = None,
    basename: str = "report",
    timeout_s: float = 600.0,
    nice: int = 10,
) -> ReportResult:
    """Run ``python -m soakd.report`` on ``state_dir`` and return its result.

    The child reads the spec the run stored; ``extra`` carries the live
    integrity counters (target rates come from the spec).
    """
    x = extra or ReportExtras()
    args = [
        sys.executable,
        "-m",
        "soakd.report",
        str(state_dir),
        "--out",
        str(out_dir),
        "--basename",
        basename,
        "--now",
        repr(now),
        "--nice",
        str(nice),
        "--integrity",
        f"{x.integrity_checked},{x.integrity_lost},{x.integrity_corrupted}",
    ]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout_s):
            _out, err = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise ReportProcessError(f"report child timed out after {timeout_s:g} s") from None
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace")[-2000:]
        raise ReportProcessError(f"report child exited {proc.returncode}: {tail}")
    return result_from_json(out_dir, basename)
