"""ACSE (AARQ/AARE/RLRQ/RLRE) and Initiate PDUs: vectors, round-trips, fuzz, gurux as the outside peer."""

from __future__ import annotations

import contextlib
import struct

import pytest
from gurux_dlms import GXByteBuffer, GXDLMSClient, GXDLMSException
from gurux_dlms.enums import Authentication, InterfaceType
from gurux_dlms.enums import Conformance as GxConformance
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec.acse import (
    APPLICATION_CONTEXT_LN_CIPHERING,
    APPLICATION_CONTEXT_LN_NO_CIPHERING,
    Aare,
    Aarq,
    AcseEncodeError,
    AcseError,
    AcseServiceProvider,
    AcseServiceUser,
    AssociationResult,
    Conformance,
    InitiateRequest,
    InitiateResponse,
    Mechanism,
    Rlre,
    Rlrq,
    decode_aare,
    decode_aarq,
    decode_initiate_request,
    decode_initiate_response,
    decode_rlre,
    decode_rlrq,
    encode_aare,
    encode_aarq,
    encode_initiate_request,
    encode_initiate_response,
    encode_rlre,
    encode_rlrq,
)
from gateway.codec.errors import LocalProtocolError

FUZZ = settings(max_examples=200, deadline=None)

# The Green Book's public-client AARQ (LN, no security, conformance 00 7E 1F, max PDU 1200); it is
# reproduced in many public client test suites.
GREEN_BOOK_AARQ = "601da109060760857405080101be10040e01000000065f1f0400007e1f04b0"
# A meter's AARE accepting it (conformance 00 10 1D, max PDU 128), as used in public Go DLMS client tests.
METER_AARE = "6129a109060760857405080101a203020100a305a103020100be10040e0800065f1f040000101d00800007"
# gurux 1.0.203 GXDLMSClient(Authentication.LOW, "12345678").aarqRequest(), wrapper header removed.
GURUX_LLS_AARQ = (
    "6036a1090607608574050801018a0207808b0760857405080201ac0a80083132333435363738"
    "be10040e01000000065f1f0400401e5dffff"
)
DEFAULT_CLIENT = (
    Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ | Conformance.BLOCK_TRANSFER_WITH_SET_OR_WRITE
    | Conformance.BLOCK_TRANSFER_WITH_ACTION | Conformance.MULTIPLE_REFERENCES | Conformance.PRIORITY_MGMT_SUPPORTED
    | Conformance.ATTRIBUTE0_SUPPORTED_WITH_GET | Conformance.GET | Conformance.SET | Conformance.SELECTIVE_ACCESS
    | Conformance.EVENT_NOTIFICATION | Conformance.ACTION
)


def test_green_book_aarq() -> None:
    raw = bytes.fromhex(GREEN_BOOK_AARQ)
    aarq = decode_aarq(raw)
    assert aarq == Aarq(APPLICATION_CONTEXT_LN_NO_CIPHERING, user_information=bytes.fromhex(GREEN_BOOK_AARQ[-28:]))
    assert aarq.user_information is not None
    initiate = decode_initiate_request(aarq.user_information)
    assert initiate == InitiateRequest(proposed_conformance=0x007E1F, client_max_receive_pdu_size=1200)
    assert initiate.proposed_conformance == DEFAULT_CLIENT
    assert encode_aarq(Aarq(1, user_information=encode_initiate_request(initiate))) == raw


def test_meter_aare() -> None:
    raw = bytes.fromhex(METER_AARE)
    aare = decode_aare(raw)
    assert (aare.application_context, aare.result, aare.diagnostic) == (1, AssociationResult.ACCEPTED, 0)
    assert not aare.diagnostic_is_provider
    assert aare.user_information is not None
    response = decode_initiate_response(aare.user_information)
    assert response == InitiateResponse(negotiated_conformance=0x00101D, server_max_receive_pdu_size=128)
    assert Conformance.GET in Conformance(response.negotiated_conformance)
    assert Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ in Conformance(response.negotiated_conformance)
    assert Conformance.EVENT_NOTIFICATION not in Conformance(response.negotiated_conformance)
    assert encode_aare(aare) == raw


