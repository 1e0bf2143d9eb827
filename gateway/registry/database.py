"""The registry's SQLite file: WAL, integrity check at start, forward-only migrations.

The schema version is ``PRAGMA user_version``; ``schema/NNNN_*.sql`` holds one file per
version. All pending migrations run in one transaction, so a power cut mid-upgrade leaves the
old schema intact. A database newer than this code is refused, never downgraded.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources
from pathlib import Path

from gateway.private_files import connect_private


class DatabaseError(Exception):
    """The registry database cannot be used."""


def migrations() -> list[tuple[int, str]]:
    """(version, SQL) for every schema file shipped with this code, in order."""
    found = []
    for entry in resources.files("gateway.registry").joinpath("schema").iterdir():
        match = re.fullmatch(r"(\d{4})_\w+\.sql", entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    if [v for v, _ in found] != list(range(1, len(found) + 1)):
        raise DatabaseError("schema files are not numbered 0001, 0002, ... without gaps")
    return found


SCHEMA_VERSION = len(migrations())


def open_database(path: Path, *, target_version: int = SCHEMA_VERSION) -> sqlite3.Connection:
    """Open (creating if needed), check and migrate the registry database."""
    try:
        connection = connect_private(path)
    except sqlite3.Error as exc:
        raise DatabaseError(f"{path}: {exc}") from None
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")  # an acknowledged registration survives a power cut
        connection.execute("PRAGMA foreign_keys=ON")
        (check,) = connection.execute("PRAGMA integrity_check").fetchone()
        if check != "ok":
            raise DatabaseError(f"{path}: integrity check failed: {check}")
        _migrate(connection, path, target_version)
    except (sqlite3.Error, DatabaseError) as exc:
        connection.close()
        if isinstance(exc, DatabaseError):
            raise
        raise DatabaseError(f"{path}: {exc}") from None
    return connection


def _migrate(connection: sqlite3.Connection, path: Path, target_version: int) -> None:
    (current,) = connection.execute("PRAGMA user_version").fetchone()
    if current > SCHEMA_VERSION:
        raise DatabaseError(
            f"{path}: database schema version {current} is newer than this gateway supports "
            f"({SCHEMA_VERSION}); upgrade the gateway software instead of downgrading the database"
        )
    pending = [(v, sql) for v, sql in migrations() if current < v <= target_version]
    if not pending:
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        for version, sql in pending:
            for statement in _statements(sql):
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {version}")
        connection.execute("COMMIT")
    except sqlite3.Error:
        connection.execute("ROLLBACK")
        raise


def _statements(sql: str) -> list[str]:
    """Split a schema file into statements (executescript would commit our transaction)."""
    return [s.strip() for s in sqlite3_complete_split(sql) if s.strip()]


def sqlite3_complete_split(sql: str) -> list[str]:
    statements, current = [], ""
    for line in sql.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current)
            current = ""
    if current.strip():
        statements.append(current)
    return statements
