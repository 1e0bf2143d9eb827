"""A-XDR Data codec: vectors, round-trips, bounds, fuzz, and a cross-check against gurux."""

from __future__ import annotations

import datetime
import math

import pytest
from gurux_dlms.enums import DataType as GxType
from gurux_dlms.GXByteBuffer import GXByteBuffer
from gurux_dlms.GXDLMSSettings import GXDLMSSettings
from gurux_dlms.internal._GXCommon import _GXCommon
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.codec.axdr import (
    MAX_DEPTH,
    AxdrEncodeError,
    AxdrError,
    BitString,
    Data,
    DataType,
    date_time,
    decode,
    decode_length,
    encode,
    encode_length,
    parse_date_time,
    parse_deviation,
)
from gateway.codec.errors import LocalProtocolError, RemoteProtocolError

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INT_RANGES = {
    DataType.INTEGER: (-(2**7), 2**7 - 1),
    DataType.LONG: (-(2**15), 2**15 - 1),
    DataType.DOUBLE_LONG: (-(2**31), 2**31 - 1),
    DataType.LONG64: (-(2**63), 2**63 - 1),
    DataType.UNSIGNED: (0, 2**8 - 1),
    DataType.LONG_UNSIGNED: (0, 2**16 - 1),
    DataType.DOUBLE_LONG_UNSIGNED: (0, 2**32 - 1),
    DataType.LONG64_UNSIGNED: (0, 2**64 - 1),
    DataType.ENUM: (0, 2**8 - 1),
    DataType.BCD: (0, 2**8 - 1),
}


# --- vectors (hand-encoded from the A-XDR rules of IEC 62056-6-2 / Green Book 9.5) ---

VECTORS = [
    (Data.null(), "00"),
    (Data.boolean(True), "0301"),
    (Data.boolean(False), "0300"),
    (Data.integer(-1), "0fff"),
    (Data.long(-2), "10fffe"),
    (Data.unsigned(200), "11c8"),
    (Data.long_unsigned(5), "120005"),
    (Data.double_long(-1), "05ffffffff"),
    (Data.double_long_unsigned(0x01020304), "0601020304"),
    (Data.long64(1), "140000000000000001"),
    (Data.long64_unsigned(2**64 - 1), "15ffffffffffffffff"),
    (Data.enum(30), "161e"),
    (Data.bcd(0x42), "0d42"),
    (Data.float32(1.5), "173fc00000"),
    (Data.float64(-2.0), "18c000000000000000"),
    (Data.octet_string(bytes([1, 0, 1, 8, 0, 255])), "09060100010800ff"),
    (Data.visible_string("ABC"), "0a03414243"),
    (Data.utf8_string("é"), "0c02c3a9"),
    (Data.bit_string(b"\xa5"), "0408a5"),
    (Data.bit_string(b"\xa0", bit_count=3), "0403a0"),
    # scaler_unit of a Register: {integer -1, enum 30 (Wh)}
    (Data.structure(Data.integer(-1), Data.enum(30)), "02020fff161e"),
    (Data.array(), "0100"),
    (Data.array(Data.structure(Data.long_unsigned(1), Data.octet_string(b"GW"))), "010102021200010902" "4757"),
    (Data(DataType.DATE, bytes.fromhex("07e8030f05")), "1a07e8030f05"),
    (Data(DataType.TIME, bytes.fromhex("0d2d1e19")), "1b0d2d1e19"),
    # compact-array of three long-unsigned: description {array, 3, long-unsigned}, then contents
    (Data(DataType.COMPACT_ARRAY, bytes.fromhex("0100031206000100020003")),
     "130100031206000100020003"),
]


@pytest.mark.parametrize(("data", "wire"), VECTORS)
def test_vector_encodes_and_decodes(data: Data, wire: str) -> None:
    raw = bytes.fromhex(wire)
    assert encode(data) == raw
    assert decode(raw) == (data, len(raw))


