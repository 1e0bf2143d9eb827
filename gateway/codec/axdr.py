"""A-XDR encoding of COSEM ``Data`` (IEC 62056-6-2 / DLMS Green Book, clause 9.5).

    Data ::= tag(1 byte) [length] contents
    length: 1 byte < 0x80, else 0x8N followed by N bytes big-endian (BER-style)

``Data`` is a small typed value: the DLMS type travels with the Python value, because a
COSEM server must answer ``long-unsigned`` where it was asked for ``long-unsigned``.

Python values by type:
    null-data -> None; boolean -> bool; every integer type, enum and bcd -> int (bcd: the raw
    octet, 0..255); float32/float64 -> float; octet-string -> bytes; visible-string -> str
    (latin-1, so any octet survives a round trip); utf8-string -> str; array/structure ->
    tuple[Data, ...]; date-time/date/time -> bytes of 12/5/4 octets (see ``date_time``);
    bit-string -> bytes when the bit count is a whole number of octets, else ``BitString``
    (bytes that also carry ``bit_count``; bits run first-octet MSB first);
    compact-array -> bytes: the raw contents-description followed by the length-prefixed
    array-contents, checked for shape on decode but not expanded.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from gateway.codec.errors import LocalProtocolError, RemoteProtocolError


class AxdrError(RemoteProtocolError):
    """Malformed A-XDR data."""


class AxdrEncodeError(LocalProtocolError):
    """A value that its declared DLMS type cannot carry."""


class DataType(IntEnum):
    NULL = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOLEAN = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    BCD = 13
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    COMPACT_ARRAY = 19
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27


Value = None | bool | int | float | bytes | str | tuple["Data", ...]


@dataclass(frozen=True, slots=True)
class Data:
    """One COSEM data value with its DLMS type."""

    type: DataType
    value: Value = None

    # Constructors named after the DLMS types, so object definitions read like the Blue Book.
    @classmethod
    def null(cls) -> Data:
        return cls(DataType.NULL, None)

    @classmethod
    def array(cls, *items: Data) -> Data:
        return cls(DataType.ARRAY, tuple(items))

    @classmethod
    def structure(cls, *items: Data) -> Data:
        return cls(DataType.STRUCTURE, tuple(items))

    @classmethod
    def boolean(cls, value: bool) -> Data:
        return cls(DataType.BOOLEAN, value)

    @classmethod
    def octet_string(cls, value: bytes) -> Data:
        return cls(DataType.OCTET_STRING, bytes(value))

    @classmethod
    def visible_string(cls, value: str) -> Data:
        return cls(DataType.VISIBLE_STRING, value)

    @classmethod
    def integer(cls, value: int) -> Data:
        return cls(DataType.INTEGER, value)

    @classmethod
    def long(cls, value: int) -> Data:
        return cls(DataType.LONG, value)

    @classmethod
    def unsigned(cls, value: int) -> Data:
        return cls(DataType.UNSIGNED, value)

    @classmethod
    def long_unsigned(cls, value: int) -> Data:
        return cls(DataType.LONG_UNSIGNED, value)

    @classmethod
    def double_long(cls, value: int) -> Data:
        return cls(DataType.DOUBLE_LONG, value)

    @classmethod
    def double_long_unsigned(cls, value: int) -> Data:
        return cls(DataType.DOUBLE_LONG_UNSIGNED, value)

    @classmethod
    def long64(cls, value: int) -> Data:
        return cls(DataType.LONG64, value)

    @classmethod
    def long64_unsigned(cls, value: int) -> Data:
        return cls(DataType.LONG64_UNSIGNED, value)

    @classmethod
    def enum(cls, value: int) -> Data:
        return cls(DataType.ENUM, value)

    @classmethod
    def bit_string(cls, value: bytes, *, bit_count: int | None = None) -> Data:
        if bit_count is None or bit_count == 8 * len(value):
            return cls(DataType.BIT_STRING, bytes(value))
        return cls(DataType.BIT_STRING, BitString(value, bit_count=bit_count))

    @classmethod
    def utf8_string(cls, value: str) -> Data:
        return cls(DataType.UTF8_STRING, value)

    @classmethod
    def bcd(cls, value: int) -> Data:
        return cls(DataType.BCD, value)

    @classmethod
    def float32(cls, value: float) -> Data:
        return cls(DataType.FLOAT32, value)

    @classmethod
    def float64(cls, value: float) -> Data:
        return cls(DataType.FLOAT64, value)

    @property
    def items(self) -> tuple[Data, ...]:
        """The elements of an array or structure."""
        if not isinstance(self.value, tuple):
            raise TypeError(f"{self.type.name} has no items")
        return self.value




class BitString(bytes):
    """Bit-string octets whose bit count is not a multiple of 8 (whole octets stay plain bytes)."""

    bit_count: int

    def __new__(cls, octets: bytes, *, bit_count: int) -> BitString:
        if bit_count < 0 or bit_count % 8 == 0 or (bit_count + 7) // 8 != len(octets):
            raise AxdrEncodeError(f"{len(octets)} octets cannot hold a {bit_count}-bit partial bit-string")
        self = super().__new__(cls, octets)
        self.bit_count = bit_count
        return self

    def __eq__(self, other: object) -> bool:
        same_bits = isinstance(other, BitString) and other.bit_count == self.bit_count
        return same_bits and bytes.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((bytes(self), self.bit_count))

    def __repr__(self) -> str:
        return f"BitString({bytes(self)!r}, bit_count={self.bit_count})"


def bit_string_of(flags: Sequence[bool]) -> Data:
    """A bit-string whose bit n is flags[n]; bit 0 is the most significant bit of the first octet."""
    octets = bytearray((len(flags) + 7) // 8)
    for index, flag in enumerate(flags):
        if flag:
            octets[index // 8] |= 0x80 >> (index % 8)
    return Data.bit_string(bytes(octets), bit_count=len(flags))


def flags_of(value: Data) -> list[bool]:
    """The bits of a bit-string, bit 0 first; AxdrError for another type."""
    if value.type is not DataType.BIT_STRING or not isinstance(value.value, bytes):
        raise AxdrError(f"{value.type.name} is not a bit-string")
    raw = value.value
    count = raw.bit_count if isinstance(raw, BitString) else 8 * len(raw)
    return [bool(raw[index // 8] & (0x80 >> (index % 8))) for index in range(count)]


MAX_DEPTH = 16  # our bound: COSEM values nest a few levels (profile rows); deeper input is hostile
_MAX_LENGTH_OCTETS = 4  # our bound: an A-XDR length beyond 2**32 cannot fit any APDU
_NOT_SPECIFIED_DEVIATION = 0x8000  # IEC 62056-6-2 4.1.6.1, date-time deviation "not specified"

_INTEGERS: dict[DataType, struct.Struct] = {
    DataType.INTEGER: struct.Struct(">b"),
    DataType.LONG: struct.Struct(">h"),
    DataType.DOUBLE_LONG: struct.Struct(">i"),
    DataType.LONG64: struct.Struct(">q"),
    DataType.UNSIGNED: struct.Struct(">B"),
    DataType.LONG_UNSIGNED: struct.Struct(">H"),
    DataType.DOUBLE_LONG_UNSIGNED: struct.Struct(">I"),
    DataType.LONG64_UNSIGNED: struct.Struct(">Q"),
    DataType.ENUM: struct.Struct(">B"),
    DataType.BCD: struct.Struct(">B"),
}
_FLOATS = {DataType.FLOAT32: struct.Struct(">f"), DataType.FLOAT64: struct.Struct(">d")}
_FIXED_OCTETS = {DataType.DATE_TIME: 12, DataType.DATE: 5, DataType.TIME: 4}  # IEC 62056-6-2 4.1.6.1
_STRINGS = {DataType.VISIBLE_STRING: "latin-1", DataType.UTF8_STRING: "utf-8"}


def encode_length(n: int) -> bytes:
    """A-XDR length/count: one octet below 0x80, else 0x80|k and k big-endian octets."""
    if n < 0 or n >= 1 << (8 * _MAX_LENGTH_OCTETS):
        raise AxdrEncodeError(f"length {n} out of range")
    if n < 0x80:
        return bytes([n])
    size = (n.bit_length() + 7) // 8
    return bytes([0x80 | size]) + n.to_bytes(size, "big")


def decode_length(buf: bytes, offset: int) -> tuple[int, int]:
    """Read an A-XDR length at ``offset``; return (length, offset after it)."""
    if not 0 <= offset < len(buf):
        raise AxdrError("truncated length")
    first = buf[offset]
    if first < 0x80:
        return first, offset + 1
    size = first & 0x7F
    if not 0 < size <= _MAX_LENGTH_OCTETS:
        raise AxdrError(f"unsupported length form {first:#04x}")
    if offset + 1 + size > len(buf):
        raise AxdrError("truncated length")
    return int.from_bytes(buf[offset + 1 : offset + 1 + size], "big"), offset + 1 + size


def encode(data: Data) -> bytes:
    """Encode one ``Data`` value, tag first."""
    out = bytearray()
    _encode_into(out, data, depth=0)
    return bytes(out)


def _encode_into(out: bytearray, data: Data, *, depth: int) -> None:
    kind, value = DataType(data.type), data.value
    out.append(kind)
    if kind is DataType.NULL:
        _expect(value is None, data)
    elif kind in (DataType.ARRAY, DataType.STRUCTURE):
        _expect(isinstance(value, tuple), data)
        assert isinstance(value, tuple)
        if depth >= MAX_DEPTH:
            raise AxdrEncodeError(f"nesting deeper than {MAX_DEPTH}")
        out += encode_length(len(value))
        for item in value:
            _encode_into(out, item, depth=depth + 1)
    elif kind is DataType.BOOLEAN:
        _expect(isinstance(value, bool), data)
        out.append(0x01 if value else 0x00)
    elif kind in _INTEGERS:
        _expect(isinstance(value, int) and not isinstance(value, bool), data)
        try:
            out += _INTEGERS[kind].pack(value)
        except struct.error:
            raise AxdrEncodeError(f"{value!r} out of range for {kind.name}") from None
    elif kind in _FLOATS:
        _expect(isinstance(value, (int, float)) and not isinstance(value, bool), data)
        try:
            out += _FLOATS[kind].pack(value)
        except (struct.error, OverflowError):
            raise AxdrEncodeError(f"{value!r} out of range for {kind.name}") from None
    elif kind in _STRINGS:
        _expect(isinstance(value, str), data)
        assert isinstance(value, str)
        try:
            raw = value.encode(_STRINGS[kind])
        except UnicodeEncodeError:
            raise AxdrEncodeError(f"{value!r} is not a {kind.name}") from None
        out += encode_length(len(raw)) + raw
    elif kind is DataType.BIT_STRING:
        _expect(isinstance(value, bytes), data)
        assert isinstance(value, bytes)
        out += encode_length(value.bit_count if isinstance(value, BitString) else 8 * len(value)) + value
    elif kind is DataType.OCTET_STRING:
        _expect(isinstance(value, bytes), data)
        assert isinstance(value, bytes)
        out += encode_length(len(value)) + value
    elif kind in _FIXED_OCTETS:
        _expect(isinstance(value, bytes) and len(value) == _FIXED_OCTETS[kind], data)
        assert isinstance(value, bytes)
        out += value
    else:  # compact-array: carried raw, so check that it parses before sending it
        _expect(isinstance(value, bytes), data)
        assert isinstance(value, bytes)
        try:
            end = _skip_compact_array(value, 0, depth=depth)
        except AxdrError as exc:
            raise AxdrEncodeError(f"malformed compact-array: {exc}") from None
        _expect(end == len(value), data)
        out += value


def _expect(ok: bool, data: Data) -> None:
    if not ok:
        raise AxdrEncodeError(f"{data.type.name} cannot carry {data.value!r}")


def decode(buf: bytes, offset: int = 0) -> tuple[Data, int]:
    """Decode one ``Data`` at ``offset``; return it and the offset after it."""
    if not 0 <= offset <= len(buf):
        raise AxdrError(f"offset {offset} outside a {len(buf)}-octet buffer")
    return _decode_at(bytes(buf), offset, depth=0)


def _take(buf: bytes, offset: int, size: int) -> tuple[bytes, int]:
    if size > len(buf) - offset:
        raise AxdrError(f"need {size} octets, {len(buf) - offset} left")
    return buf[offset : offset + size], offset + size


def _tag(buf: bytes, offset: int) -> tuple[DataType, int]:
    if offset >= len(buf):
        raise AxdrError("truncated: no data type tag")
    try:
        return DataType(buf[offset]), offset + 1
    except ValueError:
        raise AxdrError(f"unknown data type tag {buf[offset]:#04x}") from None


def _decode_at(buf: bytes, offset: int, *, depth: int) -> tuple[Data, int]:
    kind, offset = _tag(buf, offset)
    if kind is DataType.NULL:
        return Data(kind), offset
    if kind in (DataType.ARRAY, DataType.STRUCTURE):
        if depth >= MAX_DEPTH:
            raise AxdrError(f"nesting deeper than {MAX_DEPTH}")
        count, offset = decode_length(buf, offset)
        if count > len(buf) - offset:  # each element takes at least its tag octet
            raise AxdrError(f"{count} elements cannot fit in {len(buf) - offset} octets")
        items = []
        for _ in range(count):
            item, offset = _decode_at(buf, offset, depth=depth + 1)
            items.append(item)
        return Data(kind, tuple(items)), offset
    if kind is DataType.BOOLEAN:
        raw, offset = _take(buf, offset, 1)
        return Data(kind, raw[0] != 0), offset
    if kind in _INTEGERS or kind in _FLOATS:
        layout = _INTEGERS.get(kind) or _FLOATS[kind]
        raw, offset = _take(buf, offset, layout.size)
        return Data(kind, layout.unpack(raw)[0]), offset
    if kind in _FIXED_OCTETS:
        raw, offset = _take(buf, offset, _FIXED_OCTETS[kind])
        return Data(kind, raw), offset
    if kind is DataType.COMPACT_ARRAY:
        end = _skip_compact_array(buf, offset, depth=depth)
        return Data(kind, buf[offset:end]), end
    size, offset = decode_length(buf, offset)
    if kind is DataType.BIT_STRING:
        raw, offset = _take(buf, offset, (size + 7) // 8)
        return Data(kind, raw if size % 8 == 0 else BitString(raw, bit_count=size)), offset
    raw, offset = _take(buf, offset, size)
    if kind is DataType.OCTET_STRING:
        return Data(kind, raw), offset
    try:
        return Data(kind, raw.decode(_STRINGS[kind])), offset
    except UnicodeDecodeError:
        raise AxdrError(f"invalid {kind.name}") from None


def _skip_compact_array(buf: bytes, offset: int, *, depth: int) -> int:
    offset = _skip_type_description(buf, offset, depth=depth)
    size, offset = decode_length(buf, offset)
    return _take(buf, offset, size)[1]


def _skip_type_description(buf: bytes, offset: int, *, depth: int) -> int:
    """Skip a compact-array TypeDescription (Green Book 9.5, compact-array)."""
    if depth >= MAX_DEPTH:
        raise AxdrError(f"nesting deeper than {MAX_DEPTH}")
    kind, offset = _tag(buf, offset)
    if kind is DataType.ARRAY:  # number-of-elements Unsigned16, then the element type
        return _skip_type_description(buf, _take(buf, offset, 2)[1], depth=depth + 1)
    if kind is DataType.STRUCTURE:
        count, offset = decode_length(buf, offset)
        if count > len(buf) - offset:
            raise AxdrError(f"{count} element types cannot fit in {len(buf) - offset} octets")
        for _ in range(count):
            offset = _skip_type_description(buf, offset, depth=depth + 1)
        return offset
    if kind is DataType.COMPACT_ARRAY:
        raise AxdrError("compact-array inside a compact-array description")
    return offset


def date_time(
    dt: datetime.datetime, *, deviation_minutes: int | None = None, clock_status: int = 0x00
) -> Data:
    """A COSEM date-time (12 octets) from the wall-clock fields of ``dt``; tzinfo is not applied.

    ``deviation_minutes`` goes on the wire as given (None = 0x8000, not specified); its sign
    convention is the caller's (IEC 62056-6-2 4.1.6.1). Day of week: Monday = 1.
    """
    if deviation_minutes is not None and not -720 <= deviation_minutes <= 720:
        raise AxdrEncodeError(f"deviation {deviation_minutes} outside -720..720")
    if not 0 <= clock_status <= 0xFF:
        raise AxdrEncodeError(f"clock status {clock_status} is not an octet")
    deviation = _NOT_SPECIFIED_DEVIATION if deviation_minutes is None else deviation_minutes & 0xFFFF
    octets = struct.pack(
        ">HBBBBBBBHB", dt.year, dt.month, dt.day, dt.isoweekday(), dt.hour, dt.minute, dt.second,
        dt.microsecond // 10_000, deviation, clock_status,
    )
    return Data(DataType.DATE_TIME, octets)


def parse_date_time(value: bytes) -> datetime.datetime | None:
    """The naive wall-clock time of a 12-octet date-time; None if any field is a wildcard."""
    if len(value) != 12:
        raise AxdrError(f"date-time is 12 octets, not {len(value)}")
    year, month, day, _dow, hour, minute, second, hundredths, _dev, _status = struct.unpack(
        ">HBBBBBBBHB", value
    )
    # 0xFF = not specified; month 0xFD/0xFE = DST end/begin; day 0xFD/0xFE = 2nd-last/last day.
    if year == 0xFFFF or month >= 0xFD or day >= 0xFD or 0xFF in (hour, minute, second):
        return None
    micro = 0 if hundredths == 0xFF else hundredths * 10_000
    try:
        return datetime.datetime(year, month, day, hour, minute, second, micro)
    except ValueError as exc:
        raise AxdrError(f"invalid date-time: {exc}") from None


def parse_deviation(value: bytes) -> int | None:
    """The raw deviation field (minutes) of a 12-octet date-time; None when not specified."""
    if len(value) != 12:
        raise AxdrError(f"date-time is 12 octets, not {len(value)}")
    raw = int.from_bytes(value[9:11], "big")
    return None if raw == _NOT_SPECIFIED_DEVIATION else raw - 0x10000 if raw & 0x8000 else raw
