"""Time as the relay core receives it: a clock to read and timers to arm, passed in from outside.

An asyncio event loop is a Scheduler as it stands (`loop.time()`, `loop.call_at()`), so the daemon
hands in the running loop; unit tests hand in a fake clock they move by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    """An armed timer."""

    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """A monotonic clock, in seconds, and one-shot timers on it."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object], /) -> TimerHandle: ...