def test_lls_aarq_from_gurux_bytes() -> None:
    aarq = decode_aarq(bytes.fromhex(GURUX_LLS_AARQ))
    assert aarq.mechanism is Mechanism.LLS
    assert aarq.calling_authentication_value == b"12345678"
    assert encode_aarq(aarq) == bytes.fromhex(GURUX_LLS_AARQ)


def test_hls_aare_layout() -> None:
    aare = Aare(
        APPLICATION_CONTEXT_LN_CIPHERING, AssociationResult.ACCEPTED, AcseServiceUser.AUTHENTICATION_REQUIRED,
        responding_ap_title=bytes.fromhex("4d4d4d0000bc614e"), mechanism=Mechanism.HLS_GMAC,
        responding_authentication_value=b"P6wRJ21F", user_information=b"\x28\x00",
    )
    assert encode_aare(aare) == bytes.fromhex(
        "6142" "a109060760857405080103" "a203020100" "a305a10302010e" "a40a04084d4d4d0000bc614e"
        "88020780" "890760857405080205" "aa0a8008" + b"P6wRJ21F".hex() + "be0404022800"
    )
    assert decode_aare(encode_aare(aare)) == aare


def test_provider_diagnostic() -> None:
    aare = Aare(1, AssociationResult.REJECTED_PERMANENT, AcseServiceProvider.NO_COMMON_ACSE_VERSION,
                diagnostic_is_provider=True)
    raw = encode_aare(aare)
    assert bytes.fromhex("a305a203020102") in raw
    assert decode_aare(raw) == aare


@pytest.mark.parametrize(
    ("release", "wire"),
    [
        (Rlrq(), "6200"),
        (Rlrq(reason=0), "6203800100"),
        (Rlrq(reason=0, user_information=b"\x01\x00"), "6209" "800100" "be0404020100"),
        (Rlre(reason=1), "6303800101"),
        (Rlre(), "6300"),
    ],
)
def test_release_vectors(release: Rlrq | Rlre, wire: str) -> None:
    raw = bytes.fromhex(wire)
    if isinstance(release, Rlrq):
        assert encode_rlrq(release) == raw
        assert decode_rlrq(raw) == release
    else:
        assert encode_rlre(release) == raw
        assert decode_rlre(raw) == release


@pytest.mark.parametrize(
    ("pdu", "wire"),
    [
        (InitiateRequest(0x007E1F, 1200, dedicated_key=bytes(range(16)), response_allowed=False,
                         proposed_quality_of_service=-1),
         "010110" + bytes(range(16)).hex() + "0100" "01ff" "06" "5f1f0400007e1f" "04b0"),
        (InitiateResponse(0x00501F, 500, negotiated_quality_of_service=3),
         "08" "0103" "06" "5f1f040000501f" "01f4" "0007"),
    ],
)
def test_initiate_optional_fields(pdu: InitiateRequest | InitiateResponse, wire: str) -> None:
    raw = bytes.fromhex(wire)
    if isinstance(pdu, InitiateRequest):
        assert encode_initiate_request(pdu) == raw
        assert decode_initiate_request(raw) == pdu
    else:
        assert encode_initiate_response(pdu) == raw
        assert decode_initiate_response(raw) == pdu


def test_explicit_response_allowed_true_decodes() -> None:
    request = decode_initiate_request(bytes.fromhex("01" "00" "0101" "00" "06" "5f1f0400007e1f" "04b0"))
    assert request.response_allowed


