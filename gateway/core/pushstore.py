"""The push queue on disk: meter alarms wait here while no HES is reachable.

Its own SQLite file (pushes.db), apart from the registry: a burst of alarms after a power
restoration writes here without touching the meter registry. Bounded by size and age; the
oldest go first when it is full, and every drop is counted (durably) so ``status`` can say so.
One row per (push, destination): each destination has its own place in the queue.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.private_files import connect_private

SCHEMA_VERSION = 1
# The write-ahead log grows to SQLite's checkpoint threshold (1,000 pages, 4 MiB) and keeps that
# size unless told otherwise, whatever max_bytes says. We checkpoint after about as many pages as
# the queue may hold (between these bounds), cut the log back to max_bytes after each checkpoint,
# and empty it when the queue empties.
_PAGE_SIZE = 4096  # SQLite's default page size
_WAL_CHECKPOINT_PAGES = range(16, 1000 + 1)
_WAL_LIMIT_BYTES = range(64 * 1024, 4 * 1024 * 1024 + 1)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS pushes (id INTEGER PRIMARY KEY AUTOINCREMENT, destination TEXT NOT NULL,"
    " meter_sap INTEGER NOT NULL, client_sap INTEGER NOT NULL, apdu BLOB NOT NULL, received_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS pushes_by_destination ON pushes (destination, id)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)


class PushStoreError(Exception):
    """The push queue file cannot be used."""


@dataclass(frozen=True, slots=True)
class QueuedPush:
    id: int
    destination: str
    meter_sap: int
    client_sap: int
    apdu: bytes
    received_at: float


class PushStore:
    """A durable FIFO of pushes per destination."""

    def __init__(self, path: Path, *, max_bytes: int, max_age_s: float, clock: Callable[[], float] = time.time) -> None:
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._clock = clock
        try:
            self._db = connect_private(path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # an alarm accepted is an alarm kept
            pages = min(max(max_bytes // _PAGE_SIZE, _WAL_CHECKPOINT_PAGES.start), _WAL_CHECKPOINT_PAGES.stop - 1)
            self._db.execute(f"PRAGMA wal_autocheckpoint = {pages}")
            limit = min(max(max_bytes, _WAL_LIMIT_BYTES.start), _WAL_LIMIT_BYTES.stop - 1)
            self._db.execute(f"PRAGMA journal_size_limit = {limit}")
            (check,) = self._db.execute("PRAGMA integrity_check").fetchone()
            if check != "ok":
                raise PushStoreError(f"{path}: integrity check failed: {check}")
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise PushStoreError(f"{path}: schema version {version} is newer than this gateway supports")
            for statement in _SCHEMA:
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise PushStoreError(f"{path}: {exc}") from None
        (self._bytes,) = self._db.execute("SELECT COALESCE(SUM(LENGTH(apdu)), 0) FROM pushes").fetchone()

    def close(self) -> None:
        self._db.close()

    def put(self, *, destinations: Sequence[str], pushes: Sequence[tuple[int, int, bytes]]) -> None:
        """Queue (meter SAP, client SAP, APDU) pushes for every destination, durably, in one transaction.

        The oldest are dropped beyond the bounds. One commit (one fsync) per burst: after a power
        restoration hundreds of meters may report at once.
        """
        if not pushes:
            return
        now = self._clock()
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany(
            "INSERT INTO pushes (destination, meter_sap, client_sap, apdu, received_at) VALUES (?, ?, ?, ?, ?)",
            [(d, meter_sap, client_sap, apdu, now) for meter_sap, client_sap, apdu in pushes for d in destinations],
        )
        self._bytes += sum(len(apdu) for _, _, apdu in pushes) * len(destinations)
        self._enforce_bounds(now)
        self._db.execute("COMMIT")

    def _enforce_bounds(self, now: float) -> None:
        """Too old, then too much: drop the oldest first, and count every drop durably."""
        dropped = self._db.execute("DELETE FROM pushes WHERE received_at < ?", (now - self._max_age_s,)).rowcount
        if dropped:
            (self._bytes,) = self._db.execute("SELECT COALESCE(SUM(LENGTH(apdu)), 0) FROM pushes").fetchone()
        while self._bytes > self._max_bytes:
            row = self._db.execute("SELECT id, LENGTH(apdu) FROM pushes ORDER BY id LIMIT 1").fetchone()
            if row is None:
                break
            self._db.execute("DELETE FROM pushes WHERE id = ?", (row[0],))
            self._bytes -= row[1]
            dropped += 1
        if dropped:
            self._db.execute("INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                             "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value", (dropped,))

    def pending(self, destination: str, *, limit: int = 64) -> list[QueuedPush]:
        """The oldest pushes still owed to ``destination``, in order."""
        rows = self._db.execute(
            "SELECT id, destination, meter_sap, client_sap, apdu, received_at FROM pushes WHERE destination = ?"
            " ORDER BY id LIMIT ?", (destination, limit))
        return [QueuedPush(*row) for row in rows]

    def delivered(self, pushes: Sequence[QueuedPush]) -> None:
        """Forget pushes that reached their destination (one transaction for the batch)."""
        if not pushes:
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany("DELETE FROM pushes WHERE id = ?", [(p.id,) for p in pushes])
        self._db.execute("COMMIT")
        self._bytes -= sum(len(p.apdu) for p in pushes)
        if self._bytes <= 0:  # all delivered: the log holds nothing worth its space
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @property
    def depth(self) -> int:
        (count,) = self._db.execute("SELECT COUNT(*) FROM pushes").fetchone()
        return int(count)

    def oldest_age_s(self) -> float | None:
        (oldest,) = self._db.execute("SELECT MIN(received_at) FROM pushes").fetchone()
        return None if oldest is None else round(self._clock() - oldest, 1)

    @property
    def dropped(self) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        return int(row[0]) if row else 0
