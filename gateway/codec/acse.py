"""ACSE APDUs (AARQ/AARE/RLRQ/RLRE, BER) and the xDLMS Initiate PDUs they carry (Green Book 9.4, A-XDR).

    AARQ 60 len | A1 application-context-name | A6 calling-AP-title | 8A acse-requirements
                | 8B mechanism-name | AC calling-authentication-value | BE user-information
    AARE 61 len | A1 | A2 result | A3 result-source-diagnostic | A4 responding-AP-title
                | 88 acse-requirements | 89 mechanism-name | AA responding-authentication-value | BE
    RLRQ 62 / RLRE 63 len | 80 reason | BE user-information
    user-information = BE len 04 len <xDLMS APDU: InitiateRequest 01.., InitiateResponse 08.., or ciphered>

Decoders skip the optional ACSE fields DLMS leaves unused (called-AP-title, AE qualifiers, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from gateway.codec.errors import LocalProtocolError, RemoteProtocolError

AARQ, AARE, RLRQ, RLRE = 0x60, 0x61, 0x62, 0x63  # Green Book 9.4, ACSE-APDU tags
APPLICATION_CONTEXT_LN_NO_CIPHERING = 1  # Green Book 9.4.2.2.2, application context names
APPLICATION_CONTEXT_SN_NO_CIPHERING = 2
APPLICATION_CONTEXT_LN_CIPHERING = 3
APPLICATION_CONTEXT_SN_CIPHERING = 4
_CONTEXT_OID = bytes.fromhex("608574050801")  # 2.16.756.5.8.1.x (DLMS-UA application context)
_MECHANISM_OID = bytes.fromhex("608574050802")  # 2.16.756.5.8.2.x (DLMS-UA authentication mechanism)
_AUTHENTICATION_REQUIRED = b"\x07\x80"  # BIT STRING {authentication(0)}: 7 unused bits, bit 0 set
INITIATE_REQUEST, INITIATE_RESPONSE = 0x01, 0x08  # Green Book 9.5, xDLMS-APDU tags
_CONFORMANCE_HEADER = bytes.fromhex("5f1f0400")  # [APPLICATION 31] BIT STRING, 4 octets, 0 unused bits
VAA_NAME_LN = 0x0007  # Green Book 9.5, InitiateResponse vaa-name for LN referencing


class AcseError(RemoteProtocolError):
    """A malformed ACSE APDU or Initiate PDU."""


class AcseEncodeError(LocalProtocolError):
    """A field out of range for its ACSE or Initiate encoding."""


class Mechanism(IntEnum):
    NONE = 0
    LLS = 1
    HLS = 2  # manufacturer specific
    HLS_MD5 = 3
    HLS_SHA1 = 4
    HLS_GMAC = 5
    HLS_SHA256 = 6
    HLS_ECDSA = 7


class AssociationResult(IntEnum):
    ACCEPTED = 0
    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class AcseServiceUser(IntEnum):
    NULL = 0
    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NAME_NOT_SUPPORTED = 2
    AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED = 11
    AUTHENTICATION_MECHANISM_NAME_REQUIRED = 12
    AUTHENTICATION_FAILURE = 13
    AUTHENTICATION_REQUIRED = 14


class AcseServiceProvider(IntEnum):
    NULL = 0
    NO_REASON_GIVEN = 1
    NO_COMMON_ACSE_VERSION = 2


class Conformance(IntFlag):
    """The 24-bit conformance block: the three wire octets read big-endian (Green Book bit n = 1 << 23-n)."""

    RESERVED_ZERO = 1 << 23
    GENERAL_PROTECTION = 1 << 22
    GENERAL_BLOCK_TRANSFER = 1 << 21
    READ = 1 << 20
    WRITE = 1 << 19
    UNCONFIRMED_WRITE = 1 << 18
    DELTA_VALUE_ENCODING = 1 << 17
    RESERVED_SEVEN = 1 << 16
    ATTRIBUTE0_SUPPORTED_WITH_SET = 1 << 15
    PRIORITY_MGMT_SUPPORTED = 1 << 14
    ATTRIBUTE0_SUPPORTED_WITH_GET = 1 << 13
    BLOCK_TRANSFER_WITH_GET_OR_READ = 1 << 12
    BLOCK_TRANSFER_WITH_SET_OR_WRITE = 1 << 11
    BLOCK_TRANSFER_WITH_ACTION = 1 << 10
    MULTIPLE_REFERENCES = 1 << 9
    INFORMATION_REPORT = 1 << 8
    DATA_NOTIFICATION = 1 << 7
    ACCESS = 1 << 6
    PARAMETERIZED_ACCESS = 1 << 5
    GET = 1 << 4
    SET = 1 << 3
    SELECTIVE_ACCESS = 1 << 2
    EVENT_NOTIFICATION = 1 << 1
    ACTION = 1 << 0


@dataclass(frozen=True, slots=True)
class Aarq:
    application_context: int
    calling_ap_title: bytes | None = None
    mechanism: Mechanism | None = None  # sender-acse-requirements is sent iff this is present
    calling_authentication_value: bytes | None = None
    user_information: bytes | None = None


@dataclass(frozen=True, slots=True)
class Aare:
    application_context: int
    result: AssociationResult
    diagnostic: int = AcseServiceUser.NULL  # acse-service-user unless diagnostic_is_provider
    diagnostic_is_provider: bool = False
    responding_ap_title: bytes | None = None
    mechanism: Mechanism | None = None
    responding_authentication_value: bytes | None = None
    user_information: bytes | None = None


@dataclass(frozen=True, slots=True)
class Rlrq:
    reason: int | None = None  # 0 normal, 1 urgent, 30 user-defined
    user_information: bytes | None = None


@dataclass(frozen=True, slots=True)
class Rlre:
    reason: int | None = None  # 0 normal, 1 not-finished, 30 user-defined
    user_information: bytes | None = None


@dataclass(frozen=True, slots=True)
class InitiateRequest:
    proposed_conformance: int
    client_max_receive_pdu_size: int
    dlms_version: int = 6
    dedicated_key: bytes | None = None
    response_allowed: bool = True
    proposed_quality_of_service: int | None = None


@dataclass(frozen=True, slots=True)
class InitiateResponse:
    negotiated_conformance: int
    server_max_receive_pdu_size: int
    dlms_version: int = 6
    vaa_name: int = VAA_NAME_LN
    negotiated_quality_of_service: int | None = None


# --- BER ---


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    octets = (size.bit_length() + 7) // 8
    return bytes([tag, 0x80 | octets]) + size.to_bytes(octets, "big") + content


def _read_tlv(buf: bytes, offset: int) -> tuple[int, bytes, int]:
    """(tag, content, offset after) of the BER TLV at ``offset``; single-octet tags, definite lengths."""
    if len(buf) - offset < 2:
        raise AcseError("truncated BER element")
    tag, first = buf[offset], buf[offset + 1]
    if tag & 0x1F == 0x1F:
        raise AcseError(f"multi-octet BER tag {tag:#04x}")
    offset += 2
    size = first
    if first & 0x80:
        octets = first & 0x7F
        if not 0 < octets <= 3 or len(buf) - offset < octets:  # 0x80 = indefinite, not allowed here
            raise AcseError(f"unsupported BER length form {first:#04x}")
        size, offset = int.from_bytes(buf[offset : offset + octets], "big"), offset + octets
    if size > len(buf) - offset:
        raise AcseError(f"BER element of {size} octets, {len(buf) - offset} left")
    return tag, buf[offset : offset + size], offset + size


def _fields(apdu: bytes, tag: int) -> dict[int, bytes]:
    """The inner elements of the one outer element ``tag`` that is all of ``apdu``, keyed by tag."""
    outer, content, end = _read_tlv(bytes(apdu), 0)
    if outer != tag:
        raise AcseError(f"expected tag {tag:#04x}, got {outer:#04x}")
    if end != len(apdu):
        raise AcseError(f"{len(apdu) - end} octets after the APDU")
    fields, offset = {}, 0
    while offset < len(content):
        inner, value, offset = _read_tlv(content, offset)
        if inner in fields:
            raise AcseError(f"repeated element {inner:#04x}")
        fields[inner] = value
    return fields


def _unwrap(content: bytes, tag: int) -> bytes:
    """The content of an explicitly tagged field holding exactly one ``tag`` element."""
    inner, value, end = _read_tlv(content, 0)
    if inner != tag:
        raise AcseError(f"expected element {tag:#04x}, got {inner:#04x}")
    if end != len(content):
        raise AcseError(f"{len(content) - end} octets after element {tag:#04x}")
    return value


def _integer(content: bytes) -> int:
    if not 0 < len(content) <= 4:
        raise AcseError(f"INTEGER of {len(content)} octets")
    return int.from_bytes(content, "big", signed=True)


def _oid_arc(oid: bytes, prefix: bytes, what: str) -> int:
    if len(oid) != len(prefix) + 1 or not oid.startswith(prefix):
        raise AcseError(f"unknown {what} {oid.hex()}")
    return oid[-1]


def _mechanism(oid: bytes) -> Mechanism:
    arc = _oid_arc(oid, _MECHANISM_OID, "authentication mechanism")
    try:
        return Mechanism(arc)
    except ValueError:
        raise AcseError(f"unknown authentication mechanism {arc}") from None


def _small(value: int, what: str, limit: int = 0x7F) -> int:
    if not 0 <= value <= limit:
        raise AcseEncodeError(f"{what} {value} out of range")
    return value


def _context(context: int) -> bytes:
    return _tlv(0xA1, _tlv(0x06, _CONTEXT_OID + bytes([_small(context, "application context")])))


def _optional(tag: int, content: bytes | None) -> bytes:
    return b"" if content is None else _tlv(tag, content)


def _user_information(user_information: bytes | None) -> bytes:
    return b"" if user_information is None else _tlv(0xBE, _tlv(0x04, user_information))


def _integer_field(tag: int, value: int | None) -> bytes:
    return b"" if value is None else _tlv(tag, bytes([_small(value, "INTEGER")]))


# --- AARQ / AARE / RLRQ / RLRE ---


def encode_aarq(a: Aarq) -> bytes:
    """Encode an AARQ."""
    return _tlv(AARQ, b"".join((
        _context(a.application_context),
        _optional(0xA6, None if a.calling_ap_title is None else _tlv(0x04, a.calling_ap_title)),
        b"" if a.mechanism is None else _tlv(0x8A, _AUTHENTICATION_REQUIRED),
        b"" if a.mechanism is None else _tlv(0x8B, _MECHANISM_OID + bytes([a.mechanism])),
        _optional(0xAC, None if a.calling_authentication_value is None
                  else _tlv(0x80, a.calling_authentication_value)),
        _user_information(a.user_information),
    )))


def decode_aarq(apdu: bytes) -> Aarq:
    """Decode an AARQ; raises AcseError."""
    fields = _fields(apdu, AARQ)
    return Aarq(
        application_context=_decode_context(fields),
        calling_ap_title=_unwrap(fields[0xA6], 0x04) if 0xA6 in fields else None,
        mechanism=_mechanism(fields[0x8B]) if 0x8B in fields else None,
        calling_authentication_value=_unwrap(fields[0xAC], 0x80) if 0xAC in fields else None,
        user_information=_unwrap(fields[0xBE], 0x04) if 0xBE in fields else None,
    )


def encode_aare(a: Aare) -> bytes:
    """Encode an AARE."""
    source = 0xA2 if a.diagnostic_is_provider else 0xA1
    return _tlv(AARE, b"".join((
        _context(a.application_context),
        _tlv(0xA2, _tlv(0x02, bytes([_small(a.result, "result")]))),
        _tlv(0xA3, _tlv(source, _tlv(0x02, bytes([_small(a.diagnostic, "diagnostic")])))),
        _optional(0xA4, None if a.responding_ap_title is None else _tlv(0x04, a.responding_ap_title)),
        b"" if a.mechanism is None else _tlv(0x88, _AUTHENTICATION_REQUIRED),
        b"" if a.mechanism is None else _tlv(0x89, _MECHANISM_OID + bytes([a.mechanism])),
        _optional(0xAA, None if a.responding_authentication_value is None
                  else _tlv(0x80, a.responding_authentication_value)),
        _user_information(a.user_information),
    )))


def decode_aare(apdu: bytes) -> Aare:
    """Decode an AARE; raises AcseError."""
    fields = _fields(apdu, AARE)
    if 0xA2 not in fields or 0xA3 not in fields:
        raise AcseError("AARE without result or result-source-diagnostic")
    try:
        result = AssociationResult(_integer(_unwrap(fields[0xA2], 0x02)))
    except ValueError:
        raise AcseError("unknown association result") from None
    source, diagnostic, end = _read_tlv(fields[0xA3], 0)
    if source not in (0xA1, 0xA2) or end != len(fields[0xA3]):
        raise AcseError(f"bad result-source-diagnostic {fields[0xA3].hex()}")
    return Aare(
        application_context=_decode_context(fields),
        result=result,
        diagnostic=_integer(_unwrap(diagnostic, 0x02)),
        diagnostic_is_provider=source == 0xA2,
        responding_ap_title=_unwrap(fields[0xA4], 0x04) if 0xA4 in fields else None,
        mechanism=_mechanism(fields[0x89]) if 0x89 in fields else None,
        responding_authentication_value=_unwrap(fields[0xAA], 0x80) if 0xAA in fields else None,
        user_information=_unwrap(fields[0xBE], 0x04) if 0xBE in fields else None,
    )


def association_accepted(aare: bytes) -> bool:
    """True when ``aare`` is a well-formed AARE whose result is accepted; anything else accepts nothing."""
    try:
        return decode_aare(aare).result is AssociationResult.ACCEPTED
    except AcseError:
        return False


def _decode_context(fields: dict[int, bytes]) -> int:
    if 0xA1 not in fields:
        raise AcseError("no application-context-name")
    return _oid_arc(_unwrap(fields[0xA1], 0x06), _CONTEXT_OID, "application context")


def encode_rlrq(r: Rlrq) -> bytes:
    """Encode an RLRQ."""
    return _tlv(RLRQ, _integer_field(0x80, r.reason) + _user_information(r.user_information))


def decode_rlrq(apdu: bytes) -> Rlrq:
    """Decode an RLRQ; raises AcseError."""
    reason, user_information = _release(_fields(apdu, RLRQ))
    return Rlrq(reason, user_information)


def encode_rlre(r: Rlre) -> bytes:
    """Encode an RLRE."""
    return _tlv(RLRE, _integer_field(0x80, r.reason) + _user_information(r.user_information))


def decode_rlre(apdu: bytes) -> Rlre:
    """Decode an RLRE; raises AcseError."""
    reason, user_information = _release(_fields(apdu, RLRE))
    return Rlre(reason, user_information)


def _release(fields: dict[int, bytes]) -> tuple[int | None, bytes | None]:
    return (
        _integer(fields[0x80]) if 0x80 in fields else None,
        _unwrap(fields[0xBE], 0x04) if 0xBE in fields else None,
    )


# --- xDLMS InitiateRequest / InitiateResponse (A-XDR) ---


def _conformance(value: int) -> bytes:
    if not 0 <= value < 1 << 24:
        raise AcseEncodeError(f"conformance {value:#x} is not 24 bits")
    return _CONFORMANCE_HEADER + value.to_bytes(3, "big")


def _u(value: int, size: int, what: str) -> bytes:
    if not 0 <= value < 1 << (8 * size):
        raise AcseEncodeError(f"{what} {value} out of range")
    return value.to_bytes(size, "big")


def _quality(value: int | None) -> bytes:
    if value is None:
        return b"\x00"
    if not -128 <= value <= 127:
        raise AcseEncodeError(f"quality of service {value} is not an Integer8")
    return b"\x01" + value.to_bytes(1, "big", signed=True)


def encode_initiate_request(r: InitiateRequest) -> bytes:
    """Encode an xDLMS InitiateRequest."""
    key = b"\x00" if r.dedicated_key is None else b"\x01" + _u(len(r.dedicated_key), 1, "key length") + r.dedicated_key
    allowed = b"\x00" if r.response_allowed else b"\x01\x00"  # DEFAULT TRUE: absent when true
    return (bytes([INITIATE_REQUEST]) + key + allowed + _quality(r.proposed_quality_of_service)
            + _u(r.dlms_version, 1, "DLMS version") + _conformance(r.proposed_conformance)
            + _u(r.client_max_receive_pdu_size, 2, "max receive PDU size"))


def encode_initiate_response(r: InitiateResponse) -> bytes:
    """Encode an xDLMS InitiateResponse."""
    return (bytes([INITIATE_RESPONSE]) + _quality(r.negotiated_quality_of_service)
            + _u(r.dlms_version, 1, "DLMS version") + _conformance(r.negotiated_conformance)
            + _u(r.server_max_receive_pdu_size, 2, "max receive PDU size") + _u(r.vaa_name, 2, "vaa-name"))


class _Cursor:
    def __init__(self, buf: bytes, tag: int) -> None:
        self.buf, self.pos = bytes(buf), 0
        if self.uint(1) != tag:
            raise AcseError(f"expected xDLMS tag {tag:#04x}, got {self.buf[0]:#04x}")

    def take(self, size: int) -> bytes:
        if size > len(self.buf) - self.pos:
            raise AcseError("truncated Initiate PDU")
        self.pos += size
        return self.buf[self.pos - size : self.pos]

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def present(self) -> bool:
        flag = self.uint(1)
        if flag > 1:
            raise AcseError(f"optional-field flag {flag:#04x}")
        return flag == 1

    def quality(self) -> int | None:
        return int.from_bytes(self.take(1), "big", signed=True) if self.present() else None

    def conformance(self) -> int:
        if self.take(4) != _CONFORMANCE_HEADER:
            raise AcseError("malformed conformance block")
        return self.uint(3)

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise AcseError(f"{len(self.buf) - self.pos} octets after the Initiate PDU")


def decode_initiate_request(b: bytes) -> InitiateRequest:
    """Decode an xDLMS InitiateRequest; raises AcseError."""
    c = _Cursor(b, INITIATE_REQUEST)
    key = c.take(c.uint(1)) if c.present() else None
    allowed = c.uint(1) != 0 if c.present() else True
    request = InitiateRequest(
        dedicated_key=key, response_allowed=allowed, proposed_quality_of_service=c.quality(),
        dlms_version=c.uint(1), proposed_conformance=c.conformance(), client_max_receive_pdu_size=c.uint(2),
    )
    c.done()
    return request


def decode_initiate_response(b: bytes) -> InitiateResponse:
    """Decode an xDLMS InitiateResponse; raises AcseError."""
    c = _Cursor(b, INITIATE_RESPONSE)
    response = InitiateResponse(
        negotiated_quality_of_service=c.quality(), dlms_version=c.uint(1), negotiated_conformance=c.conformance(),
        server_max_receive_pdu_size=c.uint(2), vaa_name=c.uint(2),
    )
    c.done()
    return response
