"""A restartable timeout that costs one clock read per restart (no timer-heap work)."""

from __future__ import annotations

from collections.abc import Callable

from gateway.core.clock import Scheduler, TimerHandle


class Deadline:
    """Calls ``on_expiry`` once ``timeout_s`` passed since the last ``restart()``.

    A restart only records the time; the single armed timer, when it fires early, re-arms
    itself for the remainder. So a busy connection costs no timer-heap work per PDU.
    """

    def __init__(self, loop: Scheduler, *, timeout_s: float, on_expiry: Callable[[], None]) -> None:
        self._loop = loop
        self._timeout_s = timeout_s
        self._on_expiry = on_expiry
        self._since: float | None = None
        self._handle: TimerHandle | None = None

    @property
    def running(self) -> bool:
        return self._since is not None

    def restart(self, now: float | None = None) -> None:
        """Start counting from now (``now``: the loop's time, when the caller has just read it)."""
        self._since = self._loop.time() if now is None else now
        if self._handle is None:
            self._handle = self._loop.call_at(self._since + self._timeout_s, self._fire)

    def start(self) -> None:
        """Start counting from now unless already counting."""
        if self._since is None:
            self.restart()

    def clear(self) -> None:
        """Stop counting (the armed timer, if any, finds nothing to do)."""
        self._since = None

    def cancel(self) -> None:
        """Stop for good and release the timer."""
        self._since = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        if self._since is None:
            return
        due = self._since + self._timeout_s
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._fire)
            return
        self._since = None
        self._on_expiry()
