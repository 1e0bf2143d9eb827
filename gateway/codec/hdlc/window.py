"""Go-back-N bookkeeping of outgoing I-frames, modulo 8 (IEC 62056-46, control field)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from gateway.codec.hdlc.control import SEQUENCE_MODULUS

LLC_REQUEST = b"\xe6\xe6\x00"  # IEC 62056-46, LLC: destination LSAP, source LSAP (command), quality
LLC_RESPONSE = b"\xe6\xe7\x00"  # IEC 62056-46, LLC: source LSAP with the response bit set
MAX_APDU_LENGTH = 0xFFFF + len(LLC_REQUEST)  # DLMS negotiates APDU sizes as Unsigned16


@dataclass(frozen=True, slots=True)
class Segment:
    """The information field of one I-frame; `more` is its S bit."""

    info: bytes
    more: bool


def segment(data: bytes, *, max_info: int) -> list[Segment]:
    """Split `data` into information fields of at most `max_info` bytes."""
    chunks = [data[start : start + max_info] for start in range(0, len(data), max_info)]
    return [Segment(chunk, more=index < len(chunks) - 1) for index, chunk in enumerate(chunks)]


class SendWindow:
    """Segments waiting to go out and I-frames sent but not yet acknowledged."""

    def __init__(self) -> None:
        self.send_seq = 0  # V(S): N(S) of the next new I-frame
        self._waiting: deque[Segment] = deque()
        self._unacknowledged: list[Segment] = []

    @property
    def waiting(self) -> bool:
        """Whether segments wait to be sent."""
        return bool(self._waiting)

    @property
    def unacknowledged(self) -> int:
        """I-frames sent and not yet acknowledged."""
        return len(self._unacknowledged)

    def queue(self, segments: list[Segment]) -> None:
        """Append the segments of one APDU."""
        self._waiting.extend(segments)

    def take(self, *, window: int) -> list[tuple[int, Segment]]:
        """Move segments to unacknowledged while the window allows, stopping after an APDU's last."""
        taken: list[tuple[int, Segment]] = []
        while self._waiting and len(self._unacknowledged) < window:
            item = self._waiting.popleft()
            taken.append((self.send_seq, item))
            self._unacknowledged.append(item)
            self.send_seq = (self.send_seq + 1) % SEQUENCE_MODULUS
            if not item.more:
                break
        return taken

    def acknowledge(self, recv_seq: int) -> int | None:
        """Drop the I-frames N(R) acknowledges; return how many, or None if N(R) is out of range."""
        oldest = (self.send_seq - len(self._unacknowledged)) % SEQUENCE_MODULUS
        count = (recv_seq - oldest) % SEQUENCE_MODULUS
        if count > len(self._unacknowledged):
            return None
        del self._unacknowledged[:count]
        return count

    def go_back(self) -> int:
        """Put unacknowledged I-frames back in front of the queue, to resend with the same N(S)."""
        count = len(self._unacknowledged)
        self._waiting.extendleft(reversed(self._unacknowledged))
        self._unacknowledged.clear()
        self.send_seq = (self.send_seq - count) % SEQUENCE_MODULUS
        return count
