"""xDLMS GET/SET/ACTION/error APDUs: vectors, round-trips, fuzz, and gurux as an outside peer."""

from __future__ import annotations

import struct

import pytest
from gurux_dlms import GXDLMSClient, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType
from gurux_dlms.enums import DataType as GxType
from gurux_dlms.objects import GXDLMSClock, GXDLMSData, GXDLMSProfileGeneric, GXDLMSRegister
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec.axdr import AxdrEncodeError, Data, DataType, encode
from gateway.codec.errors import LocalProtocolError
from gateway.codec.obis import obis
from gateway.codec.xdlms import (
    AccessSelection,
    ActionRequestNormal,
    ActionResponseNormal,
    ActionResult,
    AttributeDescriptor,
    ConfirmedServiceError,
    DataAccessResult,
    DataNotification,
    ExceptionResponse,
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithDataBlock,
    GetResponseWithList,
    MethodDescriptor,
    SetRequestNormal,
    SetRequestWithDataBlock,
    SetRequestWithFirstDataBlock,
    SetResponseDataBlock,
    SetResponseLastDataBlock,
    SetResponseNormal,
    UnsupportedApduError,
    XdlmsApdu,
    XdlmsEncodeError,
    XdlmsError,
    decode_xdlms,
    encode_xdlms,
)

FUZZ = settings(max_examples=200, deadline=None)
CLOCK_TIME = AttributeDescriptor(8, obis("0.0.1.0.0.255"), 2)
ENERGY = AttributeDescriptor(3, obis("1.0.1.8.0.255"), 2)
KAIFA_HLS_REPLY = bytes.fromhex("10012345677d52391c407e3a45210f000e")
KAIFA_HLS_ANSWER = bytes.fromhex("101a9190bc0a587217bcd2bcd4fddb7143")

VECTORS: list[tuple[XdlmsApdu, str]] = [
    # Green Book AES-GCM example plaintext (also in xdom/jdlms CipheringTest.java): get clock time.
    (GetRequestNormal(0x00, CLOCK_TIME), "c0010000080000010000ff0200"),
    # From a Kaifa meter, published in xdom/jdlms src/test/java/org/openmuc/jdlms/CipheringTest.java:
    # HLS pass 3 (reply_to_HLS_authentication) and its answer.
    (ActionRequestNormal(0xC1, MethodDescriptor(15, obis("0.0.40.0.0.255"), 1), Data.octet_string(KAIFA_HLS_REPLY)),
     "c301c1000f0000280000ff01010911" + KAIFA_HLS_REPLY.hex()),
    (ActionResponseNormal(0xC1, ActionResult.SUCCESS, Data.octet_string(KAIFA_HLS_ANSWER)),
     "c701c10001000911" + KAIFA_HLS_ANSWER.hex()),
    # The rest hand-encoded from the Green Book 9.5 ASN.1 and A-XDR rules.
    (GetRequestNormal(0xC1, ENERGY, AccessSelection(1, Data.null())), "c001c100030100010800ff02010100"),
    (GetRequestNext(0x81, 2), "c00281" "00000002"),
    (GetRequestWithList(0xC1, ((ENERGY, None), (CLOCK_TIME, None))),
     "c003c102" "00030100010800ff0200" "00080000010000ff0200"),
    (GetResponseNormal(0xC1, Data.double_long_unsigned(123456)), "c401c100" "060001e240"),
    (GetResponseNormal(0xC1, DataAccessResult.OBJECT_UNDEFINED), "c401c10104"),
    (GetResponseWithDataBlock(0xC1, False, 1, b"\x06\x00"), "c402c1000000000100020600"),
    (GetResponseWithDataBlock(0xC1, True, 2, DataAccessResult.LONG_GET_ABORTED), "c402c101" "00000002" "010f"),
    (GetResponseWithList(0xC1, (Data.long_unsigned(5), DataAccessResult.OBJECT_UNDEFINED)),
     "c403c102" "00120005" "0104"),
    (SetRequestNormal(0xC1, AttributeDescriptor(1, obis("0.0.96.1.0.255"), 2), None, Data.long_unsigned(42)),
     "c101c100010000600100ff0200" "12002a"),
    (SetRequestWithFirstDataBlock(0xC1, ENERGY, None, False, 1, b"\x12"),
     "c102c100030100010800ff0200" "00" "00000001" "0112"),
    (SetRequestWithDataBlock(0xC1, True, 2, b"\x00\x2a"), "c103c1" "01" "00000002" "02002a"),
    (SetResponseNormal(0xC1, DataAccessResult.READ_WRITE_DENIED), "c501c103"),
    (SetResponseDataBlock(0xC1, 1), "c502c100000001"),
    (SetResponseLastDataBlock(0xC1, DataAccessResult.SUCCESS, 2), "c503c10000000002"),
    (ActionRequestNormal(0xC1, MethodDescriptor(8, obis("0.0.1.0.0.255"), 1), None), "c301c100080000010000ff0100"),
    (ActionResponseNormal(0xC1, ActionResult.READ_WRITE_DENIED), "c701c10300"),
    (ActionResponseNormal(0xC1, ActionResult.SUCCESS, DataAccessResult.OTHER_REASON), "c701c1000101fa"),
    (ExceptionResponse(1, 2), "d80102"),
    (ExceptionResponse(1, 6, 0x01234567), "d8010601234567"),
    (ConfirmedServiceError(1, 6, 1), "0e010601"),  # initiateError / initiate / dlms-version-too-low
    (DataNotification(0x40000001, None, Data.long_unsigned(7)), "0f4000000100120007"),
    (DataNotification(1, bytes(range(12)), Data.null()), "0f000000010c000102030405060708090a0b00"),
]


