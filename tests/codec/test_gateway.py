"""The gateway-request/-response prefix (E6/E7): layout, limits, and what the gurux client sends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codec import gateway as gw
from gateway.codec.errors import LocalProtocolError
from gateway.codec.wrapper import WrapperDecoder

AARQ = bytes.fromhex("601da109060760857405080101be10040e01000000065f1f0400401e5dffff")


def test_round_trip_request_and_response() -> None:
    request = gw.GatewayPdu(network_id=3, physical_address=b"\x00\x11", apdu=AARQ)
    data = gw.encode(request)
    assert data == bytes.fromhex("e603020011") + AARQ
    assert gw.decode(data) == request
    answer = gw.response_to(request, b"\x61\x00")
    assert answer == bytes.fromhex("e703020011") + b"\x61\x00"
    assert gw.decode(answer) == gw.GatewayPdu(network_id=3, physical_address=b"\x00\x11", apdu=b"\x61\x00",
                                              response=True)


def test_an_ipv6_address_and_the_long_length_form() -> None:
    ipv6 = bytes.fromhex("fd000000000000000000000000000017")
    assert gw.decode(gw.encode(gw.GatewayPdu(network_id=0, physical_address=ipv6, apdu=b"\xc0"))).physical_address \
        == ipv6
    long_form = bytes.fromhex("e60181") + b"\x02" + b"\x00\x11" + AARQ  # 0x81 0x02: length 2, two-byte form
    assert gw.decode(long_form).physical_address == b"\x00\x11"


@pytest.mark.parametrize(("data", "why"), [
    (b"\xe6\x01", "not a gateway"),
    (bytes.fromhex("e60105001100"), "truncated"),
    (bytes.fromhex("e6010200"), "truncated"),
    (bytes.fromhex("e601020011"), "no APDU"),
    (bytes.fromhex("e60141") + bytes(65) + b"\xc0", "65 bytes"),
    (bytes.fromhex("e60185ffffffffff"), "length"),
    (b"\x60" + AARQ, "not a gateway"),
])
def test_malformed_prefixes_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(gw.GatewayPduError, match=why):
        gw.decode(data)


def test_we_never_encode_what_we_would_refuse() -> None:
    with pytest.raises(LocalProtocolError):
        gw.encode(gw.GatewayPdu(network_id=256, physical_address=b"\x11", apdu=b"\xc0"))
    with pytest.raises(LocalProtocolError):
        gw.encode(gw.GatewayPdu(network_id=1, physical_address=bytes(65), apdu=b"\xc0"))


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_the_protocol_error(data: bytes) -> None:
    try:
        pdu = gw.decode(data)
    except gw.GatewayPduError:
        return
    assert gw.encode(pdu).endswith(pdu.apdu) and pdu.apdu


@pytest.mark.parametrize("address", [17, 0x7F, 0x80, 0x3FFD])
def test_hdlc_physical_addresses_big_endian_shortest(address: int) -> None:
    data = gw.hdlc_address_bytes(address)
    assert len(data) == (1 if address < 0x100 else 2)
    assert gw.hdlc_address_from(data) == address
    assert gw.hdlc_address_from(b"\x00" + data) == address or len(data) == 2


def test_addresses_that_cannot_be_hdlc() -> None:
    assert gw.hdlc_address_from(b"") is None
    assert gw.hdlc_address_from(b"\x00\x00\x11") is None


def test_the_gurux_client_sends_our_layout_to_wport_1() -> None:
    from gurux_dlms import GXDLMSClient, GXDLMSGateway  # noqa: PLC0415 - GPL peer, tests only
    from gurux_dlms.enums import Authentication, InterfaceType  # noqa: PLC0415

    client = GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.WRAPPER)
    gateway = GXDLMSGateway()
    gateway.networkId = 3
    gateway.physicalDeviceAddress = bytearray(b"\x00\x11")
    client.gateway = gateway
    (frame,) = WrapperDecoder().feed(b"".join(bytes(f) for f in client.aarqRequest()))
    assert (frame.source, frame.destination) == (16, 1)  # the gateway's own logical device, Green Book
    pdu = gw.decode(frame.apdu)
    assert (pdu.network_id, pdu.physical_address, pdu.response) == (3, b"\x00\x11", False)
    assert pdu.apdu[0] == 0x60