@pytest.mark.parametrize(
    "wire",
    [
        GREEN_BOOK_AARQ[:-2],  # truncated
        GREEN_BOOK_AARQ + "00",  # trailing octet
        "6100",  # AARE tag where an AARQ is expected
        "6000",  # no application context
        "600ba109060760857405080901",  # not the DLMS-UA OID arc
        "600ca10a06076085740508010100",  # trailing octet inside the context element
        "601ca109060760857405080101a109060760857405080101",  # repeated element
        "60808000",  # indefinite length
        "6004" "1f810100",  # multi-octet tag
        "6010a1090607608574050801018b020000",  # bad mechanism OID
        "6012a1090607608574050801018b0760857405080209",  # unknown mechanism 9
    ],
)
def test_malformed_aarq_raises(wire: str) -> None:
    with pytest.raises(AcseError):
        decode_aarq(bytes.fromhex(wire))


@pytest.mark.parametrize(
    "wire",
    ["", "08", "0800065f1f040000101d008000", "0800065f1f030000101d00800007", "0802065f1f040000101d00800007",
     "0800065f1f040000101d0080000700", "01", "010110000102", "0100000006" "5f1f0401007e1f04b0"],
)
def test_malformed_initiate_raises(wire: str) -> None:
    raw = bytes.fromhex(wire)
    with pytest.raises(AcseError):
        decode_initiate_response(raw) if raw[:1] == b"\x08" else decode_initiate_request(raw)


@pytest.mark.parametrize(
    "make",
    [
        lambda: encode_aarq(Aarq(200)),
        lambda: encode_aare(Aare(1, AssociationResult.ACCEPTED, 300)),
        lambda: encode_initiate_request(InitiateRequest(1 << 24, 100)),
        lambda: encode_initiate_request(InitiateRequest(0, 0x10000)),
        lambda: encode_initiate_request(InitiateRequest(0, 100, proposed_quality_of_service=200)),
        lambda: encode_initiate_response(InitiateResponse(0, 100, vaa_name=-1)),
        lambda: encode_rlrq(Rlrq(reason=1000)),
    ],
)
def test_encode_rejects_out_of_range(make: object) -> None:
    assert callable(make)
    with pytest.raises(AcseEncodeError) as info:
        make()
    assert isinstance(info.value, LocalProtocolError)


# --- round-trips and fuzz ---

OPT_BYTES = st.none() | st.binary(max_size=200)
MECHANISMS = st.none() | st.sampled_from(Mechanism)


@FUZZ
@given(st.builds(Aarq, st.integers(0, 0x7F), OPT_BYTES, MECHANISMS, OPT_BYTES, OPT_BYTES))
def test_aarq_round_trip(aarq: Aarq) -> None:
    assert decode_aarq(encode_aarq(aarq)) == aarq


@FUZZ
@given(st.builds(Aare, st.integers(0, 0x7F), st.sampled_from(AssociationResult), st.integers(0, 0x7F),
                 st.booleans(), OPT_BYTES, MECHANISMS, OPT_BYTES, OPT_BYTES))
def test_aare_round_trip(aare: Aare) -> None:
    assert decode_aare(encode_aare(aare)) == aare


@FUZZ
@given(st.none() | st.integers(0, 0x7F), OPT_BYTES)
def test_release_round_trip(reason: int | None, user_information: bytes | None) -> None:
    assert decode_rlrq(encode_rlrq(Rlrq(reason, user_information))) == Rlrq(reason, user_information)
    assert decode_rlre(encode_rlre(Rlre(reason, user_information))) == Rlre(reason, user_information)


@FUZZ
@given(st.builds(InitiateRequest, st.integers(0, 2**24 - 1), st.integers(0, 2**16 - 1), st.integers(0, 255),
                 st.none() | st.binary(max_size=32), st.booleans(), st.none() | st.integers(-128, 127)),
       st.builds(InitiateResponse, st.integers(0, 2**24 - 1), st.integers(0, 2**16 - 1), st.integers(0, 255),
                 st.integers(0, 2**16 - 1), st.none() | st.integers(-128, 127)))