@pytest.mark.parametrize(("pdu", "wire"), VECTORS)
def test_vector(pdu: XdlmsApdu, wire: str) -> None:
    raw = bytes.fromhex(wire)
    assert encode_xdlms(pdu) == raw
    assert decode_xdlms(raw) == pdu


@pytest.mark.parametrize(("pdu", "wire"), VECTORS)
def test_truncated_or_padded_vector_raises(pdu: XdlmsApdu, wire: str) -> None:
    raw = bytes.fromhex(wire)
    for cut in range(len(raw)):
        with pytest.raises(XdlmsError):
            decode_xdlms(raw[:cut])
    with pytest.raises(XdlmsError, match="after the APDU"):
        decode_xdlms(raw + b"\x00")


def test_invoke_id_and_priority_octet_is_kept_whole() -> None:
    for octet in (0x00, 0x41, 0x8F, 0xC1, 0xFF):
        request = decode_xdlms(bytes([0xC0, 0x01, octet]) + bytes.fromhex("00030100010800ff0200"))
        assert isinstance(request, GetRequestNormal)
        assert request.invoke_id == octet
        answer = encode_xdlms(GetResponseNormal(request.invoke_id, Data.null()))
        assert answer[2] == octet


@pytest.mark.parametrize("wire", ["c004c1", "c2", "c304c1", "c702c1", "e0", "01", "c8"])
def test_unsupported_apdus_are_told_apart(wire: str) -> None:
    with pytest.raises(UnsupportedApduError):
        decode_xdlms(bytes.fromhex(wire))


@pytest.mark.parametrize(
    "wire",
    ["", "c001c1000301000108", "c401c102", "c401c10063", "c701c1ff00", "c001c100030100010800ff0202",
     "c003c184ffffffff", "c401c1000184ffffffff", "0f00000001050102030405" "00"],
)
def test_malformed_apdus_raise(wire: str) -> None:
    with pytest.raises(XdlmsError):
        decode_xdlms(bytes.fromhex(wire))


@pytest.mark.parametrize(
    "pdu",
    [
        GetRequestNormal(256, ENERGY),
        GetRequestNormal(1, AttributeDescriptor(3, bytes(5), 2)),
        GetRequestNormal(1, AttributeDescriptor(0x10000, bytes(6), 2)),
        GetRequestNext(1, 2**32),
        ExceptionResponse(1, 300),
        DataNotification(1, bytes(11), Data.null()),
    ],
)
def test_encode_rejects_out_of_range_fields(pdu: XdlmsApdu) -> None:
    with pytest.raises(XdlmsEncodeError) as info:
        encode_xdlms(pdu)
    assert isinstance(info.value, LocalProtocolError)


def test_encode_rejects_bad_data() -> None:
    with pytest.raises(AxdrEncodeError):
        encode_xdlms(SetRequestNormal(1, ENERGY, None, Data(DataType.UNSIGNED, 300)))


