"""Log lines a peer can trigger, bounded whatever the peers send.

Theory of operation: a hostile head-end (or a thousand of them) can hit a warning path as fast
as it can send bytes. Every log call a peer can trigger goes through a LogLimiter, keyed by the
event and by who triggered it (usually the HES address):

- one line per (event, key) per interval, and
- at most ``budget`` lines per event per interval for all keys together,

so an event writes at most ``budget / interval_s`` lines per second (10 by default) however many
peers trigger it, and one peer at most one per second. What is left out is counted and reported
on that key's next line as ``suppressed_before``. Memory stays bounded: past MAX_KEYS keys the
table starts afresh (a few counts are lost, never a line allowed beyond the budget).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

EVENT_BUDGET = 10  # lines per event per interval, all peers together
MAX_KEYS = 1024  # (event, key) pairs remembered


class LogLimiter:
    """At most one line per (event, key) per interval, and ``budget`` per event per interval in all."""

    def __init__(self, *, interval_s: float = 1.0, budget: int = EVENT_BUDGET,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._budget = budget
        self._clock = clock
        self._last: dict[tuple[str, object], tuple[float, int]] = {}  # -> (last line, left out since)
        self._windows: dict[str, tuple[float, int]] = {}  # event -> (window start, lines in it)

    def allow(self, event: str, key: object) -> int | None:
        """None: stay quiet; else log now, noting how many were left out since the last line."""
        now = self._clock()
        if len(self._last) >= MAX_KEYS:
            self._last.clear()
        last, suppressed = self._last.get((event, key), (float("-inf"), 0))
        start, lines = self._windows.get(event, (float("-inf"), 0))
        if now - start >= self._interval_s:
            start, lines = now, 0
        if now - last < self._interval_s or lines >= self._budget:
            self._last[(event, key)] = (last, suppressed + 1)
            return None
        self._last[(event, key)] = (now, 0)
        self._windows[event] = (start, lines + 1)
        return suppressed

    def emit(self, method: Callable[..., Any], event: str, *, key: object, **fields: object) -> None:
        """Call ``method(event, **fields)`` (a structlog level method) if the limits allow it."""
        suppressed = self.allow(event, key)
        if suppressed is not None:
            method(event, **fields, suppressed_before=suppressed)
