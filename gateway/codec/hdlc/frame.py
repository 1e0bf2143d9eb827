"""HDLC frames of IEC 62056-46 (frame format type 3): encoder and an incremental, bounded decoder.

    7E | A0/A8+len (11 bits) | destination | source | control | HCS | information | FCS | 7E

The length counts every byte between the flags. HCS (over format..control) is present only when
there is an information field; FCS covers format..information. There is no byte stuffing: a frame
ends where its length says, so 0x7E may occur inside it, and consecutive frames may share a flag.
"""

from __future__ import annotations

from typing import NamedTuple

from gateway.codec.errors import LocalProtocolError
from gateway.codec.hdlc.address import HdlcAddress, decode_address
from gateway.codec.hdlc.control import POLL_FINAL, FrameKind, frame_kind, recv_seq_of, send_seq_of
from gateway.codec.hdlc.crc import CRC16_X25_START, crc16_x25, crc16_x25_update, crc16_x25_value
from gateway.codec.hdlc.errors import HdlcError

__all__ = ["HdlcError", "HdlcFrame", "HdlcFrameDecoder", "LinkFrames", "encode_fields", "encode_frame"]

FLAG = 0x7E  # IEC 62056-46, frame format: opening and closing flag
_FLAG_BYTE = bytes([FLAG])
_FORMAT_TYPE = 0xA000  # IEC 62056-46, frame format: frame format type 3 in the top 4 bits
_FORMAT_TYPE_MASK = 0xF000
_SEGMENTED = 0x0800  # IEC 62056-46, frame format: the S bit, "more segments follow"
_LENGTH_MASK = 0x07FF  # IEC 62056-46, frame format: 11-bit frame length
MAX_LINK_HEADERS = 64  # headers one data link keeps encoded (length, S bit, control): a request's few
MAX_BLAMED_SOURCES = 256  # addresses remembered between takes: noise cannot grow the table without bound
_MIN_LENGTH = 7  # format 2 + destination 1 + source 1 + control 1 + FCS 2
_LONGEST_HEADER = 12  # flag 1 + format 2 + destination 4 + source 4 + control 1


class HdlcFrame(NamedTuple):
    """One HDLC frame, flags and check sequences left out (immutable; a named tuple: every frame in and out
    builds one, and a tuple is built in a third of a frozen dataclass's time)."""

    destination: HdlcAddress
    source: HdlcAddress
    control: int
    info: bytes = b""
    segmented: bool = False

    @property
    def defined_kind(self) -> FrameKind | None:
        """The command or response this frame carries, or None when DLMS does not define its control field."""
        return frame_kind(self.control)

    @property
    def kind(self) -> FrameKind:
        """The command or response this frame carries; HdlcError if DLMS does not define it."""
        kind = frame_kind(self.control)
        if kind is None:
            raise HdlcError(f"undefined HDLC control field 0x{self.control:02X}")
        return kind

    @property
    def poll_final(self) -> bool:
        """The P/F bit."""
        return bool(self.control & POLL_FINAL)

    @property
    def send_seq(self) -> int:
        """N(S) of an I-frame."""
        if self.kind is not FrameKind.I:
            raise LocalProtocolError(f"a {self.kind.value} frame has no N(S)")
        return send_seq_of(self.control)

    @property
    def recv_seq(self) -> int:
        """N(R) of an I, RR or RNR frame."""
        if self.kind not in (FrameKind.I, FrameKind.RR, FrameKind.RNR):
            raise LocalProtocolError(f"a {self.kind.value} frame has no N(R)")
        return recv_seq_of(self.control)


def split_frames(data: bytes) -> list[bytes]:
    """Frames we encoded ourselves, back to back, each with its two flags (the length field bounds each)."""
    frames = []
    start = 0
    while start + 3 <= len(data) and data[start] == FLAG:
        end = start + 1 + ((data[start + 1] << 8 | data[start + 2]) & _LENGTH_MASK)
        frames.append(data[start : end + 1])
        start = end + 1
        if start < len(data) and data[start] == FLAG and (start + 1 >= len(data) or data[start + 1] == FLAG):
            start += 1  # a shared or doubled flag between two frames
    return frames


def encode_frame(frame: HdlcFrame) -> bytes:
    """Return `frame` as sent on the line, both flags included."""
    if not 0 <= frame.control <= 0xFF:
        raise LocalProtocolError(f"control field 0x{frame.control:X} is not one byte")
    return encode_fields(frame.destination.encode() + frame.source.encode(), frame.control, frame.info,
                         segmented=frame.segmented)


