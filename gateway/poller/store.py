"""The readings store: its own SQLite file (readings.db) in the state directory.

Why not the registry file: readings are bulk data with steady inserts and retention deletes, the
registry is small and precious (SAPs, counters) and runs an integrity check at every start. Apart,
a full or damaged readings file cannot take the SAP list with it, and either can be wiped alone.

WAL with synchronous=NORMAL: a power cut may lose the last polls (never half of one: a poll and
its readings and cursors commit together), and the next poll reads those rows again, because the
profile cursors are lost with them. Polls are the unit of publication: one MQTT message each,
marked published when the broker has acknowledged it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.private_files import connect_private

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE polls (
    id             INTEGER PRIMARY KEY,
    meter_sap      INTEGER NOT NULL,
    meter_name     TEXT,
    group_name     TEXT    NOT NULL,
    started_at     REAL    NOT NULL,
    finished_at    REAL    NOT NULL,
    outcome        TEXT    NOT NULL CHECK (outcome IN ('ok', 'partial', 'failed')),
    error          TEXT,
    attempts       INTEGER NOT NULL,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,  -- of the meter, this poll included
    published      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX polls_unpublished ON polls (id) WHERE published = 0;
CREATE INDEX polls_finished ON polls (finished_at);
CREATE TABLE readings (
    id          INTEGER PRIMARY KEY,
    poll_id     INTEGER NOT NULL REFERENCES polls (id) ON DELETE CASCADE,
    meter_sap   INTEGER NOT NULL,
    meter_name  TEXT,
    source      TEXT    NOT NULL,   -- the object read: a register, or the profile a row came from
    obis        TEXT    NOT NULL,   -- the value's own object (a profile's captured column)
    captured_at REAL    NOT NULL,   -- the meter's time of the value (UTC seconds)
    read_at     REAL    NOT NULL,
    value       TEXT    NOT NULL,   -- JSON
    dlms_type   TEXT    NOT NULL,
    scaler      INTEGER,
    unit        INTEGER
);
CREATE UNIQUE INDEX readings_once ON readings (meter_sap, source, obis, captured_at);
CREATE INDEX readings_poll ON readings (poll_id);
CREATE TABLE cursors (
    meter_sap     INTEGER NOT NULL,
    source        TEXT    NOT NULL,
    last_captured REAL    NOT NULL,  -- the newest profile row stored: the next read starts after it
    PRIMARY KEY (meter_sap, source)
);
CREATE TABLE meter_health (
    meter_sap            INTEGER PRIMARY KEY,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    failing_since        REAL,
    last_success         REAL,
    last_error           TEXT
)
"""


class ReadingsStoreError(Exception):
    """The readings file cannot be used."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One value read from a meter."""

    source: str
    obis: str
    captured_at: float
    value: Any  # JSON-able
    dlms_type: str
    scaler: int | None = None
    unit: int | None = None


@dataclass(frozen=True, slots=True)
class PollRecord:
    """What one poll of one meter produced."""

    meter_sap: int
    meter_name: str | None
    group_name: str
    started_at: float
    finished_at: float
    outcome: str  # ok, partial, failed
    error: str | None
    attempts: int
    readings: tuple[Reading, ...] = ()
    cursors: tuple[tuple[str, float], ...] = ()  # (profile, newest row time) to move on


@dataclass(frozen=True, slots=True)
class MeterHealth:
    meter_sap: int
    consecutive_failures: int
    failing_since: float | None
    last_success: float | None
    last_error: str | None


