"""Go-back-N bookkeeping of outgoing I-frames, modulo 8 (IEC 62056-46, control field)."""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from gateway.codec.hdlc.control import SEQUENCE_MODULUS
from gateway.codec.hdlc.errors import HdlcError

LLC_REQUEST = b"\xe6\xe6\x00"  # IEC 62056-46, LLC: destination LSAP, source LSAP (command), quality
LLC_RESPONSE = b"\xe6\xe7\x00"  # IEC 62056-46, LLC: source LSAP with the response bit set
MAX_APDU_LENGTH = 0xFFFF + len(LLC_REQUEST)  # DLMS negotiates APDU sizes as Unsigned16


def llc_payload(info: bytes) -> bytes | None:
    """What follows a request or response LLC header in an information field; None without one."""
    for header in (LLC_REQUEST, LLC_RESPONSE):
        if info.startswith(header):
            return info[len(header) :]
    return None


def strip_llc(data: bytes, header: bytes) -> bytes:
    """Remove the LLC header of a reassembled APDU; a peer that omits it is tolerated."""
    return data[len(header) :] if data.startswith(header) else data


class Segment(NamedTuple):
    """The information field of one I-frame; `more` is its S bit (a named tuple: one per I-frame sent)."""

    info: bytes
    more: bool


def segment(data: bytes, *, max_info: int) -> list[Segment]:
    """Split `data` into information fields of at most `max_info` bytes."""
    if len(data) <= max_info:  # most APDUs: one I-frame
        return [Segment(data, more=False)]
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

    def take_one(self, info: bytes) -> int | None:
        """Send ``info`` as an APDU's only I-frame at once when nothing waits and the window has room: its N(S),
        or None (then it is queued and taken the usual way)."""
        if self._waiting or self._unacknowledged:
            return None
        send_seq = self.send_seq
        self._unacknowledged.append(Segment(info, False))
        self.send_seq = (send_seq + 1) % SEQUENCE_MODULUS
        return send_seq

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
        if not count:
            return 0
        self._waiting.extendleft(reversed(self._unacknowledged))
        self._unacknowledged.clear()
        self.send_seq = (self.send_seq - count) % SEQUENCE_MODULUS
        return count


class Reassembly:
    """Incoming I-frames taken in sequence, V(R), and the APDU their segments build."""

    def __init__(self, *, llc: bytes) -> None:
        self.recv_seq = 0  # V(R): N(S) of the next I-frame to take
        self.more = False  # the last segment taken had the S bit: more follow
        self._llc = llc
        self._buffer = bytearray()

    def accept(self, info: bytes, *, more: bool) -> bytes | None:
        """Take the information field of the in-sequence I-frame; return the APDU it completes."""
        if len(self._buffer) + len(info) > MAX_APDU_LENGTH:
            raise HdlcError(f"APDU longer than {MAX_APDU_LENGTH} bytes")
        self.recv_seq = (self.recv_seq + 1) % SEQUENCE_MODULUS
        self.more = more
        if not more and not self._buffer:  # an APDU in one I-frame: no reassembly copy
            return strip_llc(info, self._llc)
        self._buffer += info
        if more:
            return None
        apdu = strip_llc(bytes(self._buffer), self._llc)
        self._buffer.clear()
        return apdu