def test_initiate_round_trip(request: InitiateRequest, response: InitiateResponse) -> None:
    assert decode_initiate_request(encode_initiate_request(request)) == request
    assert decode_initiate_response(encode_initiate_response(response)) == response


@FUZZ
@given(st.sampled_from([b"\x60", b"\x61", b"\x62", b"\x63", b"\x01", b"\x08"]), st.binary(max_size=60))
def test_any_bytes_parse_or_raise_acse_error(tag: bytes, rest: bytes) -> None:
    for decoder in (decode_aarq, decode_aare, decode_rlrq, decode_rlre, decode_initiate_request,
                    decode_initiate_response):
        with contextlib.suppress(AcseError):
            decoder(tag + rest)


@FUZZ
@given(st.binary(min_size=1, max_size=40))
def test_mutated_aarq_parses_or_raises(noise: bytes) -> None:
    raw = bytearray.fromhex(GURUX_LLS_AARQ)
    position = noise[0] % len(raw)
    raw[position : position + len(noise) - 1] = noise[1:]
    with contextlib.suppress(AcseError):
        decode_aarq(bytes(raw))


# --- gurux as the outside head-end ---


def _unwrap(frame: bytes | bytearray) -> bytes:
    version, _source, _destination, length = struct.unpack(">HHHH", bytes(frame[:8]))
    assert (version, length) == (1, len(frame) - 8)
    return bytes(frame[8:])


def test_gurux_aarq_decodes() -> None:
    client = GXDLMSClient(True, 16, 1, Authentication.LOW, "12345678", InterfaceType.WRAPPER)
    [frame] = client.aarqRequest()
    aarq = decode_aarq(_unwrap(frame))
    assert aarq.user_information is not None
    initiate = decode_initiate_request(aarq.user_information)
    assert (initiate.dlms_version, initiate.client_max_receive_pdu_size) == (6, 0xFFFF)
    assert Conformance.GET in Conformance(initiate.proposed_conformance)
    assert _unwrap(frame) == bytes.fromhex(GURUX_LLS_AARQ)


def test_gurux_accepts_our_aare_and_takes_our_negotiation() -> None:
    client = GXDLMSClient(True, 16, 1, Authentication.LOW, "12345678", InterfaceType.WRAPPER)
    client.aarqRequest()
    negotiated = Conformance.GET | Conformance.ACTION | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ
    aare = Aare(1, AssociationResult.ACCEPTED, mechanism=Mechanism.LLS,
                user_information=encode_initiate_response(InitiateResponse(int(negotiated), 512)))
    client.parseAareResponse(GXByteBuffer(encode_aare(aare)))
    assert client.maxReceivePDUSize == 512
    theirs = client.negotiatedConformance
    assert theirs & GxConformance.GET and theirs & GxConformance.ACTION
    assert not theirs & GxConformance.SET


def test_gurux_sees_our_rejection() -> None:
    client = GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.WRAPPER)
    client.aarqRequest()
    rejection = Aare(1, AssociationResult.REJECTED_PERMANENT, AcseServiceUser.AUTHENTICATION_FAILURE)
    with pytest.raises(GXDLMSException) as info:
        client.parseAareResponse(GXByteBuffer(encode_aare(rejection)))
    assert int(info.value.result) == AssociationResult.REJECTED_PERMANENT
    assert int(info.value.diagnostic) == AcseServiceUser.AUTHENTICATION_FAILURE


def test_gurux_release_request_decodes() -> None:
    client = GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.WRAPPER)
    client.aarqRequest()
    client.parseAareResponse(GXByteBuffer(bytes.fromhex(METER_AARE)))
    frames = client.releaseRequest()
    assert len(frames) == 1
    rlrq = decode_rlrq(_unwrap(frames[0]))
    assert rlrq.reason in (None, 0)
