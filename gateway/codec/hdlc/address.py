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
_ONE_BYTE_RESERVED = 0x7E  # IEC 62056-46: 0x7E (calling) and 0x7F (all-station) in a 1-byte half

# IEC 62056-46, reserved special HDLC addresses: the lower (physical) address 0x00 is no-station,
# 0x01..0x0F are reserved, 0x3FFE is "calling" and 0x3FFF all-station; the upper (logical device)
# address 0x00 is no-station and 0x3FFF all-station. A meter can hold only what lies between.
PHYSICAL_ADDRESSES = range(0x10, 0x3FFD + 1)
LOGICAL_DEVICES = range(0x01, 0x3FFD + 1)
ALL_STATION_HALF = {1: 0x7F, 2: 0x3FFF}  # IEC 62056-46: all-station in a 1-byte and in a 2-byte half


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
        if size is None:  # 0x7E/0x7F in a 1-byte half are calling/all-station: a meter there needs 4 bytes
            size = 2 if logical_device < _ONE_BYTE_RESERVED and physical_address < _ONE_BYTE_RESERVED else 4
        if size == 1:
            raise LocalProtocolError("a 1-byte server address has no physical address: use HdlcAddress()")
        return cls(upper=logical_device, lower=physical_address, size=size)

    @classmethod
    def all_station(cls, *, logical_device: int | None = None, size: int = 2) -> HdlcAddress:
        """Every meter on the line (lower all-station); upper is one logical device or all-station too."""
        every = ALL_STATION_HALF[size // 2]
        return cls(upper=every if logical_device is None else logical_device, lower=every, size=size)

    def reaches(self, *, logical_device: int, physical_address: int) -> bool:
        """Whether a frame to this address is for the station at (logical_device, physical_address)."""
        if self.lower is None:
            return False
        every = ALL_STATION_HALF[self.size // 2]
        return self.lower in (physical_address, every) and self.upper in (logical_device, every)

    @property
    def is_all_station(self) -> bool:
        """Whether the lower (physical) half is the all-station address."""
        return self.lower is not None and self.lower == ALL_STATION_HALF[self.size // 2]

    def encode(self) -> bytes:
        """Return the address field as sent on the line."""
        if self.lower is None:
            return bytes([self.upper << 1 | _LAST_BYTE])
        half = self.size // 2
        digits = [(value >> (7 * i)) & 0x7F for value in (self.upper, self.lower) for i in reversed(range(half))]
        return bytes(digit << 1 for digit in digits[:-1]) + bytes([digits[-1] << 1 | _LAST_BYTE])


@dataclass(frozen=True, slots=True)
class AddressProblem:
    """Why a meter cannot sit at an address: the field at fault and a message for the operator."""

    field: str  # "physical_address" or "logical_device"
    message: str

    def __str__(self) -> str:
        return self.message


def meter_address_problem(*, logical_device: object, physical_address: object) -> AddressProblem | None:
    """Why a meter cannot sit at this HDLC server address, or None when it can (the one rule for every caller)."""
    if type(physical_address) is not int or physical_address not in PHYSICAL_ADDRESSES:  # bool is no address
        return AddressProblem("physical_address", f"physical address {_short(physical_address)} is not a meter's: "
                              f"must be {PHYSICAL_ADDRESSES.start}..{PHYSICAL_ADDRESSES.stop - 1} (IEC 62056-46)")
    if type(logical_device) is not int or logical_device not in LOGICAL_DEVICES:
        return AddressProblem("logical_device", f"logical device {_short(logical_device)} is not a meter's: "
                              f"must be {LOGICAL_DEVICES.start}..{LOGICAL_DEVICES.stop - 1} (IEC 62056-46)")
    return None


def _short(value: object) -> str:
    """The value for a message; a 5,000-digit number is neither converted nor echoed whole."""
    if type(value) is int and value.bit_length() > 64:
        return f"of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 20 else text[:17] + "..."


MAX_DECODED_CACHED = 4096  # addresses remembered once decoded: the few a line carries, never unbounded noise
_decoded: dict[bytes, HdlcAddress] = {}


def decode_address(buf: bytes | bytearray, offset: int, stop: int | None = None) -> tuple[HdlcAddress, int]:
    """Decode the address field at `offset` (ending before `stop`); return it and the offset just after it.

    Every frame in carries two addresses, mostly the same few on a line: each distinct field is
    decoded once and then found by its bytes (a bounded table, so noise cannot grow it).
    """
    end = offset
    limit = min(len(buf) if stop is None else stop, offset + 4)
    while end < limit and not buf[end] & _LAST_BYTE:
        end += 1
    if end >= limit:
        raise HdlcError("address field truncated" if limit < offset + 4 else "address field longer than 4 bytes")
    field = bytes(buf[offset : end + 1])
    address = _decoded.get(field)
    if address is None:
        address = _decode_field(field)
        if len(_decoded) < MAX_DECODED_CACHED:
            _decoded[field] = address
    return address, end + 1


def shared_address(address: HdlcAddress) -> HdlcAddress:
    """The instance decode_address hands out for this address (equal to it), so a frame's addresses match
    a link's by identity."""
    return decode_address(address.encode(), 0)[0]


def _decode_field(field: bytes) -> HdlcAddress:
    size = len(field)
    if size not in _SIZES:
        raise HdlcError(f"address field of {size} bytes")
    digits = [byte >> 1 for byte in field]
    if size == 1:
        return HdlcAddress(upper=digits[0], lower=None, size=1)
    half = size // 2
    upper = lower = 0
    for digit in digits[:half]:
        upper = upper << 7 | digit
    for digit in digits[half:]:
        lower = lower << 7 | digit
    return HdlcAddress(upper=upper, lower=lower, size=size)