def encode_fields(addresses: bytes, control: int, info: bytes = b"", *, segmented: bool = False) -> bytes:
    """A frame from its destination and source fields already encoded (a data link's are fixed), both flags
    included; ``control`` is one byte."""
    header = _header(addresses, control, info, segmented=segmented)
    body = header + crc16_x25(header).to_bytes(2, "little") + info if info else header
    return _FLAG_BYTE + body + crc16_x25(body).to_bytes(2, "little") + _FLAG_BYTE


def _header(addresses: bytes, control: int, info: bytes, *, segmented: bool) -> bytes:
    """Format (type, S bit, length), addresses and control: what the HCS covers."""
    length = 5 + len(addresses) + (2 + len(info) if info else 0)  # format 2, control 1, FCS 2
    if length > _LENGTH_MASK:
        raise LocalProtocolError(f"frame of {length} bytes exceeds the 11-bit length field")
    return (_FORMAT_TYPE | (_SEGMENTED if segmented else 0) | length).to_bytes(2, "big") + addresses + \
        control.to_bytes(1, "big")


class LinkFrames:
    """The frames of one data link, whose address fields never change: each header with information (format,
    length, addresses, control and HCS) is encoded once, and the FCS goes on from it over the information."""

    def __init__(self, addresses: bytes) -> None:
        self._addresses = addresses  # destination and source fields, encoded
        self._headers: dict[int, tuple[bytes, int]] = {}  # (info length, S, control) -> (flag + header + HCS, register)

    def encode(self, control: int, info: bytes = b"", *, segmented: bool = False) -> bytes:
        """The frame as sent on the line, both flags included (what ``encode_fields`` gives)."""
        if not info:
            return encode_fields(self._addresses, control, segmented=segmented)
        key = len(info) << 9 | segmented << 8 | control  # the addresses are the link's: these make the header
        cached = self._headers.get(key)
        if cached is None:
            header = _header(self._addresses, control, info, segmented=segmented)
            header += crc16_x25(header).to_bytes(2, "little")
            if len(self._headers) >= MAX_LINK_HEADERS:
                self._headers.clear()
            cached = self._headers[key] = (_FLAG_BYTE + header, crc16_x25_update(CRC16_X25_START, header))
        head, register = cached
        return head + info + crc16_x25_value(crc16_x25_update(register, info)).to_bytes(2, "little") + _FLAG_BYTE


