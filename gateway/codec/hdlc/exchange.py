"""A primary station's poll cycle (IEC 62056-46, NRM): response timer, retransmission, retry budget."""

from __future__ import annotations

from enum import Enum


class Expiry(Enum):
    """What an expired deadline asks the link to do."""

    NOTHING = "nothing"  # not due yet
    POLL = "poll"  # a busy back-off ended: ask again with RR
    RETRANSMIT = "retransmit"  # no answer: send the same bytes again
    GIVE_UP = "give up"  # no answer after max_retries retransmissions


class Exchange:
    """One poll at a time: the bytes last sent, when to stop waiting, and how often it failed."""

    def __init__(self, *, response_timeout_s: float, max_retries: int) -> None:
        self._response_timeout_s = response_timeout_s
        self._max_retries = max_retries
        self.awaiting = False  # polled, the frame with the F bit has not come
        self.retransmit = False  # timed out, the last transmission must go again
        self.deadline: float | None = None  # response timeout, or (not awaiting) the end of a busy back-off
        self.progress = False  # this exchange acknowledged or delivered something
        self.last_transmission = b""
        self.last_frame_count = 0
        self._failures = 0  # exchanges in a row that timed out or made no progress

    def polled(self, data: bytes, frame_count: int, *, now: float) -> None:
        """The link put `data` on the line with the P bit set: start the response timer."""
        self.last_transmission, self.last_frame_count = data, frame_count
        self.retransmit = False
        self.awaiting = True
        self.deadline = now + self._response_timeout_s
        self.progress = False

    def frame_received(self, *, now: float) -> None:
        """A response frame without the F bit: more are coming, the line is alive."""
        if self.awaiting:
            self.deadline = now + self._response_timeout_s

    def answered(self, *, busy: bool, now: float) -> bool:
        """The final frame came; return False when too many exchanges in a row made no progress."""
        progress = self.progress
        self.end()
        self._failures = 0 if progress else self._failures + 1
        if self._failures > self._max_retries:
            return False
        if busy:
            self.deadline = now + self._response_timeout_s
        return True

    def end(self) -> None:
        """Forget the exchange in progress (answered, or the link went down)."""
        self.awaiting = False
        self.retransmit = False
        self.deadline = None
        self.progress = False

    def succeeded(self) -> None:
        """A command was answered: the retry budget starts afresh."""
        self.end()
        self._failures = 0

    def expire(self, *, now: float) -> Expiry:
        """Act on the deadline if it has passed."""
        if self.deadline is None or now < self.deadline:
            return Expiry.NOTHING
        self.deadline = None
        if not self.awaiting:
            return Expiry.POLL
        self.awaiting = False
        self._failures += 1
        if self._failures > self._max_retries:
            return Expiry.GIVE_UP
        self.retransmit = True
        return Expiry.RETRANSMIT
