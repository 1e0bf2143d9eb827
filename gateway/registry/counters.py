"""Invocation counters reserved ahead of use, in the registry database.

Reserve a block, commit it (synchronous=FULL), then spend it. After a crash the next start
begins at the old ceiling: some counters are skipped, none is ever used twice.
"""

from __future__ import annotations

import sqlite3

COUNTER_MAX = 0xFFFFFFFF  # Green Book 9.2.7.2: a 32-bit invocation counter
BLOCK = 1000  # counters reserved per write: one fsync per 1000 ciphered APDUs
MARGIN = 16  # reserve again this far before the ceiling (one request may spend a few counters)


class CounterExhaustedError(Exception):
    """The 32-bit counter space is used up: the key must be renewed."""


class ReservedCounter:
    """One key's invocation counter, durable ahead of use."""

    def __init__(self, connection: sqlite3.Connection, *, key_name: str, block: int = BLOCK) -> None:
        self._db = connection
        self.key_name = key_name
        self._block = block
        row = connection.execute("SELECT ceiling FROM invocation_counters WHERE key_name = ?", (key_name,)).fetchone()
        self.start = int(row[0]) if row else 0  # everything below may have been used before
        self.ceiling = self.start
        self._reserve(self.start + block)

    def ensure(self, current: int) -> None:
        """Call after spending counters up to ``current``: reserves the next block in time."""
        if current + MARGIN >= self.ceiling:
            self._reserve(max(current, self.ceiling) + self._block)

    def _reserve(self, ceiling: int) -> None:
        if ceiling > COUNTER_MAX:
            raise CounterExhaustedError(f"invocation counter of {self.key_name} exhausted: renew the key")
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(
            "INSERT INTO invocation_counters (key_name, ceiling) VALUES (?, ?)"
            " ON CONFLICT (key_name) DO UPDATE SET ceiling = excluded.ceiling",
            (self.key_name, ceiling),
        )
        self._db.execute("COMMIT")
        self.ceiling = ceiling
