"""The durable alert outbox: tables ``outbox_*`` in the run store's SQLite file.

One row per (receiver, notification). A row is marked delivered only after
the receiver answered 2xx, in its own committed transaction, so a soakd crash
between the answer and the mark sends that one row again (at-least-once; the
``Idempotency-Key`` header and the stable fingerprint let a receiver drop the
duplicate), and a restarted soakd sends every undelivered row and never a
delivered one. ``outbox_active`` keeps the alerts that are firing (and those
resolved lately) so Alertmanager keeps getting them re-sent after a restart.

Every method is blocking (SQLite): the dispatcher calls them in a thread.
The connection is soakd's own (not the run store's), in WAL mode, shared under
a lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from soakd.alerting.payloads import AlertSnapshot

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    receiver TEXT NOT NULL,
    dedup TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    alert TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_attempt REAL,
    last_error TEXT,
    delivered REAL,
    failed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_items_pending ON outbox_items (receiver, delivered, failed, id);
CREATE TABLE IF NOT EXISTS outbox_active (
    fingerprint TEXT PRIMARY KEY,
    alert TEXT NOT NULL,
    resolved_at REAL,
    updated REAL NOT NULL
);
"""


@dataclass(frozen=True)
class OutboxItem:
    """One notification waiting for (or done with) one receiver."""

    id: int
    receiver: str
    fingerprint: str
    status: str
    alert: AlertSnapshot
    attempts: int
    created: float


@dataclass(frozen=True)
class Enqueue:
    """A notification to add: for ``receiver``, unique by ``dedup``."""

    receiver: str
    dedup: str
    alert: AlertSnapshot


class Outbox:
    """The outbox tables over one SQLite connection of our own."""

    def __init__(self, db_path: Path) -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(db_path), check_same_thread=False, timeout=10.0)
        with self._lock, self._conn:
            if str(db_path) != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=10000")
            self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def submit(
        self,
        items: Sequence[Enqueue],
        active: Sequence[AlertSnapshot],
        now: float,
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> int:
        """Add notifications and update the active set in one transaction; returns rows added.

        ``also`` writes more in the same transaction (the daemon: the alert
        states and history these rows notify), so either all of it is durable
        or none of it is. A notification whose ``dedup`` is already there (the
        same transition submitted twice, e.g. retried after a failed commit)
        is ignored.
        """
        with self._lock, self._conn:
            if also is not None:
                also(self._conn)
            before = self._conn.total_changes
            self._conn.executemany(
                "INSERT OR IGNORE INTO outbox_items (receiver, dedup, fingerprint, status, alert,"
                " created) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        i.receiver,
                        i.dedup,
                        i.alert.fingerprint,
                        i.alert.status,
                        i.alert.to_json(),
                        now,
                    )
                    for i in items
                ],
            )
            added = self._conn.total_changes - before
            self._conn.executemany(
                "INSERT INTO outbox_active (fingerprint, alert, resolved_at, updated)"
                " VALUES (?, ?, ?, ?) ON CONFLICT(fingerprint) DO UPDATE"
                " SET alert = excluded.alert, resolved_at = excluded.resolved_at,"
                " updated = excluded.updated",
                [(a.fingerprint, a.to_json(), a.ends_at, now) for a in active],
            )
        return added

    def starts_at(self, fingerprint: str) -> float | None:
        """When the active (or lately resolved) alert with this fingerprint began firing."""
        with self._lock:
            row = self._conn.execute(
                "SELECT alert FROM outbox_active WHERE fingerprint = ?", (fingerprint,)
            ).fetchone()
        return AlertSnapshot.from_json(row[0]).starts_at if row else None

    def active(self, now: float, keep_resolved_s: float) -> list[AlertSnapshot]:
        """Firing alerts and those resolved within ``keep_resolved_s``; older ones are dropped."""
        with self._lock, self._conn:
            self._conn.execute(
                "DELETE FROM outbox_active WHERE resolved_at IS NOT NULL AND resolved_at < ?",
                (now - keep_resolved_s,),
            )
            rows = self._conn.execute("SELECT alert FROM outbox_active ORDER BY fingerprint")
            return [AlertSnapshot.from_json(r[0]) for r in rows.fetchall()]

    def due(self, receiver: str, limit: int = 100) -> list[OutboxItem]:
        """Undelivered, not refused rows for ``receiver``, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, receiver, fingerprint, status, alert, attempts, created"
                " FROM outbox_items WHERE receiver = ? AND delivered IS NULL AND failed = 0"
                " ORDER BY id LIMIT ?",
                (receiver, limit),
            ).fetchall()
        return [
            OutboxItem(r[0], r[1], r[2], r[3], AlertSnapshot.from_json(r[4]), r[5], r[6])
            for r in rows
        ]

    def _update(self, sql: str, args: tuple[object, ...]) -> None:
        with self._lock, self._conn:
            self._conn.execute(sql, args)

    def mark_delivered(self, item_id: int, now: float) -> None:
        self._update(
            "UPDATE outbox_items SET delivered = ?, attempts = attempts + 1, last_attempt = ?,"
            " last_error = NULL WHERE id = ?",
            (now, now, item_id),
        )

    def mark_attempt(self, item_id: int, now: float, error: str) -> None:
        """A failed attempt worth retrying."""
        self._update(
            "UPDATE outbox_items SET attempts = attempts + 1, last_attempt = ?, last_error = ?"
            " WHERE id = ?",
            (now, error, item_id),
        )

    def mark_failed(self, item_id: int, now: float, error: str) -> None:
        """A permanent refusal: never retried."""
        self._update(
            "UPDATE outbox_items SET failed = 1, attempts = attempts + 1, last_attempt = ?,"
            " last_error = ? WHERE id = ?",
            (now, error, item_id),
        )

    def prune(self, before: float) -> int:
        """Delete finished rows (delivered, or refused for good) last touched before ``before``.

        Undelivered rows are never pruned: they are what a restarted soakd still
        owes on-call. Returns how many rows went.
        """
        with self._lock, self._conn:
            cur = self._conn.execute(
                "DELETE FROM outbox_items WHERE (delivered IS NOT NULL AND delivered < ?)"
                " OR (failed = 1 AND last_attempt < ?)",
                (before, before),
            )
        return cur.rowcount

    def pending(self, receiver: str | None = None) -> int:
        """Rows still to deliver (for one receiver, or all)."""
        sql = "SELECT COUNT(*) FROM outbox_items WHERE delivered IS NULL AND failed = 0"
        args: tuple[object, ...] = ()
        if receiver is not None:
            sql += " AND receiver = ?"
            args = (receiver,)
        with self._lock:
            return int(self._conn.execute(sql, args).fetchone()[0])

    def dump(self) -> list[tuple[object, ...]]:
        """Every outbox row, every column (for tests and ``soakd status``)."""
        with self._lock:
            items = self._conn.execute(
                "SELECT id, receiver, dedup, fingerprint, status, alert, created, attempts,"
                " last_attempt, last_error, delivered, failed FROM outbox_items ORDER BY id"
            ).fetchall()
            active = self._conn.execute(
                "SELECT fingerprint, alert, resolved_at, updated FROM outbox_active"
            ).fetchall()
        return [*items, *active]
