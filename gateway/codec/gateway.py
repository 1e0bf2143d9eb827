"""The DLMS gateway protocol prefix (Green Book 9.5; IEC 62056-5-3): gateway-request E6 / gateway-response E7.

    gateway-request  ::= E6 | network-id (Unsigned8) | physical-device-address (A-XDR octet-string) | APDU
    gateway-response ::= E7 | network-id (Unsigned8) | physical-device-address (A-XDR octet-string) | APDU

A HES sends a gateway-request to the gateway's own logical device (wrapper destination wPort 1,
like the gurux client with a gateway set) to reach the meter at that address on that network; the
gateway relays the inner APDU byte for byte and answers with a gateway-response carrying the same
network id and address. Meter pushes may travel to a HES in gateway-response form too.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.codec.axdr import AxdrError, decode_length, encode_length
from gateway.codec.errors import LocalProtocolError, RemoteProtocolError

GATEWAY_WPORT = 1  # the gateway's own logical device: gateway-requests go there, pushes in gateway form come from it
GATEWAY_REQUEST = 0xE6
GATEWAY_RESPONSE = 0xE7
ALL_STATION_ADDRESS = b"\x3f\xff"  # every meter on the network: the HDLC all-station physical address 0x3FFF
MAX_ADDRESS_LENGTH = 64  # longest address form we document: a 16-byte IPv6 address or a system title, with room


class GatewayPduError(RemoteProtocolError):
    """A gateway-request or -response that breaks its layout: truncated, oversized address, no APDU."""


@dataclass(frozen=True, slots=True)
class GatewayPdu:
    """One gateway-request (``response`` False) or gateway-response, with the APDU it carries."""

    network_id: int
    physical_address: bytes
    apdu: bytes
    response: bool = False


def is_gateway_request(apdu: bytes) -> bool:
    return apdu[:1] == bytes((GATEWAY_REQUEST,))


def encode(pdu: GatewayPdu) -> bytes:
    if not 0 <= pdu.network_id <= 0xFF:
        raise LocalProtocolError(f"network id {pdu.network_id} is not an Unsigned8")
    if len(pdu.physical_address) > MAX_ADDRESS_LENGTH:
        raise LocalProtocolError(f"physical device address of {len(pdu.physical_address)} bytes")
    tag = GATEWAY_RESPONSE if pdu.response else GATEWAY_REQUEST
    return bytes((tag, pdu.network_id)) + encode_length(len(pdu.physical_address)) + pdu.physical_address + pdu.apdu


def decode(data: bytes) -> GatewayPdu:
    """Split a gateway-request/-response into its prefix and APDU. Raises GatewayPduError."""
    if len(data) < 3 or data[0] not in (GATEWAY_REQUEST, GATEWAY_RESPONSE):
        raise GatewayPduError("not a gateway-request or gateway-response")
    try:
        size, offset = decode_length(data, 2)
    except AxdrError as exc:
        raise GatewayPduError(f"physical device address length: {exc}") from None
    if size > MAX_ADDRESS_LENGTH:
        raise GatewayPduError(f"physical device address of {size} bytes (at most {MAX_ADDRESS_LENGTH})")
    if offset + size > len(data):
        raise GatewayPduError("truncated physical device address")
    apdu = data[offset + size:]
    if not apdu:
        raise GatewayPduError("no APDU after the gateway prefix")
    return GatewayPdu(network_id=data[1], physical_address=data[offset:offset + size], apdu=apdu,
                      response=data[0] == GATEWAY_RESPONSE)


def response_to(request: GatewayPdu, apdu: bytes) -> bytes:
    """The gateway-response that carries ``apdu`` back with the request's network id and address."""
    return encode(GatewayPdu(network_id=request.network_id, physical_address=request.physical_address, apdu=apdu,
                             response=True))


def hdlc_address_bytes(physical_address: int) -> bytes:
    """An HDLC physical address as a gateway address: big-endian, as few bytes as hold it (at least one)."""
    return physical_address.to_bytes(max(1, (physical_address.bit_length() + 7) // 8), "big")


def hdlc_address_from(address: bytes) -> int | None:
    """The HDLC physical address a gateway address names, or None if it cannot be one (empty, over 2 bytes)."""
    if not 1 <= len(address) <= 2:
        return None
    return int.from_bytes(address, "big")
