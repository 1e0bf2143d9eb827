"""IEC 62056-4-7 wrapper codec: vectors, chunking, bounds, fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec.errors import LocalProtocolError, RemoteProtocolError
from gateway.codec.wrapper import WrapperDecoder, WrapperError, WrapperPdu, encode

# An AARQ from public client 16 to logical device 1, as a HES sends it (header hand-assembled).
AARQ = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400001E1DFFFF")
VECTOR = bytes.fromhex("0001 0010 0001 001F".replace(" ", "")) + AARQ


def test_vector_encodes_byte_exact() -> None:
    assert encode(WrapperPdu(source=16, destination=1, apdu=AARQ)) == VECTOR


@pytest.mark.parametrize("split", ["whole", "halves", "bytes"])
def test_vector_decodes_in_any_chunking(split: str) -> None:
    decoder = WrapperDecoder()
    if split == "whole":
        chunks = [VECTOR]
    elif split == "halves":
        chunks = [VECTOR[: len(VECTOR) // 2], VECTOR[len(VECTOR) // 2 :]]
    else:
        chunks = [VECTOR[i : i + 1] for i in range(len(VECTOR))]
    pdus = [pdu for chunk in chunks for pdu in decoder.feed(chunk)]
    assert pdus == [WrapperPdu(16, 1, AARQ)]
    assert decoder.buffered == 0


def test_two_pdus_in_one_segment_and_a_partial_third() -> None:
    second = WrapperPdu(source=1, destination=300, apdu=b"\xc0\x01\xc1")
    stream = VECTOR + encode(second) + VECTOR[:5]
    decoder = WrapperDecoder()
    assert decoder.feed(stream) == [WrapperPdu(16, 1, AARQ), second]
    assert decoder.buffered == 5
    assert decoder.feed(VECTOR[5:]) == [WrapperPdu(16, 1, AARQ)]


def test_reply_swaps_ports() -> None:
    assert WrapperPdu(16, 42, b"\x60").reply(b"\x61") == WrapperPdu(42, 16, b"\x61")


def test_wrong_version_is_a_remote_error() -> None:
    with pytest.raises(WrapperError, match="version 2"):
        WrapperDecoder().feed(b"\x00\x02" + VECTOR[2:])


def test_length_over_limit_is_refused_before_buffering_the_apdu() -> None:
    decoder = WrapperDecoder(max_apdu=1024)
    with pytest.raises(WrapperError, match="exceeds"):
        decoder.feed(bytes.fromhex("00010010000107D0"))  # 2000 > 1024, body not yet sent
    assert decoder.buffered <= 8


def test_empty_apdu_is_a_pdu() -> None:
    assert WrapperDecoder().feed(bytes.fromhex("0001001000010000")) == [WrapperPdu(16, 1, b"")]


def test_encoder_refuses_what_the_header_cannot_carry() -> None:
    with pytest.raises(LocalProtocolError):
        encode(WrapperPdu(16, 1, bytes(70000)))
    with pytest.raises(LocalProtocolError):
        encode(WrapperPdu(70000, 1, b""))


pdus = st.builds(
    WrapperPdu,
    source=st.integers(0, 0xFFFF),
    destination=st.integers(0, 0xFFFF),
    apdu=st.binary(max_size=300),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(pdus, max_size=5), st.data())
def test_round_trip_in_random_chunks(items: list[WrapperPdu], data: st.DataObject) -> None:
    stream = b"".join(encode(p) for p in items)
    decoder = WrapperDecoder()
    out: list[WrapperPdu] = []
    offset = 0
    while offset < len(stream):
        step = data.draw(st.integers(1, 64))
        out += decoder.feed(stream[offset : offset + step])
        offset += step
    assert out == items
    assert decoder.buffered == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=20))
def test_any_bytes_parse_or_raise_remote_error_with_bounded_memory(chunks: list[bytes]) -> None:
    decoder = WrapperDecoder(max_apdu=64)
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            assert decoder.buffered < 8 + 64 + 40
    except RemoteProtocolError:
        pass
