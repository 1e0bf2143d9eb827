"""APDU classification by the first tag byte (Green Book 9.5, tags of xDLMS and ACSE APDUs).

The relay never decrypts: it only peeks at the tag to know that an association opens (AARQ),
closes (RLRQ/RLRE), or that a meter pushes something. Everything else passes byte for byte.
"""

from __future__ import annotations

from enum import Enum

from gateway.codec.errors import RemoteProtocolError
from gateway.codec.gateway import GATEWAY_REQUEST, GATEWAY_RESPONSE


class ApduError(RemoteProtocolError):
    """An APDU the relay cannot even classify."""


class ApduKind(Enum):
    AARQ = "aarq"
    AARE = "aare"
    RLRQ = "rlrq"
    RLRE = "rlre"
    REQUEST = "request"  # get/set/action request, plain
    RESPONSE = "response"  # get/set/action response, plain
    EVENT_NOTIFICATION = "event-notification"
    DATA_NOTIFICATION = "data-notification"
    EXCEPTION_RESPONSE = "exception-response"
    CONFIRMED_SERVICE_ERROR = "confirmed-service-error"
    GLO_CIPHERED = "glo-ciphered"
    DED_CIPHERED = "ded-ciphered"
    GENERAL_CIPHERED = "general-ciphered"  # general-glo, general-ded, general-ciphering, general-signing
    GENERAL_BLOCK_TRANSFER = "general-block-transfer"
    GATEWAY = "gateway"  # gateway-request / gateway-response (Green Book 9.5, E6/E7)


_KIND_BY_TAG: dict[int, ApduKind] = {
    0x60: ApduKind.AARQ,
    0x61: ApduKind.AARE,
    0x62: ApduKind.RLRQ,
    0x63: ApduKind.RLRE,
    0xC0: ApduKind.REQUEST,  # get-request
    0xC1: ApduKind.REQUEST,  # set-request
    0xC3: ApduKind.REQUEST,  # action-request
    0xC4: ApduKind.RESPONSE,
    0xC5: ApduKind.RESPONSE,
    0xC7: ApduKind.RESPONSE,
    0xC2: ApduKind.EVENT_NOTIFICATION,
    0x0F: ApduKind.DATA_NOTIFICATION,
    0xD8: ApduKind.EXCEPTION_RESPONSE,
    0x0E: ApduKind.CONFIRMED_SERVICE_ERROR,
    0xDB: ApduKind.GENERAL_CIPHERED,  # general-glo-ciphering
    0xDC: ApduKind.GENERAL_CIPHERED,  # general-ded-ciphering
    0xDD: ApduKind.GENERAL_CIPHERED,  # general-ciphering
    0xDF: ApduKind.GENERAL_CIPHERED,  # general-signing
    0xE0: ApduKind.GENERAL_BLOCK_TRANSFER,
    GATEWAY_REQUEST: ApduKind.GATEWAY,
    GATEWAY_RESPONSE: ApduKind.GATEWAY,
}
for _tag in range(0xC8, 0xD0):  # glo-get/set/event/action request and response
    _KIND_BY_TAG[_tag] = ApduKind.GLO_CIPHERED
for _tag in range(0xD0, 0xD8):
    _KIND_BY_TAG[_tag] = ApduKind.DED_CIPHERED
_KIND_BY_TAG[0x21] = ApduKind.GLO_CIPHERED  # glo-initiateRequest (inside AARQ only, but classify it)
_KIND_BY_TAG[0x28] = ApduKind.GLO_CIPHERED  # glo-initiateResponse

# Meter-initiated APDUs, and the ciphered forms that may carry them.
PUSH_KINDS = frozenset({ApduKind.EVENT_NOTIFICATION, ApduKind.DATA_NOTIFICATION})
GLO_EVENT_NOTIFICATION = 0xCA
DED_EVENT_NOTIFICATION = 0xD2
# Tags a meter-initiated APDU may carry: data-notification, event-notification (plain, glo-, ded-),
# general-glo/ded/ciphering and general-block-transfer (which may wrap a notification).
PUSH_TAGS = frozenset({0x0F, 0xC2, 0xCA, 0xD2, 0xDB, 0xDC, 0xDD, 0xE0})


def classify(apdu: bytes) -> ApduKind:
    """The kind of an APDU, from its tag byte alone. Raises ApduError for an unknown tag."""
    if not apdu:
        raise ApduError("empty APDU")
    kind = _KIND_BY_TAG.get(apdu[0])
    if kind is None:
        raise ApduError(f"unknown APDU tag 0x{apdu[0]:02X}")
    return kind


def kind_of(apdu: bytes) -> ApduKind | None:
    """The kind of an APDU from its tag byte, None when empty or unknown (for peeking at peer input)."""
    return _KIND_BY_TAG.get(apdu[0]) if apdu else None


ACTION_REQUEST = 0xC3  # Green Book 9.5, action-request
ACTION_REQUEST_NORMAL = 0x01  # its choice: one method, no block
DISCONNECT_CONTROL_CLASS = 70  # Blue Book, Disconnect control: remote_disconnect / remote_reconnect


def plain_action_class(apdu: bytes) -> int | None:
    """The interface class an unciphered action-request-normal names (C3 01 invoke class-id ...), else None.

    Ciphered APDUs are never opened: they answer None and keep normal priority.
    """
    if len(apdu) >= 5 and apdu[0] == ACTION_REQUEST and apdu[1] == ACTION_REQUEST_NORMAL:
        return int.from_bytes(apdu[3:5], "big")
    return None


def is_push(apdu: bytes) -> bool:
    """True for an APDU a meter sends unsolicited (event/data notification, plain or ciphered)."""
    if not apdu:
        return False
    tag = apdu[0]
    return tag in (0xC2, 0x0F, GLO_EVENT_NOTIFICATION, DED_EVENT_NOTIFICATION)


def exception_response(*, state_error: int, service_error: int) -> bytes:
    """An exception-response APDU (Green Book 9.5: D8 state-error service-error)."""
    return bytes((0xD8, state_error & 0xFF, service_error & 0xFF))


# exception-response values (Green Book 9.5, ExceptionResponse)
STATE_ERROR_SERVICE_NOT_ALLOWED = 1
STATE_ERROR_SERVICE_UNKNOWN = 2
SERVICE_ERROR_OPERATION_NOT_POSSIBLE = 1
SERVICE_ERROR_SERVICE_NOT_SUPPORTED = 2
SERVICE_ERROR_OTHER_REASON = 3
SERVICE_ERROR_PDU_TOO_LONG = 4
