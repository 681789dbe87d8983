"""Column reads straight from the run store's SQLite file, for long runs.

``RunStore.samples()`` / ``intervals()`` build one dataclass per row, which is
right for the rules' short windows but costs ~20 us a row: 12 s of a 7-day
report's budget for the samples alone. When the reader is a run store (it has a
``db_path``), this module opens its OWN read-only connection to that file and
selects only the columns the report uses, as plain tuples.

The coupling is to the store's table and column names (``samples`` columns are
:class:`~soakd.model.Sample`'s field names; ``intervals`` has ``end_``). Any
SQLite error (a changed schema) makes :func:`open_store` return None, or the
read raise :class:`FastReadError`, and callers use the RunReader protocol
instead; tests/test_report_fastread.py checks both paths give the same report.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from soakd.model import IntervalRecord, Op, Sample

#: t, pid, rss, heap, cpu_user_s, cpu_system_s, memories
SampleRow = tuple[float, Any, Any, Any, Any, Any, Any]
#: start, end, count, ok, errors, dropped, late, response_hist, service_hist
IntervalRow = tuple[float, float, int, int, Mapping[str, int], int, int, bytes, bytes]

_SAMPLE_SQL = (
    "SELECT t, pid, rss_bytes, heap_bytes, cpu_user_s, cpu_system_s, memories "
    "FROM samples WHERE rowid > ? ORDER BY rowid LIMIT ?"
)
_INTERVAL_SQL = (
    "SELECT start, end_, count, ok, errors, dropped, late, response_hist, service_hist "
    "FROM intervals WHERE op = ? AND start >= ? AND start < ? ORDER BY start"
)


class FastReadError(RuntimeError):
    """The store's file did not have the expected shape."""


def open_store(reader: object) -> sqlite3.Connection | None:
    """A read-only connection to ``reader``'s SQLite file, or None if it has none."""
    path = getattr(reader, "db_path", None)
    if not isinstance(path, Path) or not path.is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("SELECT t, pid, rss_bytes, memories FROM samples LIMIT 1").fetchall()
        conn.execute("SELECT start, end_, response_hist FROM intervals LIMIT 1").fetchall()
    except sqlite3.Error:
        return None
    return conn


def sample_rows(conn: sqlite3.Connection, chunk: int = 100_000) -> Iterator[list[SampleRow]]:
    """Every sample as a :data:`SampleRow`, in insertion (= time) order, chunk by chunk."""
    last = 0
    sql = _SAMPLE_SQL.replace("SELECT t,", "SELECT rowid, t,")
    while True:
        try:
            rows = conn.execute(sql, (last, chunk)).fetchall()
        except sqlite3.Error as exc:
            raise FastReadError(str(exc)) from exc
        if not rows:
            return
        last = int(rows[-1][0])
        yield [r[1:] for r in rows]


def _errors(text: object) -> Mapping[str, int]:
    if text == "{}" or not text:
        return {}
    parsed = json.loads(str(text))
    return {str(k): int(v) for k, v in parsed.items()}


def interval_rows(
    conn: sqlite3.Connection, op: Op, since: float, until: float
) -> list[IntervalRow]:
    """``op``'s records with ``since <= start < until`` (no lag histogram: unused)."""
    try:
        rows = conn.execute(_INTERVAL_SQL, (op.value, since, until)).fetchall()
    except sqlite3.Error as exc:
        raise FastReadError(str(exc)) from exc
    return [
        (
            float(r[0]),
            float(r[1]),
            int(r[2]),
            int(r[3]),
            _errors(r[4]),
            int(r[5]),
            int(r[6]),
            bytes(r[7]),
            bytes(r[8]),
        )
        for r in rows
    ]


def sample_row(s: Sample) -> SampleRow:
    """The protocol path's equivalent of one :data:`SampleRow`."""
    return (s.t, s.pid, s.rss_bytes, s.heap_bytes, s.cpu_user_s, s.cpu_system_s, s.memories)


def interval_row(r: IntervalRecord) -> IntervalRow:
    """The protocol path's equivalent of one :data:`IntervalRow`."""
    return (
        r.start,
        r.end,
        r.count,
        r.ok,
        r.errors,
        r.dropped,
        r.late,
        r.response_hist,
        r.service_hist,
    )
