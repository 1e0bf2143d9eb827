"""xDLMS services in plain (unciphered) form: GET, SET, ACTION and errors (Green Book 9.5, A-XDR).

    Get-Request  C0 | choice | invoke-id-and-priority | ...      Get-Response C4 | choice | ...
    Set-Request  C1 | ...   Set-Response C5 | ...   Action-Request C3 | ...   Action-Response C7 | ...
    Cosem-Attribute-Descriptor = class-id(2) | logical-name(6) | attribute-id(1)
    access-selection OPTIONAL  = 00 | 01 selector(1) Data
    exception-response D8 | state-error | service-error     confirmedServiceError 0E | service | type | value

``invoke_id`` is always the whole invoke-id-and-priority octet (bits 0-3 invoke id, bit 6
service class, bit 7 priority): it is kept as received and a response carries the same octet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from gateway.codec import axdr
from gateway.codec.axdr import Data
from gateway.codec.errors import LocalProtocolError, RemoteProtocolError

GET_REQUEST, SET_REQUEST, ACTION_REQUEST = 0xC0, 0xC1, 0xC3  # Green Book 9.5, xDLMS-APDU tags
GET_RESPONSE, SET_RESPONSE, ACTION_RESPONSE = 0xC4, 0xC5, 0xC7
EXCEPTION_RESPONSE, CONFIRMED_SERVICE_ERROR, DATA_NOTIFICATION = 0xD8, 0x0E, 0x0F
INVOCATION_COUNTER_ERROR = 6  # Green Book 9.5, EXCEPTION-Response service-error choice with an Unsigned32
# Green Book 9.5 Invoke-Id-And-Priority: bits 0-3 invoke id, bit 6 service class (1 confirmed,
# 0 unconfirmed: no response), bit 7 priority (1 high).
INVOKE_ID_MASK, SERVICE_CLASS_CONFIRMED, PRIORITY_HIGH = 0x0F, 0x40, 0x80


def invoke_id_and_priority(invoke_id: int, *, confirmed: bool, high_priority: bool = True) -> int:
    """The Invoke-Id-And-Priority octet."""
    if not 0 <= invoke_id <= INVOKE_ID_MASK:
        raise LocalProtocolError(f"invoke id {invoke_id} is not 0..15")
    return invoke_id | (SERVICE_CLASS_CONFIRMED if confirmed else 0) | (PRIORITY_HIGH if high_priority else 0)


def is_confirmed(invoke_id_and_priority: int) -> bool:
    """Whether the request expects a response (service class bit)."""
    return bool(invoke_id_and_priority & SERVICE_CLASS_CONFIRMED)


_Enum = TypeVar("_Enum", bound=IntEnum)


class XdlmsError(RemoteProtocolError):
    """A malformed xDLMS APDU."""


class UnsupportedApduError(XdlmsError):
    """A well-tagged xDLMS APDU of a kind this codec does not handle."""


class XdlmsEncodeError(LocalProtocolError):
    """A field out of range for its xDLMS encoding."""


class DataAccessResult(IntEnum):
    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_GET_ABORTED = 15
    NO_LONG_GET_IN_PROGRESS = 16
    LONG_SET_ABORTED = 17
    NO_LONG_SET_IN_PROGRESS = 18
    DATA_BLOCK_NUMBER_INVALID = 19
    OTHER_REASON = 250


class ActionResult(IntEnum):
    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_ACTION_ABORTED = 15
    NO_LONG_ACTION_IN_PROGRESS = 16
    OTHER_REASON = 250


@dataclass(frozen=True, slots=True)
class AttributeDescriptor:
    class_id: int
    logical_name: bytes
    attribute_id: int


@dataclass(frozen=True, slots=True)
class MethodDescriptor:
    class_id: int
    logical_name: bytes
    method_id: int


@dataclass(frozen=True, slots=True)
class AccessSelection:
    selector: int
    parameters: Data


@dataclass(frozen=True, slots=True)
class GetRequestNormal:
    invoke_id: int
    attribute: AttributeDescriptor
    access: AccessSelection | None = None


@dataclass(frozen=True, slots=True)
class GetRequestNext:
    invoke_id: int
    block_number: int


@dataclass(frozen=True, slots=True)
class GetRequestWithList:
    invoke_id: int
    items: tuple[tuple[AttributeDescriptor, AccessSelection | None], ...]


@dataclass(frozen=True, slots=True)
class GetResponseNormal:
    invoke_id: int
    result: Data | DataAccessResult


@dataclass(frozen=True, slots=True)
class GetResponseWithDataBlock:
    invoke_id: int
    last_block: bool
    block_number: int
    raw_data: bytes | DataAccessResult


@dataclass(frozen=True, slots=True)
class GetResponseWithList:
    invoke_id: int
    results: tuple[Data | DataAccessResult, ...]


@dataclass(frozen=True, slots=True)
class SetRequestNormal:
    invoke_id: int
    attribute: AttributeDescriptor
    access: AccessSelection | None
    value: Data


@dataclass(frozen=True, slots=True)
class SetRequestWithFirstDataBlock:
    invoke_id: int
    attribute: AttributeDescriptor
    access: AccessSelection | None
    last_block: bool
    block_number: int
    raw_data: bytes


@dataclass(frozen=True, slots=True)
class SetRequestWithDataBlock:
    invoke_id: int
    last_block: bool
    block_number: int
    raw_data: bytes


@dataclass(frozen=True, slots=True)
class SetResponseNormal:
    invoke_id: int
    result: DataAccessResult


@dataclass(frozen=True, slots=True)
class SetResponseDataBlock:
    invoke_id: int
    block_number: int


@dataclass(frozen=True, slots=True)
class SetResponseLastDataBlock:
    invoke_id: int
    result: DataAccessResult
    block_number: int


@dataclass(frozen=True, slots=True)
class ActionRequestNormal:
    invoke_id: int
    method: MethodDescriptor
    parameters: Data | None


@dataclass(frozen=True, slots=True)
class ActionResponseNormal:
    invoke_id: int
    result: ActionResult
    return_parameters: Data | DataAccessResult | None = None


@dataclass(frozen=True, slots=True)
class ExceptionResponse:
    state_error: int  # 1 service-not-allowed, 2 service-unknown
    service_error: int  # 1 operation-not-possible .. 6 invocation-counter-error
    invocation_counter: int | None = None  # only with invocation-counter-error


@dataclass(frozen=True, slots=True)
class ConfirmedServiceError:
    service: int  # 1 initiateError, 2 getStatus, ... (ConfirmedServiceError choice)
    error_type: int  # ServiceError choice: 6 initiate, 5 access, ...
    error_value: int  # the enum within it: e.g. initiate 1 dlms-version-too-low


@dataclass(frozen=True, slots=True)
class DataNotification:
    long_invoke_id: int  # long-invoke-id-and-priority, 4 octets, kept whole
    date_time: bytes | None  # 12 octets when present
    body: Data


XdlmsApdu = (
    GetRequestNormal | GetRequestNext | GetRequestWithList | GetResponseNormal | GetResponseWithDataBlock
    | GetResponseWithList | SetRequestNormal | SetRequestWithFirstDataBlock | SetRequestWithDataBlock
    | SetResponseNormal | SetResponseDataBlock | SetResponseLastDataBlock | ActionRequestNormal
    | ActionResponseNormal | ExceptionResponse | ConfirmedServiceError | DataNotification
)


# --- decoding ---


class _Reader:
    """Bounds-checked cursor over one APDU; every shortfall is an XdlmsError."""

    def __init__(self, apdu: bytes) -> None:
        self.buf, self.pos = bytes(apdu), 0

    def take(self, size: int) -> bytes:
        if size > len(self.buf) - self.pos:
            raise XdlmsError(f"truncated APDU: need {size} octets at {self.pos}")
        self.pos += size
        return self.buf[self.pos - size : self.pos]

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def boolean(self) -> bool:
        return self.uint(1) != 0

    def count(self) -> int:
        """A SEQUENCE OF count; each element needs at least one octet, so bound it by what is left."""
        try:
            count, self.pos = axdr.decode_length(self.buf, self.pos)
        except axdr.AxdrError as exc:
            raise XdlmsError(str(exc)) from exc
        if count > len(self.buf) - self.pos:
            raise XdlmsError(f"{count} elements cannot fit in {len(self.buf) - self.pos} octets")
        return count

    def octet_string(self) -> bytes:
        try:
            size, self.pos = axdr.decode_length(self.buf, self.pos)
        except axdr.AxdrError as exc:
            raise XdlmsError(str(exc)) from exc
        return self.take(size)

    def data(self) -> Data:
        try:
            value, self.pos = axdr.decode(self.buf, self.pos)
        except axdr.AxdrError as exc:
            raise XdlmsError(f"bad Data: {exc}") from exc
        return value

    def optional(self) -> bool:
        flag = self.uint(1)
        if flag > 1:
            raise XdlmsError(f"optional-field flag {flag:#04x}")
        return flag == 1

    def attribute(self) -> AttributeDescriptor:
        return AttributeDescriptor(self.uint(2), self.take(6), self.uint(1))

    def access(self) -> AccessSelection | None:
        return AccessSelection(self.uint(1), self.data()) if self.optional() else None

    def enum(self, kind: type[_Enum]) -> _Enum:
        raw = self.uint(1)
        try:
            return kind(raw)
        except ValueError:
            raise XdlmsError(f"{raw} is not a {kind.__name__}") from None

    def data_result(self) -> Data | DataAccessResult:
        """Get-Data-Result: CHOICE { data [0], data-access-result [1] }."""
        choice = self.uint(1)
        if choice > 1:
            raise XdlmsError(f"Get-Data-Result choice {choice}")
        return self.data() if choice == 0 else self.enum(DataAccessResult)


def _get_request(r: _Reader, choice: int) -> XdlmsApdu:
    invoke_id = r.uint(1)
    if choice == 1:
        return GetRequestNormal(invoke_id, r.attribute(), r.access())
    if choice == 2:
        return GetRequestNext(invoke_id, r.uint(4))
    return GetRequestWithList(invoke_id, tuple((r.attribute(), r.access()) for _ in range(r.count())))


def _get_response(r: _Reader, choice: int) -> XdlmsApdu:
    invoke_id = r.uint(1)
    if choice == 1:
        return GetResponseNormal(invoke_id, r.data_result())
    if choice == 2:
        last_block, block_number, kind = r.boolean(), r.uint(4), r.uint(1)
        if kind > 1:
            raise XdlmsError(f"DataBlock-G result choice {kind}")
        raw = r.octet_string() if kind == 0 else r.enum(DataAccessResult)
        return GetResponseWithDataBlock(invoke_id, last_block, block_number, raw)
    return GetResponseWithList(invoke_id, tuple(r.data_result() for _ in range(r.count())))


def _set_request(r: _Reader, choice: int) -> XdlmsApdu:
    invoke_id = r.uint(1)
    if choice == 1:
        return SetRequestNormal(invoke_id, r.attribute(), r.access(), r.data())
    if choice == 2:
        attribute, access = r.attribute(), r.access()
        return SetRequestWithFirstDataBlock(invoke_id, attribute, access, r.boolean(), r.uint(4), r.octet_string())
    return SetRequestWithDataBlock(invoke_id, r.boolean(), r.uint(4), r.octet_string())


def _set_response(r: _Reader, choice: int) -> XdlmsApdu:
    invoke_id = r.uint(1)
    if choice == 1:
        return SetResponseNormal(invoke_id, r.enum(DataAccessResult))
    if choice == 2:
        return SetResponseDataBlock(invoke_id, r.uint(4))
    return SetResponseLastDataBlock(invoke_id, r.enum(DataAccessResult), r.uint(4))


def _action_request(r: _Reader, _choice: int) -> XdlmsApdu:
    invoke_id = r.uint(1)
    method = MethodDescriptor(r.uint(2), r.take(6), r.uint(1))
    return ActionRequestNormal(invoke_id, method, r.data() if r.optional() else None)


def _action_response(r: _Reader, _choice: int) -> XdlmsApdu:
    invoke_id, result = r.uint(1), r.enum(ActionResult)
    return ActionResponseNormal(invoke_id, result, r.data_result() if r.optional() else None)


# tag -> (the choices this codec handles, the decoder for them)
_SERVICES: dict[int, tuple[frozenset[int], Callable[[_Reader, int], XdlmsApdu]]] = {
    GET_REQUEST: (frozenset({1, 2, 3}), _get_request),
    GET_RESPONSE: (frozenset({1, 2, 3}), _get_response),
    SET_REQUEST: (frozenset({1, 2, 3}), _set_request),
    SET_RESPONSE: (frozenset({1, 2, 3}), _set_response),
    ACTION_REQUEST: (frozenset({1}), _action_request),
    ACTION_RESPONSE: (frozenset({1}), _action_response),
}


def decode_xdlms(apdu: bytes) -> XdlmsApdu:
    """Decode one whole plain xDLMS APDU; raises XdlmsError (UnsupportedApduError for other kinds)."""
    r = _Reader(apdu)
    tag = r.uint(1)
    if tag == EXCEPTION_RESPONSE:
        state_error, service_error = r.uint(1), r.uint(1)
        counter = r.uint(4) if service_error == INVOCATION_COUNTER_ERROR else None
        pdu: XdlmsApdu = ExceptionResponse(state_error, service_error, counter)
    elif tag == CONFIRMED_SERVICE_ERROR:
        pdu = ConfirmedServiceError(r.uint(1), r.uint(1), r.uint(1))
    elif tag == DATA_NOTIFICATION:
        long_invoke_id, stamp = r.uint(4), r.octet_string()
        if len(stamp) not in (0, 12):
            raise XdlmsError(f"data-notification date-time of {len(stamp)} octets")
        pdu = DataNotification(long_invoke_id, stamp or None, r.data())
    elif tag in _SERVICES:
        choices, decoder = _SERVICES[tag]
        choice = r.uint(1)
        if choice not in choices:
            raise UnsupportedApduError(f"xDLMS APDU {tag:#04x} choice {choice} not supported")
        pdu = decoder(r, choice)
    else:
        raise UnsupportedApduError(f"xDLMS APDU tag {tag:#04x} not supported")
    if r.pos != len(r.buf):
        raise XdlmsError(f"{len(r.buf) - r.pos} octets after the APDU")
    return pdu


# --- encoding ---


def _u(value: int, size: int) -> bytes:
    if not 0 <= value < 1 << (8 * size):
        raise XdlmsEncodeError(f"{value} does not fit in {size} octet(s)")
    return value.to_bytes(size, "big")


def _attribute(a: AttributeDescriptor | MethodDescriptor) -> bytes:
    if len(a.logical_name) != 6:
        raise XdlmsEncodeError(f"logical name of {len(a.logical_name)} octets")
    member = a.attribute_id if isinstance(a, AttributeDescriptor) else a.method_id
    return _u(a.class_id, 2) + a.logical_name + _u(member, 1)


def _access(access: AccessSelection | None) -> bytes:
    return b"\x00" if access is None else b"\x01" + _u(access.selector, 1) + axdr.encode(access.parameters)


def _data_result(result: Data | DataAccessResult) -> bytes:
    return b"\x00" + axdr.encode(result) if isinstance(result, Data) else b"\x01" + _u(result, 1)


def _block(last_block: bool, block_number: int, raw_data: bytes) -> bytes:
    return bytes([last_block]) + _u(block_number, 4) + axdr.encode_length(len(raw_data)) + raw_data


def _list(items: tuple[bytes, ...]) -> bytes:
    return axdr.encode_length(len(items)) + b"".join(items)


def encode_xdlms(pdu: XdlmsApdu) -> bytes:
    """Encode one plain xDLMS APDU; raises XdlmsEncodeError (or AxdrEncodeError) on bad fields."""
    match pdu:
        case ExceptionResponse(state_error, service_error, counter):
            tail = b"" if service_error != INVOCATION_COUNTER_ERROR else _u(counter or 0, 4)
            return bytes([EXCEPTION_RESPONSE]) + _u(state_error, 1) + _u(service_error, 1) + tail
        case ConfirmedServiceError(service, error_type, error_value):
            return bytes([CONFIRMED_SERVICE_ERROR]) + _u(service, 1) + _u(error_type, 1) + _u(error_value, 1)
        case DataNotification(long_invoke_id, stamp, body):
            if stamp is not None and len(stamp) != 12:
                raise XdlmsEncodeError(f"date-time of {len(stamp)} octets")
            stamp_field = b"\x00" if stamp is None else b"\x0c" + stamp
            return bytes([DATA_NOTIFICATION]) + _u(long_invoke_id, 4) + stamp_field + axdr.encode(body)
    tag_and_choice, fields = _encode_service(pdu)
    return tag_and_choice + _u(pdu.invoke_id, 1) + fields


def _encode_service(pdu: XdlmsApdu) -> tuple[bytes, bytes]:
    """(tag and choice, everything after the invoke-id-and-priority octet)."""
    match pdu:
        case GetRequestNormal(_, attribute, access):
            return b"\xc0\x01", _attribute(attribute) + _access(access)
        case GetRequestNext(_, block_number):
            return b"\xc0\x02", _u(block_number, 4)
        case GetRequestWithList(_, items):
            return b"\xc0\x03", _list(tuple(_attribute(a) + _access(s) for a, s in items))
        case GetResponseNormal(_, result):
            return b"\xc4\x01", _data_result(result)
        case GetResponseWithDataBlock(_, last_block, block_number, raw_data):
            head = bytes([last_block]) + _u(block_number, 4)
            if isinstance(raw_data, DataAccessResult):
                return b"\xc4\x02", head + b"\x01" + _u(raw_data, 1)
            return b"\xc4\x02", head + b"\x00" + axdr.encode_length(len(raw_data)) + raw_data
        case GetResponseWithList(_, results):
            return b"\xc4\x03", _list(tuple(_data_result(r) for r in results))
        case SetRequestNormal(_, attribute, access, value):
            return b"\xc1\x01", _attribute(attribute) + _access(access) + axdr.encode(value)
        case SetRequestWithFirstDataBlock(_, attribute, access, last_block, block_number, raw_data):
            return b"\xc1\x02", _attribute(attribute) + _access(access) + _block(last_block, block_number, raw_data)
        case SetRequestWithDataBlock(_, last_block, block_number, raw_data):
            return b"\xc1\x03", _block(last_block, block_number, raw_data)
        case SetResponseNormal(_, result):
            return b"\xc5\x01", _u(result, 1)
        case SetResponseDataBlock(_, block_number):
            return b"\xc5\x02", _u(block_number, 4)
        case SetResponseLastDataBlock(_, result, block_number):
            return b"\xc5\x03", _u(result, 1) + _u(block_number, 4)
        case ActionRequestNormal(_, method, parameters):
            params = b"\x00" if parameters is None else b"\x01" + axdr.encode(parameters)
            return b"\xc3\x01", _attribute(method) + params
        case ActionResponseNormal(_, result, return_parameters):
            ret = b"\x00" if return_parameters is None else b"\x01" + _data_result(return_parameters)
            return b"\xc7\x01", _u(result, 1) + ret
    raise XdlmsEncodeError(f"not an xDLMS APDU: {pdu!r}")

