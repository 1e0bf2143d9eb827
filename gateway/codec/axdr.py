"""A-XDR encoding of COSEM ``Data`` (IEC 62056-6-2 / DLMS Green Book, clause 9.5).

    Data ::= tag(1 byte) [length] contents
    length: 1 byte < 0x80, else 0x8N followed by N bytes big-endian (BER-style)

``Data`` is a small typed value: the DLMS type travels with the Python value, because a
COSEM server must answer ``long-unsigned`` where it was asked for ``long-unsigned``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from gateway.codec.errors import RemoteProtocolError


class AxdrError(RemoteProtocolError):
    """Malformed A-XDR data."""


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

    @property
    def items(self) -> tuple[Data, ...]:
        """The elements of an array or structure."""
        if not isinstance(self.value, tuple):
            raise TypeError(f"{self.type.name} has no items")
        return self.value


# encode(data: Data) -> bytes and decode(buf: bytes, offset: int = 0) -> tuple[Data, int]
# follow below (owned by the DLMS codec work).