# --- round-trips and fuzz ---

OCTET = st.integers(0, 255)
U32 = st.integers(0, 2**32 - 1)
LN = st.binary(min_size=6, max_size=6)
SMALL_DATA = st.one_of(
    st.integers(0, 2**16 - 1).map(Data.long_unsigned),
    st.binary(max_size=40).map(Data.octet_string),
    st.just(Data.structure(Data.integer(-1), Data.enum(30))),
    st.just(Data.null()),
)
ATTRIBUTE = st.builds(AttributeDescriptor, st.integers(0, 2**16 - 1), LN, OCTET)
METHOD = st.builds(MethodDescriptor, st.integers(0, 2**16 - 1), LN, OCTET)
ACCESS = st.none() | st.builds(AccessSelection, OCTET, SMALL_DATA)
RESULT = st.sampled_from(DataAccessResult)
DATA_OR_RESULT = SMALL_DATA | RESULT
BLOCK = st.binary(max_size=300)

PDUS: st.SearchStrategy[XdlmsApdu] = st.one_of(
    st.builds(GetRequestNormal, OCTET, ATTRIBUTE, ACCESS),
    st.builds(GetRequestNext, OCTET, U32),
    st.builds(GetRequestWithList, OCTET, st.lists(st.tuples(ATTRIBUTE, ACCESS), max_size=4).map(tuple)),
    st.builds(GetResponseNormal, OCTET, DATA_OR_RESULT),
    st.builds(GetResponseWithDataBlock, OCTET, st.booleans(), U32, BLOCK | RESULT),
    st.builds(GetResponseWithList, OCTET, st.lists(DATA_OR_RESULT, max_size=4).map(tuple)),
    st.builds(SetRequestNormal, OCTET, ATTRIBUTE, ACCESS, SMALL_DATA),
    st.builds(SetRequestWithFirstDataBlock, OCTET, ATTRIBUTE, ACCESS, st.booleans(), U32, BLOCK),
    st.builds(SetRequestWithDataBlock, OCTET, st.booleans(), U32, BLOCK),
    st.builds(SetResponseNormal, OCTET, RESULT),
    st.builds(SetResponseDataBlock, OCTET, U32),
    st.builds(SetResponseLastDataBlock, OCTET, RESULT, U32),
    st.builds(ActionRequestNormal, OCTET, METHOD, st.none() | SMALL_DATA),
    st.builds(ActionResponseNormal, OCTET, st.sampled_from(ActionResult), st.none() | DATA_OR_RESULT),
    st.builds(ExceptionResponse, OCTET.filter(lambda v: v != 6), st.integers(0, 5)),
    st.builds(ExceptionResponse, OCTET, st.just(6), U32),
    st.builds(ConfirmedServiceError, OCTET, OCTET, OCTET),
    st.builds(DataNotification, U32, st.none() | st.binary(min_size=12, max_size=12), SMALL_DATA),
)


@FUZZ
@given(PDUS)
def test_round_trip(pdu: XdlmsApdu) -> None:
    assert decode_xdlms(encode_xdlms(pdu)) == pdu


@FUZZ
@given(st.sampled_from([b"\xc0", b"\xc4", b"\xc1", b"\xc5", b"\xc3", b"\xc7", b"\xd8", b"\x0e", b"\x0f", b""]),
       st.sampled_from([b"", b"\x01", b"\x02", b"\x03"]), st.binary(max_size=40))
def test_any_bytes_parse_or_raise_xdlms_error(tag: bytes, choice: bytes, rest: bytes) -> None:
    raw = tag + choice + rest
    try:
        pdu = decode_xdlms(raw)
    except XdlmsError:
        return
    assert decode_xdlms(encode_xdlms(pdu)) == pdu


# --- gurux as the outside head-end: its requests decode, it parses our responses ---


def _gurux_client() -> GXDLMSClient:
    client = GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.WRAPPER)
    client.setNegotiatedConformance(client.getProposedConformance())
    return client


def _unwrap(frame: bytes | bytearray) -> bytes:
    version, _source, _destination, length = struct.unpack(">HHHH", bytes(frame[:8]))
    assert version == 1
    assert length == len(frame) - 8
    return bytes(frame[8:])


def _wrap(apdu: bytes) -> bytes:
    return struct.pack(">HHHH", 1, 1, 16, len(apdu)) + apdu