class ReadingsStore:
    """Polls, readings, profile cursors and meter health, in one SQLite file."""

    def __init__(self, path: Path, *, clock: Any = time.time) -> None:
        self.path = path
        self._clock = clock
        try:
            self._db = connect_private(path)
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # before the first table: freed pages go back
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise ReadingsStoreError(f"{path}: readings schema {version} is newer than this gateway's")
            if version < SCHEMA_VERSION:
                self._db.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise ReadingsStoreError(f"{path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    # -- writing ------------------------------------------------------------------------------

    def record(self, poll: PollRecord) -> int:
        """Store one poll with its readings and cursors in one transaction; its id."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            cursor = db.execute(
                "INSERT INTO polls (meter_sap, meter_name, group_name, started_at, finished_at, outcome, error,"
                " attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (poll.meter_sap, poll.meter_name, poll.group_name, poll.started_at, poll.finished_at, poll.outcome,
                 poll.error, poll.attempts))
            poll_id = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT OR IGNORE INTO readings (poll_id, meter_sap, meter_name, source, obis, captured_at, read_at,"
                " value, dlms_type, scaler, unit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(poll_id, poll.meter_sap, poll.meter_name, r.source, r.obis, r.captured_at, poll.finished_at,
                  json.dumps(r.value), r.dlms_type, r.scaler, r.unit) for r in poll.readings])
            db.executemany(
                "INSERT INTO cursors (meter_sap, source, last_captured) VALUES (?, ?, ?) ON CONFLICT"
                " (meter_sap, source) DO UPDATE SET last_captured = max(last_captured, excluded.last_captured)",
                [(poll.meter_sap, source, last) for source, last in poll.cursors])
            failures = self._update_health(poll)
            db.execute("UPDATE polls SET consecutive_failures = ? WHERE id = ?", (failures, poll_id))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return poll_id

    def _update_health(self, poll: PollRecord) -> int:
        if poll.outcome == "failed":
            self._db.execute(
                "INSERT INTO meter_health (meter_sap, consecutive_failures, failing_since, last_error)"
                " VALUES (?, 1, ?, ?) ON CONFLICT (meter_sap) DO UPDATE SET"
                " consecutive_failures = consecutive_failures + 1,"
                " failing_since = coalesce(failing_since, excluded.failing_since), last_error = excluded.last_error",
                (poll.meter_sap, poll.finished_at, poll.error))
        else:
            self._db.execute(
                "INSERT INTO meter_health (meter_sap, consecutive_failures, last_success, last_error)"
                " VALUES (?, 0, ?, ?) ON CONFLICT (meter_sap) DO UPDATE SET consecutive_failures = 0,"
                " failing_since = NULL, last_success = excluded.last_success, last_error = excluded.last_error",
                (poll.meter_sap, poll.finished_at, poll.error))
        (failures,) = self._db.execute("SELECT consecutive_failures FROM meter_health WHERE meter_sap = ?",
                                       (poll.meter_sap,)).fetchone()
        return int(failures)

    def name_meter(self, *, meter_sap: int, meter_name: str) -> None:
        """Give a meter's polls stored before its identity was known (failures only) its name."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in ("polls", "readings"):
                db.execute(f"UPDATE {table} SET meter_name = ? WHERE meter_sap = ? AND meter_name IS NULL",
                           (meter_name, meter_sap))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def mark_published(self, poll_ids: Iterable[int]) -> None:
        ids = [(poll_id,) for poll_id in poll_ids]
        if ids:
            self._db.executemany("UPDATE polls SET published = 1 WHERE id = ?", ids)

    def enforce_retention(self, *, max_age_s: float, max_bytes: int) -> int:
        """Drop the oldest polls past the age or size limit (published or not); how many went."""
        cutoff = self._clock() - max_age_s
        dropped = self._db.execute("DELETE FROM polls WHERE finished_at < ?", (cutoff,)).rowcount
        while self.used_bytes() > max_bytes:
            row = self._db.execute("SELECT min(id), count(*) FROM polls").fetchone()
            if not row[1]:
                break
            batch = max(1, row[1] // 10)  # a tenth at a time: few passes, no overshoot to empty
            dropped += self._db.execute("DELETE FROM polls WHERE id IN (SELECT id FROM polls ORDER BY id LIMIT ?)",
                                        (batch,)).rowcount
            self._db.execute("PRAGMA incremental_vacuum")
        if dropped:
            self._db.execute("PRAGMA incremental_vacuum")
        return int(dropped)

    # -- reading ------------------------------------------------------------------------------

    def used_bytes(self) -> int:
        (pages,) = self._db.execute("PRAGMA page_count").fetchone()
        (free,) = self._db.execute("PRAGMA freelist_count").fetchone()
        (size,) = self._db.execute("PRAGMA page_size").fetchone()
        return int((pages - free) * size)

    def cursor(self, *, meter_sap: int, source: str) -> float | None:
        row = self._db.execute("SELECT last_captured FROM cursors WHERE meter_sap = ? AND source = ?",
                               (meter_sap, source)).fetchone()
        return None if row is None else float(row[0])

    def health(self, meter_sap: int) -> MeterHealth | None:
        row = self._db.execute("SELECT meter_sap, consecutive_failures, failing_since, last_success, last_error"
                               " FROM meter_health WHERE meter_sap = ?", (meter_sap,)).fetchone()
        return None if row is None else MeterHealth(*row)

    def unpublished(self, *, limit: int, exclude: Sequence[int] = ()) -> list[dict[str, Any]]:
        """The oldest polls not yet acknowledged by the broker, with their readings; held ones (no name) wait."""
        skip = set(exclude)
        polls = []
        for row in self._db.execute(
            "SELECT id, meter_sap, meter_name, group_name, started_at, finished_at, outcome, error, attempts,"
            " consecutive_failures FROM polls WHERE published = 0 AND meter_name IS NOT NULL ORDER BY id LIMIT ?",
            (limit + len(skip),)
        ):
            if row[0] in skip:
                continue
            polls.append(dict(zip(("poll_id", "meter_sap", "meter", "group", "started_at", "finished_at",
                                   "outcome", "error", "attempts", "consecutive_failures"), row, strict=True)))
        for poll in polls[:limit]:
            poll["readings"] = [_reading_row(r) for r in self._db.execute(
                "SELECT id, meter_sap, meter_name, source, obis, captured_at, read_at, value, dlms_type, scaler, unit"
                " FROM readings WHERE poll_id = ? ORDER BY id", (poll["poll_id"],))]
        return polls[:limit]

    def count_unpublished(self) -> int:
        """Polls waiting for the broker."""
        (count,) = self._db.execute("SELECT count(*) FROM polls WHERE published = 0 AND meter_name IS NOT NULL"
                                    ).fetchone()
        return int(count)

    def count_held(self) -> int:
        """Polls (failures) of meters whose identity is not known yet: published once it is."""
        (count,) = self._db.execute("SELECT count(*) FROM polls WHERE published = 0 AND meter_name IS NULL").fetchone()
        return int(count)

    def readings(self, *, meter_sap: int | None = None, meter_name: str | None = None, since: float | None = None,
                 after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Readings in store order, for export; page with ``after_id``."""
        where, args = self._filter(meter_sap=meter_sap, meter_name=meter_name, since=since)
        rows = self._db.execute(
            "SELECT id, meter_sap, meter_name, source, obis, captured_at, read_at, value, dlms_type, scaler, unit"
            f" FROM readings WHERE id > ? {where} ORDER BY id LIMIT ?", (after_id, *args, limit))
        return [_reading_row(r) for r in rows]

    def count(self, *, meter_sap: int | None = None, meter_name: str | None = None, since: float | None = None) -> int:
        where, args = self._filter(meter_sap=meter_sap, meter_name=meter_name, since=since)
        (count,) = self._db.execute(f"SELECT count(*) FROM readings WHERE 1 {where}", args).fetchone()
        return int(count)

    @staticmethod
    def _filter(*, meter_sap: int | None, meter_name: str | None, since: float | None) -> tuple[str, tuple[Any, ...]]:
        clauses: list[str] = []
        args: list[Any] = []
        if meter_sap is not None:
            clauses.append("AND meter_sap = ?")
            args.append(meter_sap)
        if meter_name is not None:
            clauses.append("AND meter_name = ?")
            args.append(meter_name)
        if since is not None:
            clauses.append("AND captured_at >= ?")
            args.append(since)
        return " ".join(clauses), tuple(args)


def _reading_row(row: Sequence[Any]) -> dict[str, Any]:
    keys = ("id", "meter_sap", "meter", "source", "obis", "captured_at", "read_at", "value", "type", "scaler", "unit")
    reading = dict(zip(keys, row, strict=True))
    reading["value"] = json.loads(reading["value"])
    return reading
