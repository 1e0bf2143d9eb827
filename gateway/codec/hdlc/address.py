"""HDLC addresses (IEC 62056-46, address field): 7 bits per byte, bit 0 set on the last byte."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.codec.errors import LocalProtocolError
from gateway.codec.hdlc.errors import HdlcError

_SIZES = (1, 2, 4)  # IEC 62056-46, address field: a server address is 1, 2 or 4 bytes; a client address 1
_LAST_BYTE = 0x01  # IEC 62056-46, address field: the address extension bit ends the field
MAX_CLIENT_SAP = 0x7F  # IEC 62056-46, address field: a client address is one byte, 7 bits of it


def client_sap_fits(sap: int) -> bool:
    """True when ``sap`` can be an HDLC client address (a wrapper wPort may be up to 0xFFFF)."""
    return 0 <= sap <= MAX_CLIENT_SAP


@dataclass(frozen=True, slots=True)
class HdlcAddress:
    """One HDLC address: a client SAP, or a server's logical device and physical address."""

    upper: int
    lower: int | None
    size: int

    def __post_init__(self) -> None:
        if self.size not in _SIZES:
            raise LocalProtocolError(f"HDLC address size {self.size} is not 1, 2 or 4")
        limit = 1 << (7 * max(1, self.size // 2))
        if (self.size == 1) != (self.lower is None):
            raise LocalProtocolError("a lower (physical) address exists only in 2- and 4-byte addresses")
        if not 0 <= self.upper < limit or not 0 <= (self.lower or 0) < limit:
            raise LocalProtocolError(f"HDLC address {self.upper}/{self.lower} does not fit {self.size} bytes")

    @classmethod
    def client(cls, sap: int) -> HdlcAddress:
        """Return the one-byte address of client `sap`."""
        if not client_sap_fits(sap):
            raise LocalProtocolError(f"client SAP {sap} does not fit a one-byte HDLC address")
        return cls(upper=sap, lower=None, size=1)

    @classmethod
    def server(cls, *, logical_device: int, physical_address: int, size: int | None = None) -> HdlcAddress:
        """Return a server address; `size` None takes the smallest of 2 or 4 bytes that fits."""
        if size is None:
            size = 2 if logical_device < 0x80 and physical_address < 0x80 else 4
        if size == 1:
            raise LocalProtocolError("a 1-byte server address has no physical address: use HdlcAddress()")
        return cls(upper=logical_device, lower=physical_address, size=size)

    def encode(self) -> bytes:
        """Return the address field as sent on the line."""
        if self.lower is None:
            return bytes([self.upper << 1 | _LAST_BYTE])
        half = self.size // 2
        digits = [(value >> (7 * i)) & 0x7F for value in (self.upper, self.lower) for i in reversed(range(half))]
        return bytes(digit << 1 for digit in digits[:-1]) + bytes([digits[-1] << 1 | _LAST_BYTE])


def decode_address(buf: bytes, offset: int) -> tuple[HdlcAddress, int]:
    """Decode the address field at `offset`; return it and the offset just after it."""
    for size in range(1, 5):
        if offset + size > len(buf):
            raise HdlcError("address field truncated")
        if buf[offset + size - 1] & _LAST_BYTE:
            break
    else:
        raise HdlcError("address field longer than 4 bytes")
    if size not in _SIZES:
        raise HdlcError(f"address field of {size} bytes")
    digits = [byte >> 1 for byte in buf[offset : offset + size]]
    if size == 1:
        return HdlcAddress(upper=digits[0], lower=None, size=1), offset + 1
    half = size // 2
    upper = lower = 0
    for digit in digits[:half]:
        upper = upper << 7 | digit
    for digit in digits[half:]:
        lower = lower << 7 | digit
    return HdlcAddress(upper=upper, lower=lower, size=size), offset + size