class HdlcFrameDecoder:
    """Splits a byte stream from a (shared, multi-drop) line into frames; never raises on line noise."""

    def __init__(self, *, max_frame_length: int = 2048, inter_octet_timeout_s: float = 0.1) -> None:
        if max_frame_length < _MIN_LENGTH + 2:
            raise LocalProtocolError(f"max_frame_length {max_frame_length} cannot hold a frame")
        self._max_frame_length = max_frame_length
        self._inter_octet_timeout_s = inter_octet_timeout_s
        self._buffer = bytearray()  # empty, or a partial frame starting at its opening flag
        self._flag_kept = False  # a whole read ended on a closing flag, kept (uncopied) to open the next frame
        self._last_octet_at: float | None = None
        self.frames = 0
        self.bad_crc = 0
        # Bad-FCS frames whose HCS vouched for the addresses, by meter (source) address; taken by the caller.
        self.bad_fcs_by_source: dict[tuple[int, int | None], int] = {}
        self.discarded_bytes = 0  # bytes other than flags that ended up in no frame
        self.timeouts = 0
        # While a capture runs: every whole frame's bytes as it arrived, flags included, with the meter
        # (source) address and whether its FCS was bad; the caller takes them after each feed().
        self.keep_raw = False
        self.raw: list[tuple[bytes, HdlcAddress, bool]] = []

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame (a closing flag kept to open the next counts)."""
        return len(self._buffer) + self._flag_kept

    def feed(self, data: bytes, *, now: float) -> list[HdlcFrame]:
        """Take the bytes read at `now`; return the frames they complete."""
        stale = self._last_octet_at is not None and now - self._last_octet_at > self._inter_octet_timeout_s
        if stale and len(self._buffer) > 1:  # a lone flag may open the next frame: not a partial frame
            self.timeouts += 1
            self._discard(len(self._buffer))
        if data:
            self._last_octet_at = now
        frames: list[HdlcFrame] = []
        buffer = self._buffer
        step_size = self._max_frame_length
        if not buffer and len(data) <= step_size and (not self._flag_kept or data[:1] == _FLAG_BYTE):
            # the usual read starts a frame: parsed from the bytes as they came, only a tail is kept
            self._flag_kept = False
            rest = self._take(data, 0, frames)
            if rest < len(data):
                if rest == len(data) - 1:  # the closing flag, which may open the next frame: no copy
                    self._flag_kept = True
                else:
                    buffer += data[rest:]
        else:
            if self._flag_kept:
                buffer += _FLAG_BYTE
                self._flag_kept = False
            for start in range(0, len(data), step_size):  # bounds the buffer to 2 x max
                buffer += data if len(data) <= step_size else data[start : start + step_size]
                del buffer[: self._take(buffer, 0, frames)]
        self.frames += len(frames)
        return frames

    def resume(self, *, now: float) -> None:
        """The reader was busy until `now`: bytes that waited in the OS buffer meanwhile are not late.

        The inter-octet timeout is about gaps on the line, not about our own processing time.
        """
        if self._last_octet_at is not None:
            self._last_octet_at = max(self._last_octet_at, now)

    def take_bad_fcs(self) -> dict[tuple[int, int | None], int]:
        """Bad-FCS frames per (logical device, physical address) since the last call."""
        taken, self.bad_fcs_by_source = self.bad_fcs_by_source, {}
        return taken

    def _blame(self, source: HdlcAddress) -> None:
        key = (source.upper, source.lower)
        if key in self.bad_fcs_by_source or len(self.bad_fcs_by_source) < MAX_BLAMED_SOURCES:
            self.bad_fcs_by_source[key] = self.bad_fcs_by_source.get(key, 0) + 1

    def _discard(self, count: int) -> None:
        self.discarded_bytes += count - self._buffer.count(FLAG, 0, count)
        del self._buffer[:count]

    def _take(self, buf: bytes | bytearray, start: int, frames: list[HdlcFrame]) -> int:
        """Append every whole frame of ``buf[start:]`` to ``frames``, dropping noise; return where the rest
        (a partial frame from its opening flag, or nothing) begins."""
        size = len(buf)
        while True:
            if start < size and buf[start] != FLAG:  # noise before a frame
                flag_at = buf.find(FLAG, start)
                skip_to = size if flag_at < 0 else flag_at
                self.discarded_bytes += skip_to - start
                start = skip_to
            if size - start > 1 and buf[start + 1] == FLAG:  # a closing flag, then the next frame's opening flag
                start += 1
            if size - start < 3:
                return start
            frame_format = buf[start + 1] << 8 | buf[start + 2]
            length = frame_format & _LENGTH_MASK
            end = start + 1 + length
            if frame_format & _FORMAT_TYPE_MASK != _FORMAT_TYPE or length < _MIN_LENGTH or \
                    length + 1 > self._max_frame_length:
                start += 1  # not a frame's opening flag: hunt for the next one
                continue
            if size < (end if length + 1 < _LONGEST_HEADER else start + _LONGEST_HEADER):
                return start
            try:  # the addresses end before the check sequence that follows them
                destination, offset = decode_address(buf, start + 3, end - 2)
                source, offset = decode_address(buf, offset, end - 2)
            except HdlcError:
                start += 1
                continue
            if offset >= end - 2:
                start += 1
                continue
            control_end = offset + 1
            if end == control_end + 2:  # no information field: the FCS follows the control byte
                if size < end:
                    return start
                if crc16_x25(buf[start + 1 : control_end]) != buf[control_end] | buf[control_end + 1] << 8:
                    self.bad_crc += 1
                    start += 1
                    continue
                info = b""
            else:
                if end < control_end + 5:  # HCS, at least one byte of information, FCS
                    start += 1
                    continue
                if size < control_end + 2:
                    return start
                if crc16_x25(buf[start + 1 : control_end]) != buf[control_end] | buf[control_end + 1] << 8:
                    self.bad_crc += 1
                    start += 1  # the length is not to be trusted: hunt from here
                    continue
                if size < end:
                    return start
                if crc16_x25(buf[start + 1 : end - 2]) != buf[end - 2] | buf[end - 1] << 8:
                    self.bad_crc += 1
                    self._blame(source)
                    if self.keep_raw:
                        self.raw.append((bytes(buf[start:end]) + _FLAG_BYTE, source, True))
                    self.discarded_bytes += end - start - buf.count(FLAG, start, end)
                    start = end  # the HCS vouched for the length: skip the whole frame
                    continue
                info = bytes(buf[control_end + 2 : end - 2])
            frames.append(HdlcFrame(destination, source, buf[offset], info, bool(frame_format & _SEGMENTED)))
            if self.keep_raw:
                self.raw.append((bytes(buf[start:end]) + _FLAG_BYTE, source, False))
            start = end  # the closing flag stays: it may open the next frame
