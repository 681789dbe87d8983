"""The durable run store: one SQLite file (WAL) in the state dir.

Everything the rules and the report need goes here in batches, one
transaction per flush, so a crash of soakd loses at most one flush interval
and a restarted soakd resumes the same run. What soakd keeps in memory stays
bounded; older data is read back from here.

All methods are blocking: the daemon calls them through ``asyncio.to_thread``.
One connection is shared under a lock (SQLite serialises writers anyway);
the alert outbox opens its own connection to the same file.

Why one module of more than 600 lines: it is the run store's whole SQL (schema,
migrations, batch writes, every read, retention); kept together, a column
change is made and checked in one place.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import structlog

from soakd.errors import StartupError, UsageError
from soakd.model import (
    Alert,
    AlertState,
    AlertTransition,
    ConsolidationRun,
    Event,
    EventKind,
    IntervalRecord,
    Op,
    RunInfo,
    Sample,
)
from soakd.stats import merge_blobs

log = structlog.get_logger(__name__)

DB_NAME = "run.sqlite"
#: Counter: interval records before this (wall seconds) have been compacted.
COMPACTED_UNTIL = "intervals_compacted_until"

#: The samples table's columns, each migration's additions in turn. Written
#: out, not derived from :class:`Sample`: a new Sample field needs a migration
#: that adds its column (tests/test_store.py checks every field has one).
SAMPLE_COLUMNS_V1: tuple[str, ...] = (
    "t",
    "pid",
    "rss_bytes",
    "heap_bytes",
    "uss_bytes",
    "cpu_user_s",
    "cpu_system_s",
    "read_bytes",
    "write_bytes",
    "num_fds",
    "num_threads",
    "data_dir_bytes",
    "memories",
    "self_rss_bytes",
    "self_cpu_s",
    "loop_lag_s",
)
SAMPLE_COLUMNS_V2: tuple[str, ...] = (
    "rss_anon_bytes",
    "rss_file_bytes",
    "rss_shmem_bytes",
    "mem_available_bytes",
)
SAMPLE_COLUMNS: tuple[str, ...] = SAMPLE_COLUMNS_V1 + SAMPLE_COLUMNS_V2
# SQLite hands integers back as floats when the column is REAL; restore them.
_INT_SAMPLE_FIELDS = frozenset(f.name for f in fields(Sample) if str(f.type).startswith("int"))

_INTERVAL_COLUMNS = (
    "op, start, end_, count, ok, errors, dropped, late, response_hist, service_hist, lag_hist"
)
_INTERVAL_INSERT = f"INSERT INTO intervals ({_INTERVAL_COLUMNS}) VALUES ({', '.join('?' * 11)})"
_CONSOLIDATION_COLUMNS = "space, t, generated_at, generated_s, interval_s"
_EVENT_COLUMNS = "t, kind, message, detail"
_ALERT_STATE_COLUMNS = "rule, labels, state, since, value, summary, severity, annotations"
_ALERT_HISTORY_COLUMNS = "t, rule, labels, old, new, value, summary"

#: Read-backs not yet judged, replaced whole at each flush (added within schema 1:
#: a store written by an older soakd gets the table when it is migrated to 2).
_PENDING_TABLE = """CREATE TABLE IF NOT EXISTS integrity_pending (
    space TEXT NOT NULL, memory_id TEXT NOT NULL, due REAL NOT NULL
)"""

_V1: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS run (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    run_id TEXT NOT NULL, spec_fingerprint TEXT NOT NULL, spec_text TEXT NOT NULL,
    started_at REAL NOT NULL, planned_duration_s REAL NOT NULL, ended_at REAL,
    status TEXT NOT NULL, target_url TEXT NOT NULL
)""",
    f"CREATE TABLE IF NOT EXISTS samples ({', '.join(f'{n} REAL' for n in SAMPLE_COLUMNS_V1)})",
    "CREATE INDEX IF NOT EXISTS samples_t ON samples (t)",
    """CREATE TABLE IF NOT EXISTS intervals (
    op TEXT NOT NULL, start REAL NOT NULL, end_ REAL NOT NULL, count INTEGER NOT NULL,
    ok INTEGER NOT NULL, errors TEXT NOT NULL, dropped INTEGER NOT NULL, late INTEGER NOT NULL,
    response_hist BLOB NOT NULL, service_hist BLOB NOT NULL, lag_hist BLOB NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS intervals_op_start ON intervals (op, start)",
    """CREATE TABLE IF NOT EXISTS consolidation_runs (
    space TEXT NOT NULL, t REAL NOT NULL, generated_at TEXT NOT NULL,
    generated_s REAL NOT NULL, interval_s REAL
)""",
    "CREATE INDEX IF NOT EXISTS consolidation_t ON consolidation_runs (t)",
    """CREATE TABLE IF NOT EXISTS events (
    t REAL NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL, detail TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS events_kind ON events (kind, t)",
    """CREATE TABLE IF NOT EXISTS alert_states (
    rule TEXT NOT NULL, labels TEXT NOT NULL, state TEXT NOT NULL, since REAL NOT NULL,
    value REAL, summary TEXT NOT NULL, severity TEXT NOT NULL, annotations TEXT NOT NULL,
    PRIMARY KEY (rule, labels)
)""",
    """CREATE TABLE IF NOT EXISTS alert_history (
    t REAL NOT NULL, rule TEXT NOT NULL, labels TEXT NOT NULL, old TEXT NOT NULL,
    new TEXT NOT NULL, value REAL, summary TEXT NOT NULL
)""",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    _PENDING_TABLE,
)
_V2: tuple[str, ...] = (
    *(f"ALTER TABLE samples ADD COLUMN {n} REAL" for n in SAMPLE_COLUMNS_V2),
    _PENDING_TABLE,  # a schema-1 store from before the table gets it here
)