def test_gurux_get_set_action_requests_decode() -> None:
    client = _gurux_client()
    register, data, clock = GXDLMSRegister("1.0.1.8.0.255"), GXDLMSData("0.0.96.1.0.255"), GXDLMSClock()
    data.value = 42
    data.setDataType(2, GxType.UINT16)
    profile = GXDLMSProfileGeneric("1.0.99.1.0.255")
    [read] = client.read(register, 2)
    assert decode_xdlms(_unwrap(read)) == GetRequestNormal(0xC1, ENERGY)
    [write] = client.write(data, 2)
    assert decode_xdlms(_unwrap(write)) == SetRequestNormal(
        0xC1, AttributeDescriptor(1, obis("0.0.96.1.0.255"), 2), None, Data.long_unsigned(42)
    )
    [action] = client.method(clock, 1, 0, GxType.INT8)
    assert decode_xdlms(_unwrap(action)) == ActionRequestNormal(
        0xC1, MethodDescriptor(8, obis("0.0.1.0.0.255"), 1), Data.integer(0)
    )
    [[read_list]] = client.readList([(register, 2), (data, 2)])
    assert decode_xdlms(_unwrap(read_list)) == GetRequestWithList(
        0xC1, ((ENERGY, None), (AttributeDescriptor(1, obis("0.0.96.1.0.255"), 2), None))
    )
    [by_entry] = client.readRowsByEntry(profile, 1, 10)
    by_entry_pdu = decode_xdlms(_unwrap(by_entry))
    assert isinstance(by_entry_pdu, GetRequestNormal)
    assert by_entry_pdu.access == AccessSelection(2, Data.structure(
        Data.double_long_unsigned(1), Data.double_long_unsigned(10), Data.long_unsigned(1), Data.long_unsigned(0)
    ))


def test_gurux_parses_our_get_response_for_a_register() -> None:
    client, register, reply = _gurux_client(), GXDLMSRegister("1.0.1.8.0.255"), GXReplyData()
    client.getData(_wrap(encode_xdlms(GetResponseNormal(0xC1, Data.double_long_unsigned(123456)))), reply)
    client.updateValue(register, 2, reply.value)
    assert register.value == 123456
    reply = GXReplyData()
    client.getData(_wrap(encode_xdlms(GetResponseNormal(0xC1, Data.structure(Data.integer(-1), Data.enum(30))))), reply)
    client.updateValue(register, 3, reply.value)
    assert (register.scaler, int(register.unit)) == (0.1, 30)


def test_gurux_reassembles_our_data_blocks_and_asks_for_the_next() -> None:
    client, register, reply = _gurux_client(), GXDLMSRegister("1.0.1.8.0.255"), GXReplyData()
    value = encode(Data.double_long_unsigned(987654))
    client.read(register, 2)  # gurux only asks for the next block of a GET it sent
    client.getData(_wrap(encode_xdlms(GetResponseWithDataBlock(0xC1, False, 1, value[:2]))), reply)
    assert reply.isMoreData()
    assert decode_xdlms(_unwrap(client.receiverReady(reply))) == GetRequestNext(0xC1, 1)
    client.getData(_wrap(encode_xdlms(GetResponseWithDataBlock(0xC1, True, 2, value[2:]))), reply)
    assert not reply.isMoreData()
    client.updateValue(register, 2, reply.value)
    assert register.value == 987654


def test_gurux_sees_our_errors_and_list_results() -> None:
    client, reply = _gurux_client(), GXReplyData()
    client.getData(_wrap(encode_xdlms(GetResponseNormal(0xC1, DataAccessResult.READ_WRITE_DENIED))), reply)
    assert reply.error == DataAccessResult.READ_WRITE_DENIED
    reply = GXReplyData()
    results = (Data.long_unsigned(5), DataAccessResult.OBJECT_UNDEFINED)
    client.getData(_wrap(encode_xdlms(GetResponseWithList(0xC1, results))), reply)
    assert list(reply.value) == [5, None]
    reply = GXReplyData()
    answer = ActionResponseNormal(0xC1, ActionResult.SUCCESS, Data.octet_string(b"ab"))
    client.getData(_wrap(encode_xdlms(answer)), reply)
    assert (bytes(reply.value), reply.error) == (b"ab", 0)