@pytest.mark.parametrize(("data", "wire"), VECTORS)
def test_every_truncation_of_a_vector_raises(data: Data, wire: str) -> None:
    raw = bytes.fromhex(wire)
    for cut in range(len(raw)):
        with pytest.raises(AxdrError):
            decode(raw[:cut])


def test_decode_at_offset_returns_end_offset() -> None:
    raw = b"\xee\xee" + encode(Data.long_unsigned(7)) + b"\x00"
    assert decode(raw, 2) == (Data.long_unsigned(7), 5)
    assert decode(raw, 5) == (Data.null(), 6)
    for outside in (-1, 6, 7):
        with pytest.raises(AxdrError):
            decode(raw, outside)
    with pytest.raises(AxdrError):
        decode_length(raw, -1)


@pytest.mark.parametrize(
    ("n", "wire"),
    [(0, "00"), (0x7F, "7f"), (0x80, "8180"), (0xFF, "81ff"), (0x100, "820100"), (0x10000, "83010000")],
)
def test_length_forms(n: int, wire: str) -> None:
    assert encode_length(n) == bytes.fromhex(wire)
    assert decode_length(bytes.fromhex("aa" + wire), 1) == (n, 1 + len(wire) // 2)


@pytest.mark.parametrize("n", [0x7F, 0x80, 0x100, 0x10000])
def test_octet_string_at_length_boundaries(n: int) -> None:
    data = Data.octet_string(bytes(range(256)) * (n // 256) + bytes(n % 256))
    raw = encode(data)
    assert raw[: len(encode_length(n)) + 1] == b"\x09" + encode_length(n)
    assert decode(raw) == (data, len(raw))


def test_array_count_at_length_boundary() -> None:
    data = Data.array(*[Data.unsigned(i % 256) for i in range(0x80)])
    raw = encode(data)
    assert raw[:3] == b"\x01\x81\x80"
    assert decode(raw)[0] == data


@pytest.mark.parametrize("wire", ["80", "85", "850000000000"])
def test_unsupported_length_forms_raise(wire: str) -> None:
    with pytest.raises(AxdrError):
        decode_length(bytes.fromhex(wire) + bytes(8), 0)


@pytest.mark.parametrize("n", [-1, 2**32])
def test_encode_length_out_of_range(n: int) -> None:
    with pytest.raises(AxdrEncodeError):
        encode_length(n)


# --- range and type checks on encode ---

@pytest.mark.parametrize(("kind", "bounds"), INT_RANGES.items())
def test_integer_ranges(kind: DataType, bounds: tuple[int, int]) -> None:
    low, high = bounds
    for ok in (low, high):
        assert decode(encode(Data(kind, ok)))[0] == Data(kind, ok)
    for bad in (low - 1, high + 1):
        with pytest.raises(AxdrEncodeError):
            encode(Data(kind, bad))


@pytest.mark.parametrize(
    "data",
    [
        Data(DataType.LONG, "1"),
        Data(DataType.UNSIGNED, True),
        Data(DataType.BOOLEAN, 1),
        Data(DataType.OCTET_STRING, "ab"),
        Data(DataType.VISIBLE_STRING, "snow ☃"),
        Data(DataType.NULL, 0),
        Data(DataType.STRUCTURE, [Data.null()]),  # type: ignore[arg-type]
        Data(DataType.DATE_TIME, bytes(11)),
        Data(DataType.FLOAT32, 1e39),
        Data(DataType.COMPACT_ARRAY, b"\x01\x00"),
    ],
)
def test_encode_rejects_values_the_type_cannot_carry(data: Data) -> None:
    with pytest.raises(AxdrEncodeError) as info:
        encode(data)
    assert isinstance(info.value, LocalProtocolError)


def test_bit_string_keeps_partial_bit_count() -> None:
    data = Data.bit_string(b"\xe0", bit_count=3)
    decoded = decode(encode(data))[0]
    assert isinstance(decoded.value, BitString)
    assert decoded.value.bit_count == 3
    assert decoded != Data.bit_string(b"\xe0", bit_count=4)
    assert Data.bit_string(b"\xe0", bit_count=8).value == b"\xe0"
    with pytest.raises(AxdrEncodeError):
        BitString(b"\xe0\x00", bit_count=3)


# --- decode bounds ---

def _nested(depth: int) -> bytes:
    return b"\x02\x01" * depth + b"\x00"


def test_nesting_up_to_max_depth_decodes_and_deeper_raises() -> None:
    assert decode(_nested(MAX_DEPTH))[1] == 2 * MAX_DEPTH + 1
    with pytest.raises(AxdrError, match="deeper"):
        decode(_nested(MAX_DEPTH + 1))
    deep = Data.null()
    for _ in range(MAX_DEPTH + 1):
        deep = Data.structure(deep)
    with pytest.raises(AxdrEncodeError):
        encode(deep)


@pytest.mark.parametrize("wire", ["0184ffffffff00", "0984ffffffff00", "0484ffffffff", "02830100000000"])
def test_huge_counts_are_refused_before_allocating(wire: str) -> None:
    with pytest.raises(AxdrError):
        decode(bytes.fromhex(wire))


@pytest.mark.parametrize("wire", ["07", "0800", "1c00", "ff", "0c02c3", "0c01ff", "1301000313"])
def test_malformed_inputs_raise(wire: str) -> None:
    with pytest.raises(AxdrError):
        decode(bytes.fromhex(wire))


# --- round-trips of every type (hypothesis) ---

def _integers_of(kind: DataType) -> st.SearchStrategy[Data]:
    return st.integers(*INT_RANGES[kind]).map(lambda value: Data(kind, value))


def _scalar() -> st.SearchStrategy[Data]:
    ints = [_integers_of(kind) for kind in INT_RANGES]
    bits = st.binary(min_size=1, max_size=8).flatmap(
        lambda raw: st.integers(8 * len(raw) - 7, 8 * len(raw)).map(
            lambda n: Data.bit_string(raw, bit_count=n)
        )
    )
    return st.one_of(
        st.just(Data.null()),
        st.booleans().map(Data.boolean),
        *ints,
        st.floats(width=32, allow_nan=False).map(Data.float32),
        st.floats(allow_nan=False).map(Data.float64),
        st.binary(max_size=300).map(Data.octet_string),
        st.text(st.characters(max_codepoint=0xFF), max_size=20).map(Data.visible_string),
        st.text(max_size=20).map(Data.utf8_string),
        bits,
        st.binary(min_size=0, max_size=0).map(lambda _: Data.bit_string(b"")),
        st.binary(min_size=12, max_size=12).map(lambda raw: Data(DataType.DATE_TIME, raw)),
        st.binary(min_size=5, max_size=5).map(lambda raw: Data(DataType.DATE, raw)),
        st.binary(min_size=4, max_size=4).map(lambda raw: Data(DataType.TIME, raw)),
    )


DATA = st.recursive(
    _scalar(),
    lambda children: st.one_of(
        st.lists(children, max_size=5).map(lambda xs: Data.array(*xs)),
        st.lists(children, max_size=5).map(lambda xs: Data.structure(*xs)),
    ),
    max_leaves=30,
)


@FUZZ
@given(DATA)
def test_round_trip_every_type(data: Data) -> None:
    raw = encode(data)
    assert decode(raw) == (data, len(raw))
    assert encode(decode(raw)[0]) == raw


@FUZZ
@given(st.binary(max_size=64))
def test_any_bytes_parse_or_raise_axdr_error(raw: bytes) -> None:
    try:
        data, end = decode(raw)
    except AxdrError as exc:
        assert isinstance(exc, RemoteProtocolError)
        return
    assert 0 < end <= len(raw)
    if not (isinstance(data.value, float) and math.isnan(data.value)):
        assert decode(encode(data))[0] == data  # what we accept, we can relay again


# --- date-time ---

def test_date_time_vector_and_parse() -> None:
    moment = datetime.datetime(2024, 3, 15, 13, 45, 30, 250_000)  # a Friday
    data = date_time(moment, deviation_minutes=-60)
    assert data.type is DataType.DATE_TIME
    assert data.value == bytes.fromhex("07e8030f050d2d1e19ffc400")
    assert isinstance(data.value, bytes)
    assert parse_date_time(data.value) == moment
    assert parse_deviation(data.value) == -60
    unspecified = date_time(moment)
    assert isinstance(unspecified.value, bytes)
    assert unspecified.value[9:11] == b"\x80\x00"
    assert parse_deviation(unspecified.value) is None


@pytest.mark.parametrize(
    "wire",
    ["ffff030f050d2d1e00800000", "07e8ff0f050d2d1e00800000", "07e803fe050d2d1e00800000",
     "07e8030fffff2d1e00800000", "07e8030f050dff1e00800000", "07e8030f050d2dff00800000"],
)
def test_wildcards_parse_as_none(wire: str) -> None:
    assert parse_date_time(bytes.fromhex(wire)) is None


def test_unspecified_hundredths_parse_as_zero() -> None:
    parsed = parse_date_time(bytes.fromhex("07e8030f050d2d1eff800000"))
    assert parsed == datetime.datetime(2024, 3, 15, 13, 45, 30)


@pytest.mark.parametrize("wire", ["07e80d0f050d2d1e00800000", "07e8030f05182d1e00800000", "07e8030f050d2d1e008000"])
def test_invalid_date_time_raises(wire: str) -> None:
    with pytest.raises(AxdrError):
        parse_date_time(bytes.fromhex(wire))


def test_date_time_rejects_out_of_range_deviation() -> None:
    with pytest.raises(AxdrEncodeError):
        date_time(datetime.datetime(2024, 1, 1), deviation_minutes=721)


@FUZZ
@given(st.datetimes(min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 12, 31)))
def test_date_time_round_trip(moment: datetime.datetime) -> None:
    value = date_time(moment).value
    assert isinstance(value, bytes)
    assert parse_date_time(value) == moment.replace(microsecond=moment.microsecond // 10_000 * 10_000)
    assert value[4] == moment.isoweekday()


# --- cross-check: gurux (an independent implementation) encodes the same octets ---

def _gurux_encode(gurux_type_name: str, value: object) -> bytes:
    buff = GXByteBuffer()
    _GXCommon.setData(GXDLMSSettings(True, None), buff, getattr(GxType, gurux_type_name), value)
    return bytes(buff.array())


GURUX_NAMES = {
    DataType.INTEGER: "INT8", DataType.LONG: "INT16", DataType.DOUBLE_LONG: "INT32",
    DataType.LONG64: "INT64", DataType.UNSIGNED: "UINT8", DataType.LONG_UNSIGNED: "UINT16",
    DataType.DOUBLE_LONG_UNSIGNED: "UINT32", DataType.LONG64_UNSIGNED: "UINT64", DataType.ENUM: "ENUM",
}


@FUZZ
@given(st.sampled_from(sorted(GURUX_NAMES)).flatmap(_integers_of))
def test_integers_match_gurux(data: Data) -> None:
    assert encode(data) == _gurux_encode(GURUX_NAMES[data.type], data.value)


@pytest.mark.parametrize("size", [0, 1, 0x7F, 0x80, 0x100, 0x10000])
def test_octet_string_lengths_match_gurux(size: int) -> None:
    payload = bytes(size)
    theirs = _gurux_encode("OCTET_STRING", payload)
    assert decode(theirs) == (Data.octet_string(payload), len(theirs))
    assert decode(_gurux_encode("STRING", "x" * size))[0] == Data.visible_string("x" * size)
    if size < 0x10000:  # from 2**16 gurux writes a 4-octet length (84 ..), we the minimal 3 (83 ..)
        assert encode(Data.octet_string(payload)) == theirs