#: ``PRAGMA user_version`` -> the statements that bring a store from the
#: version before to it. Append only: a released migration never changes.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = ((1, _V1), (2, _V2))
SCHEMA_VERSION = MIGRATIONS[-1][0]


#: A read-back waiting to be judged: (space, memory_id, due as wall seconds).
PendingRow = tuple[str, str, float]


@dataclass
class Batch:
    """What accumulated since the last flush; written in one transaction."""

    samples: list[Sample] = field(default_factory=list)
    intervals: list[IntervalRecord] = field(default_factory=list)
    consolidation_runs: list[ConsolidationRun] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    alert_transitions: list[AlertTransition] = field(default_factory=list)
    alert_states: list[Alert] | None = None  # None: unchanged; a list replaces all
    counters: dict[str, int] = field(default_factory=dict)  # absolute values
    # Read-backs not yet judged, (space, memory_id, due wall time); None:
    # unchanged, a list replaces all. Written with the counters they match.
    integrity_pending: list[PendingRow] | None = None

    def __len__(self) -> int:
        return (
            len(self.samples)
            + len(self.intervals)
            + len(self.consolidation_runs)
            + len(self.events)
            + len(self.alert_transitions)
            + (0 if self.alert_states is None else len(self.alert_states))
            + len(self.counters)
            + (0 if self.integrity_pending is None else 1)
        )

    def take(self) -> Batch:
        """Hand over the contents and start empty (the caller keeps the object)."""
        out = Batch(
            self.samples,
            self.intervals,
            self.consolidation_runs,
            self.events,
            self.alert_transitions,
            self.alert_states,
            dict(self.counters),
            self.integrity_pending,
        )
        self.samples, self.intervals, self.consolidation_runs = [], [], []
        self.events, self.alert_transitions, self.alert_states = [], [], None
        self.counters = {}
        self.integrity_pending = None
        return out


def _labels_key(labels: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"))


def _range(column: str, since: float | None, until: float | None) -> tuple[str, list[float]]:
    clauses: list[str] = []
    args: list[float] = []
    if since is not None:
        clauses.append(f"{column} >= ?")
        args.append(since)
    if until is not None:
        clauses.append(f"{column} <= ?")
        args.append(until)
    return (" AND ".join(clauses) or "1=1"), args


class RunStore:
    """A run's durable state; implements :class:`soakd.model.RunReader`."""

    def __init__(
        self,
        state_dir: Path,
        conn: sqlite3.Connection,
        sample_columns: tuple[str, ...] = SAMPLE_COLUMNS,
    ) -> None:
        self.state_dir = state_dir
        self.db_path = state_dir / DB_NAME
        self._conn = conn
        self._lock = threading.Lock()
        # The columns this file's samples table has: an older store opened
        # read-only (``soakd report``) lacks the newer ones, read back as None.
        self._sample_columns = sample_columns

    # -- opening ---------------------------------------------------------------

    @staticmethod
    def exists(state_dir: Path) -> bool:
        return (state_dir / DB_NAME).is_file()

    @classmethod
    def _connect(cls, path: Path, readonly: bool) -> sqlite3.Connection:
        uri = f"file:{path}?mode={'ro' if readonly else 'rwc'}"
        try:
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10.0)
            if not readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                # FULL: a commit survives power loss too; one fsync per flush is cheap.
                conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=10000")
        except sqlite3.Error as exc:
            raise StartupError(f"cannot open run store {path}: {exc}") from exc
        return conn

    @classmethod
    def create(cls, state_dir: Path, info: RunInfo) -> RunStore:
        """Start a new run in ``state_dir`` (created if missing).

        The store is built under a temporary name and renamed into place, so a
        kill at any moment leaves either no run or a whole one, never a store
        without its run record.
        """
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create state dir {state_dir}: {exc.strerror}") from exc
        if cls.exists(state_dir):
            raise UsageError(f"{state_dir} already holds a run; resume it or pass --new-run")
        tmp = state_dir / (DB_NAME + ".creating")
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
        conn = cls._connect(tmp, readonly=False)
        try:
            migrate(conn, 0)
            with conn:
                conn.execute(
                    "INSERT INTO run (id, run_id, spec_fingerprint, spec_text, started_at,"
                    " planned_duration_s, ended_at, status, target_url)"
                    " VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        info.run_id,
                        info.spec_fingerprint,
                        info.spec_text,
                        info.started_at,
                        info.planned_duration_s,
                        info.ended_at,
                        info.status,
                        info.target_url,
                    ),
                )
            conn.close()  # checkpoints the WAL into the file before the rename
            tmp.replace(state_dir / DB_NAME)
            _fsync_dir(state_dir)
        except (sqlite3.Error, OSError) as exc:
            conn.close()
            raise StartupError(f"cannot write run store in {state_dir}: {exc}") from exc
        return cls.open(state_dir)

    @classmethod
    def open(cls, state_dir: Path, *, readonly: bool = False) -> RunStore:
        """Open an existing run store (for resume, ``soakd report`` and ``soakd status``)."""
        path = state_dir / DB_NAME
        if not path.is_file():
            raise UsageError(f"{state_dir} holds no soakd run (no {DB_NAME})")
        conn = cls._connect(path, readonly=readonly)
        try:
            version = schema_version(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StartupError(f"{path} is not a readable soakd run store: {exc}") from exc
        if version > SCHEMA_VERSION:
            conn.close()
            raise StartupError(
                f"{path} has run-store schema {version}, written by a newer soakd; this soakd "
                f"knows schemas up to {SCHEMA_VERSION}: run the newer soakd on this state dir"
            )
        if version < 1:
            conn.close()
            raise StartupError(f"{path} is not a soakd run store (no schema version)")
        if not readonly and version < SCHEMA_VERSION:
            try:
                migrate(conn, version)
            except sqlite3.Error as exc:
                conn.close()
                raise StartupError(
                    f"cannot upgrade run store {path} from schema {version} to"
                    f" {SCHEMA_VERSION}: {exc}"
                ) from exc
            log.info("run_store_upgraded", path=str(path), old=version, new=SCHEMA_VERSION)
        try:
            present = {str(r[1]) for r in conn.execute("PRAGMA table_info(samples)")}
        except sqlite3.Error as exc:
            conn.close()
            raise StartupError(f"{path} is not a readable soakd run store: {exc}") from exc
        return cls(state_dir, conn, tuple(c for c in SAMPLE_COLUMNS if c in present))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- writing ---------------------------------------------------------------

    def write(self, batch: Batch) -> None:
        """Write a whole batch in one transaction (all of it, or none of it)."""
        conn = self._conn
        with self._lock, conn:
            if batch.samples:
                cols = self._sample_columns
                conn.executemany(
                    f"INSERT INTO samples ({', '.join(cols)})"
                    f" VALUES ({', '.join('?' * len(cols))})",
                    [tuple(getattr(s, n) for n in cols) for s in batch.samples],
                )
            if batch.intervals:
                conn.executemany(
                    _INTERVAL_INSERT,
                    [
                        (
                            r.op.value,
                            r.start,
                            r.end,
                            r.count,
                            r.ok,
                            json.dumps(dict(r.errors), sort_keys=True),
                            r.dropped,
                            r.late,
                            r.response_hist,
                            r.service_hist,
                            r.lag_hist,
                        )
                        for r in batch.intervals
                    ],
                )
            if batch.consolidation_runs:
                conn.executemany(
                    f"INSERT INTO consolidation_runs ({_CONSOLIDATION_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?)",
                    [
                        (c.space, c.t, c.generated_at, c.generated_s, c.interval_s)
                        for c in batch.consolidation_runs
                    ],
                )
            if batch.events:
                conn.executemany(
                    f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?)",
                    [
                        (e.t, e.kind, e.message, json.dumps(dict(e.detail), default=str))
                        for e in batch.events
                    ],
                )
            write_alerts(conn, batch.alert_transitions, batch.alert_states)
            if batch.integrity_pending is not None:
                conn.execute("DELETE FROM integrity_pending")
                conn.executemany(
                    "INSERT INTO integrity_pending (space, memory_id, due) VALUES (?, ?, ?)",
                    batch.integrity_pending,
                )
            if batch.counters:
                conn.executemany(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    list(batch.counters.items()),
                )

    def compact_intervals(self, until: float, width_s: float, max_span_s: float = 6 * 3600) -> int:
        """Merge the interval records of ``[compacted_until, until)`` into ``width_s`` ones.

        Retention for week-long runs: full resolution (10 s records) for the
        recent past, ``width_s`` records for what is older. Only whole buckets
        are merged, at most ``max_span_s`` per call (bounded work), and the
        watermark lives in ``counters`` so nothing is merged twice. Returns how
        many records were removed.
        """
        counters = self.counters()
        start = float(counters.get(COMPACTED_UNTIL, 0))
        if start == 0.0:
            row = self._one("SELECT MIN(start) FROM intervals")
            if row is None or row[0] is None:
                return 0
            start = math.floor(float(row[0]) / width_s) * width_s
        end = math.floor(min(until, start + max_span_s) / width_s) * width_s
        if end <= start:
            return 0
        rows = self._all(
            f"SELECT rowid, {_INTERVAL_COLUMNS} FROM intervals"
            " WHERE start >= ? AND start < ? ORDER BY op, start",
            (start, end),
        )
        groups: dict[tuple[str, int], list[Any]] = {}
        for r in rows:
            groups.setdefault((str(r[1]), int(float(r[2]) // width_s)), []).append(r)
        removed = 0
        with self._lock, self._conn:
            for group in groups.values():
                if len(group) < 2:
                    continue
                merged = _merge_rows(group)
                self._conn.executemany(
                    "DELETE FROM intervals WHERE rowid = ?", [(r[0],) for r in group]
                )
                self._conn.execute(_INTERVAL_INSERT, merged)
                removed += len(group) - 1
            self._conn.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (COMPACTED_UNTIL, int(end)),
            )
        return removed

    def set_status(self, status: str, ended_at: float | None) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE run SET status = ?, ended_at = ? WHERE id = 1", (status, ended_at)
            )

    def thin_samples(self, before: float, keep_every_s: int) -> int:
        """Keep one sample per ``keep_every_s`` seconds older than ``before`` (disk low)."""
        with self._lock, self._conn:
            cur = self._conn.execute(
                "DELETE FROM samples WHERE t < ? AND rowid NOT IN ("
                " SELECT MIN(rowid) FROM samples WHERE t < ? GROUP BY CAST(t / ? AS INTEGER))",
                (before, before, keep_every_s),
            )
            return cur.rowcount

    # -- reading ---------------------------------------------------------------

    # Rows are ``Any``: SQLite's typing is per value, and each reader below
    # converts its columns explicitly.
    def _one(self, sql: str, args: Sequence[object] = ()) -> Any:
        with self._lock:
            return self._conn.execute(sql, args).fetchone()

    def _all(self, sql: str, args: Sequence[object] = ()) -> list[Any]:
        with self._lock:
            return list(self._conn.execute(sql, args).fetchall())

    def run_info(self) -> RunInfo:
        row = self._one(
            "SELECT run_id, spec_fingerprint, spec_text, started_at, planned_duration_s,"
            " ended_at, status, target_url FROM run WHERE id = 1"
        )
        if row is None:
            raise UsageError(f"{self.db_path} holds no run record")
        return RunInfo(*row)

    def set_planned_duration(self, planned_duration_s: float) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE run SET planned_duration_s = ? WHERE id = 1", (planned_duration_s,)
            )

    def samples(self, since: float | None = None, until: float | None = None) -> list[Sample]:
        where, args = _range("t", since, until)
        cols = ", ".join(self._sample_columns)
        rows = self._all(f"SELECT {cols} FROM samples WHERE {where} ORDER BY t", args)
        return [_sample(self._sample_columns, r) for r in rows]

    def iter_samples(
        self, since: float | None = None, until: float | None = None, chunk: int = 50_000
    ) -> Iterator[list[Sample]]:
        """Samples in chunks, so a 7-day report need not hold 600k rows at once."""
        where, args = _range("t", since, until)
        last_rowid = 0
        cols = ", ".join(self._sample_columns)
        while True:
            rows = self._all(
                f"SELECT rowid, {cols} FROM samples WHERE {where} AND rowid > ?"
                " ORDER BY rowid LIMIT ?",
                [*args, last_rowid, chunk],
            )
            if not rows:
                return
            last_rowid = int(rows[-1][0])
            yield [_sample(self._sample_columns, r[1:]) for r in rows]

    def sample_count(self) -> int:
        row = self._one("SELECT COUNT(*) FROM samples")
        return int(row[0]) if row else 0

    def intervals(
        self, op: Op | None = None, since: float | None = None, until: float | None = None
    ) -> list[IntervalRecord]:
        where, args = _range("start", since, until)
        params: list[object] = list(args)
        if op is not None:
            where += " AND op = ?"
            params.append(op.value)
        rows = self._all(
            f"SELECT {_INTERVAL_COLUMNS} FROM intervals WHERE {where} ORDER BY start", params
        )
        return [
            IntervalRecord(
                op=Op(str(r[0])),
                start=float(r[1]),
                end=float(r[2]),
                count=int(r[3]),
                ok=int(r[4]),
                errors=json.loads(str(r[5])),
                dropped=int(r[6]),
                late=int(r[7]),
                response_hist=bytes(r[8]),
                service_hist=bytes(r[9]),
                lag_hist=bytes(r[10]),
            )
            for r in rows
        ]

    def consolidation_runs(self, since: float | None = None) -> list[ConsolidationRun]:
        where, args = _range("t", since, None)
        rows = self._all(
            f"SELECT {_CONSOLIDATION_COLUMNS} FROM consolidation_runs WHERE {where} ORDER BY t",
            args,
        )
        return [ConsolidationRun(*r) for r in rows]

    def events(self, kinds: tuple[EventKind, ...] | None = None) -> list[Event]:
        if kinds:
            marks = ", ".join("?" * len(kinds))
            rows = self._all(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE kind IN ({marks}) ORDER BY t", kinds
            )
        else:
            rows = self._all(f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY t")
        return [
            Event(float(r[0]), EventKind(str(r[1])), str(r[2]), json.loads(str(r[3]))) for r in rows
        ]

    def alert_states(self) -> list[Alert]:
        rows = self._all(f"SELECT {_ALERT_STATE_COLUMNS} FROM alert_states ORDER BY rule, labels")
        return [
            Alert(
                rule=str(r[0]),
                labels=json.loads(str(r[1])),
                state=AlertState(str(r[2])),
                since=float(r[3]),
                value=None if r[4] is None else float(r[4]),
                summary=str(r[5]),
                severity=str(r[6]),
                annotations=json.loads(str(r[7])),
            )
            for r in rows
        ]

    def alert_history(self) -> list[AlertTransition]:
        rows = self._all(f"SELECT {_ALERT_HISTORY_COLUMNS} FROM alert_history ORDER BY t, rowid")
        return [
            AlertTransition(
                t=float(r[0]),
                rule=str(r[1]),
                labels=json.loads(str(r[2])),
                old=AlertState(str(r[3])),
                new=AlertState(str(r[4])),
                value=None if r[5] is None else float(r[5]),
                summary=str(r[6]),
            )
            for r in rows
        ]

    def counters(self) -> dict[str, int]:
        return {str(n): int(v) for n, v in self._all("SELECT name, value FROM counters")}

    def integrity_pending(self) -> list[PendingRow]:
        """Read-backs not yet judged at the last flush, oldest due first."""
        try:
            rows = self._all("SELECT space, memory_id, due FROM integrity_pending ORDER BY due")
        except sqlite3.OperationalError:  # a store from before the table, opened read-only
            return []
        return [(str(r[0]), str(r[1]), float(r[2])) for r in rows]

    def last_sample_time(self) -> float | None:
        row = self._one("SELECT MAX(t) FROM samples")
        return None if row is None or row[0] is None else float(row[0])


def _sample(columns: Sequence[str], row: Sequence[Any]) -> Sample:
    values = {
        name: (int(v) if v is not None and name in _INT_SAMPLE_FIELDS else v)
        for name, v in zip(columns, row, strict=True)
    }
    return Sample(**values)


def schema_version(conn: sqlite3.Connection) -> int:
    """The store's schema: ``PRAGMA user_version``, or 1 for a store from before it was used.

    Schema 1 was recorded only in ``meta``; 0 means an empty file (no schema yet).
    """
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version:
        return version
    tables = conn.execute("SELECT name FROM sqlite_master WHERE name = 'meta'").fetchone()
    if tables is None:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row is not None else 0


def migrate(conn: sqlite3.Connection, version: int, until: int = SCHEMA_VERSION) -> None:
    """Bring the store from ``version`` to ``until``, one migration per transaction.

    Each step and its ``user_version`` commit together: a kill mid-way leaves
    the store at a whole version, and the next open carries on from there.
    """
    for target, statements in MIGRATIONS:
        if target <= version or target > until:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in statements:
                conn.execute(sql)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(target),),
            )
            conn.execute(f"PRAGMA user_version = {int(target)}")
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def write_alerts(
    conn: sqlite3.Connection,
    transitions: Sequence[AlertTransition],
    states: Sequence[Alert] | None,
) -> None:
    """Add alert history rows and replace the alert states (None: unchanged), in the caller's
    transaction: the dispatcher commits them with the outbox rows they notify."""
    if transitions:
        conn.executemany(
            f"INSERT INTO alert_history ({_ALERT_HISTORY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (a.t, a.rule, _labels_key(a.labels), a.old, a.new, a.value, a.summary)
                for a in transitions
            ],
        )
    if states is not None:
        conn.execute("DELETE FROM alert_states")
        conn.executemany(
            f"INSERT INTO alert_states ({_ALERT_STATE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    a.rule,
                    _labels_key(a.labels),
                    a.state.value,
                    a.since,
                    a.value,
                    a.summary,
                    a.severity,
                    json.dumps(dict(a.annotations)),
                )
                for a in states
            ],
        )


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX: the directory entry itself)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _merge_rows(group: Sequence[Any]) -> tuple[object, ...]:
    """One interval row (without rowid) that sums ``group``'s counts and merges its histograms."""
    errors: dict[str, int] = {}
    for r in group:
        for key, n in json.loads(str(r[6])).items():
            errors[key] = errors.get(key, 0) + int(n)
    return (
        group[0][1],
        min(float(r[2]) for r in group),
        max(float(r[3]) for r in group),
        sum(int(r[4]) for r in group),
        sum(int(r[5]) for r in group),
        json.dumps(errors, sort_keys=True),
        sum(int(r[7]) for r in group),
        sum(int(r[8]) for r in group),
        merge_blobs(bytes(r[9]) for r in group).encode(),
        merge_blobs(bytes(r[10]) for r in group).encode(),
        merge_blobs(bytes(r[11]) for r in group).encode(),
    )
