"""CRC, addresses, frame encoding and the incremental decoder, on captured vectors and fuzz."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec.errors import LocalProtocolError
from gateway.codec.hdlc import (
    FrameKind,
    HdlcAddress,
    HdlcError,
    HdlcFrame,
    HdlcFrameDecoder,
    crc16_x25,
    decode_address,
    encode_frame,
    meter_address_problem,
)
from gateway.codec.hdlc.crc import CRC16_X25_START, crc16_x25_update, crc16_x25_value
from gateway.codec.hdlc.frame import MAX_BLAMED_SOURCES, MAX_LINK_HEADERS, LinkFrames, encode_fields, split_frames
from tests.codec.hdlc.vectors import CLIENT_16, SERVER_1, VECTORS, Vector

GARBAGE = bytes.fromhex("00 A0 13 FF 55")  # no flag byte: every byte must be counted as discarded


def _bitwise_crc(data: bytes) -> int:
    """CRC-16/X-25 the slow way, to check the table-driven one."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def _feed_cuts(decoder: HdlcFrameDecoder, wire: bytes, cuts: list[int]) -> list[HdlcFrame]:
    """Feed ``wire`` in reads of the given sizes, then the rest in one."""
    decoded: list[HdlcFrame] = []
    position = 0
    for cut in [*cuts, len(wire)]:
        decoded += decoder.feed(wire[position : position + cut], now=0.0)
        position += cut
    return decoded


def _feed_chunks(decoder: HdlcFrameDecoder, data: bytes, chunk: int) -> list[HdlcFrame]:
    frames: list[HdlcFrame] = []
    for start in range(0, len(data), chunk):
        frames += decoder.feed(data[start : start + chunk], now=0.0)
    return frames


def test_crc_check_value() -> None:
    assert crc16_x25(b"123456789") == 0x906E
    assert crc16_x25(b"") == 0x0000


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_crc_table_matches_bitwise(data: bytes) -> None:
    assert crc16_x25(data) == _bitwise_crc(data)


@pytest.mark.parametrize(
    ("address", "wire"),
    [
        (HdlcAddress.client(16), "21"),
        (HdlcAddress.client(1), "03"),
        (HdlcAddress(upper=1, lower=None, size=1), "03"),
        (HdlcAddress.server(logical_device=1, physical_address=17), "02 23"),  # gurux_dlms note
        (HdlcAddress.server(logical_device=1, physical_address=300), "00 02 04 59"),  # gurux_dlms note
        (HdlcAddress.server(logical_device=1, physical_address=17, size=4), "00 02 00 23"),
        (HdlcAddress.server(logical_device=0x3FFF, physical_address=0x3FFF), "FE FE FE FF"),
    ],
)
def test_address_vectors(address: HdlcAddress, wire: str) -> None:
    data = bytes.fromhex(wire)
    assert address.encode() == data
    assert decode_address(b"\x99" + data + b"\x42", 1) == (address, 1 + len(data))


def test_server_address_size_is_the_smallest_that_fits() -> None:
    assert HdlcAddress.server(logical_device=0x7D, physical_address=0x7D).size == 2
    # 0x7E/0x7F in a 1-byte half mean calling/all-station: a meter there is addressed in 4 bytes
    assert HdlcAddress.server(logical_device=1, physical_address=0x7F).size == 4
    assert HdlcAddress.server(logical_device=0x7E, physical_address=17).size == 4
    assert HdlcAddress.server(logical_device=0x7F, physical_address=0x7F, size=2).encode() == b"\xfe\xff"
    assert HdlcAddress.server(logical_device=0x80, physical_address=1).size == 4
    assert HdlcAddress.server(logical_device=1, physical_address=0x80).size == 4


@pytest.mark.parametrize(
    "make",
    [
        lambda: HdlcAddress.client(0x80),
        lambda: HdlcAddress.server(logical_device=1, physical_address=0x4000),
        lambda: HdlcAddress.server(logical_device=1, physical_address=0x80, size=2),
        lambda: HdlcAddress.server(logical_device=1, physical_address=1, size=1),
        lambda: HdlcAddress(upper=1, lower=None, size=3),
        lambda: HdlcAddress(upper=1, lower=None, size=2),
    ],
)
def test_impossible_addresses_are_refused(make: object) -> None:
    with pytest.raises(LocalProtocolError):
        make()  # type: ignore[operator]


@pytest.mark.parametrize("wire", ["02 04 07", "02 04 06 08 0A", "02 04"])
def test_malformed_address_fields_raise(wire: str) -> None:
    with pytest.raises(HdlcError):
        decode_address(bytes.fromhex(wire), 0)


def test_frame_helpers() -> None:
    information = HdlcFrame(SERVER_1, CLIENT_16, 0xB6)  # N(R)=5, P, N(S)=3
    assert (information.kind, information.poll_final, information.send_seq, information.recv_seq) == (
        FrameKind.I,
        True,
        3,
        5,
    )
    ready = HdlcFrame(SERVER_1, CLIENT_16, 0x41)  # RR, N(R)=2, no P
    assert (ready.kind, ready.poll_final, ready.recv_seq) == (FrameKind.RR, False, 2)
    assert HdlcFrame(SERVER_1, CLIENT_16, 0x05).kind is FrameKind.RNR
    assert HdlcFrame(SERVER_1, CLIENT_16, 0x97).kind is FrameKind.FRMR
    assert HdlcFrame(SERVER_1, CLIENT_16, 0x13).kind is FrameKind.UI
    with pytest.raises(LocalProtocolError):
        _ = ready.send_seq
    with pytest.raises(HdlcError):
        _ = HdlcFrame(SERVER_1, CLIENT_16, 0x09).kind  # REJ: not used by DLMS


def test_frame_too_long_for_the_length_field_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(HdlcFrame(SERVER_1, CLIENT_16, 0x10, bytes(2040)))


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector.name)
def test_vector_encodes_byte_exact(vector: Vector) -> None:
    assert encode_frame(vector.frame) == vector.wire


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector.name)
@pytest.mark.parametrize("chunk", [10_000, 0, 1], ids=["whole", "halves", "bytewise"])
def test_vector_decodes_in_any_chunking(vector: Vector, chunk: int) -> None:
    decoder = HdlcFrameDecoder()
    frames = _feed_chunks(decoder, vector.wire, chunk or len(vector.wire) // 2 + 1)
    assert frames == [vector.frame]
    assert (decoder.frames, decoder.bad_crc, decoder.discarded_bytes, decoder.timeouts) == (1, 0, 0, 0)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector.name)
@pytest.mark.parametrize("chunk", [10_000, 1])
def test_vector_with_garbage_before_and_after(vector: Vector, chunk: int) -> None:
    decoder = HdlcFrameDecoder()
    frames = _feed_chunks(decoder, GARBAGE + vector.wire + GARBAGE + vector.wire, chunk)
    assert frames == [vector.frame, vector.frame]
    assert decoder.discarded_bytes == 2 * len(GARBAGE)
    assert decoder.bad_crc == 0


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector.name)
def test_frames_sharing_one_flag(vector: Vector) -> None:
    shared = vector.wire + vector.wire[1:] + VECTORS[0].wire[1:]
    decoder = HdlcFrameDecoder()
    assert _feed_chunks(decoder, shared, 1) == [vector.frame, vector.frame, VECTORS[0].frame]
    assert (decoder.bad_crc, decoder.discarded_bytes) == (0, 0)


def _corrupt(wire: bytes, index: int) -> bytes:
    return wire[:index] + bytes([wire[index] ^ 0x01]) + wire[index + 1 :]


CHECK_SEQUENCES = [(v, "fcs") for v in VECTORS] + [(v, "hcs") for v in VECTORS if v.frame.info]


@pytest.mark.parametrize(("vector", "where"), CHECK_SEQUENCES, ids=lambda p: getattr(p, "name", p))
@pytest.mark.parametrize("chunk", [10_000, 1])
def test_bad_check_sequence_is_dropped_and_counted(vector: Vector, where: str, chunk: int) -> None:
    header_end = 1 + 2 + len(vector.frame.destination.encode()) + len(vector.frame.source.encode()) + 1
    bad = _corrupt(vector.wire, header_end if where == "hcs" else len(vector.wire) - 2)
    decoder = HdlcFrameDecoder()
    assert _feed_chunks(decoder, bad + VECTORS[0].wire, chunk) == [VECTORS[0].frame]
    assert decoder.bad_crc == 1
    assert decoder.frames == 1
    # only a bad FCS after a good HCS names its meter: without an HCS, or with a bad one, the address is noise
    source = vector.frame.source
    blamed = {(source.upper, source.lower): 1} if where == "fcs" and vector.frame.info else {}
    assert decoder.take_bad_fcs() == blamed
    assert decoder.take_bad_fcs() == {}


def test_bad_fcs_frames_are_attributed_to_a_bounded_number_of_addresses() -> None:
    decoder = HdlcFrameDecoder()
    for physical_address in range(16, 16 + MAX_BLAMED_SOURCES + 10):
        source = HdlcAddress.server(logical_device=1, physical_address=physical_address)
        wire = encode_frame(HdlcFrame(HdlcAddress.client(16), source, 0x10, b"\xc4\x01"))
        decoder.feed(_corrupt(wire, len(wire) - 2) * 2, now=0.0)
    blamed = decoder.take_bad_fcs()
    assert len(blamed) == MAX_BLAMED_SOURCES and set(blamed.values()) == {2}
    assert decoder.bad_crc == 2 * (MAX_BLAMED_SOURCES + 10)


def test_corrupted_information_byte_fails_the_fcs_and_the_frame_is_skipped_whole() -> None:
    vector = next(v for v in VECTORS if v.name == "aarq-flag-byte-inside")
    decoder = HdlcFrameDecoder()
    frames = decoder.feed(_corrupt(vector.wire, 20) + VECTORS[0].wire, now=0.0)
    assert frames == [VECTORS[0].frame]
    assert decoder.bad_crc == 1
    # the HCS vouched for the length, so the 7E inside the information field opened no false frame
    assert decoder.discarded_bytes == len(vector.wire) - 2 - vector.wire.count(0x7E, 1, -1)


def test_a_stale_partial_frame_is_discarded_at_the_next_feed() -> None:
    wire = VECTORS[1].wire
    decoder = HdlcFrameDecoder(inter_octet_timeout_s=0.1)
    assert decoder.feed(wire[:10], now=5.0) == []
    assert decoder.feed(wire, now=5.5) == [VECTORS[1].frame]
    assert decoder.timeouts == 1
    assert decoder.discarded_bytes == 9  # the opening flag is not counted


def test_a_slow_line_within_the_inter_octet_timeout_is_not_a_timeout() -> None:
    wire = VECTORS[4].wire
    decoder = HdlcFrameDecoder(inter_octet_timeout_s=0.1)
    frames = [frame for index, byte in enumerate(wire) for frame in decoder.feed(bytes([byte]), now=index * 0.09)]
    assert frames == [VECTORS[4].frame]
    assert decoder.timeouts == 0


def test_a_lone_closing_flag_waiting_for_the_next_frame_is_no_timeout() -> None:
    wire = VECTORS[0].wire
    decoder = HdlcFrameDecoder(inter_octet_timeout_s=0.1)
    assert decoder.feed(wire[:-1], now=0.0) == [VECTORS[0].frame]
    assert decoder.feed(wire[-1:], now=0.0) == []
    assert decoder.feed(wire, now=60.0) == [VECTORS[0].frame]
    assert (decoder.timeouts, decoder.discarded_bytes) == (0, 0)


def test_a_length_beyond_max_frame_length_is_not_a_frame() -> None:
    vector = next(v for v in VECTORS if v.name == "aarq-flag-byte-inside")
    decoder = HdlcFrameDecoder(max_frame_length=len(vector.wire) - 2)
    assert decoder.feed(vector.wire + VECTORS[0].wire, now=0.0) == [VECTORS[0].frame]
    assert decoder.buffered <= len(vector.wire) - 2


addresses = st.one_of(
    st.integers(0, 0x7F).map(HdlcAddress.client),
    st.builds(
        HdlcAddress.server,
        logical_device=st.integers(0, 0x7F),
        physical_address=st.integers(0, 0x7F),
        size=st.sampled_from([2, 4]),
    ),
    st.builds(
        HdlcAddress.server,
        logical_device=st.integers(0, 0x3FFF),
        physical_address=st.integers(0, 0x3FFF),
        size=st.just(4),
    ),
)
frames = st.builds(
    HdlcFrame,
    destination=addresses,
    source=addresses,
    control=st.integers(0, 0xFF),
    info=st.binary(max_size=300),
    segmented=st.booleans(),
)


@given(frame_list=st.lists(frames, min_size=1, max_size=4), cuts=st.lists(st.integers(1, 400), max_size=8))
@settings(max_examples=200, deadline=None)
def test_round_trip_of_arbitrary_frames_in_arbitrary_chunks(frame_list: list[HdlcFrame], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(frame) for frame in frame_list)
    decoder = HdlcFrameDecoder()
    assert _feed_cuts(decoder, wire, cuts) == frame_list
    assert (decoder.bad_crc, decoder.discarded_bytes) == (0, 0)


@given(
    noise=st.binary(max_size=3000),
    cuts=st.lists(st.integers(1, 700), max_size=10),
    max_frame_length=st.sampled_from([64, 300, 2048]),
)
@settings(max_examples=200, deadline=None)
def test_arbitrary_bytes_never_raise_and_stay_bounded(noise: bytes, cuts: list[int], max_frame_length: int) -> None:
    decoder = HdlcFrameDecoder(max_frame_length=max_frame_length)
    position = 0
    for index, cut in enumerate([*cuts, len(noise)]):
        decoder.feed(noise[position : position + cut], now=index * 0.05)
        position += cut
        assert decoder.buffered <= max_frame_length


@given(noise=st.binary(max_size=500).map(lambda data: data.replace(b"\x7e", b"")), frame=frames)
@settings(max_examples=200, deadline=None)
def test_a_frame_after_noise_without_flags_is_found(noise: bytes, frame: HdlcFrame) -> None:
    decoder = HdlcFrameDecoder()
    assert decoder.feed(noise + encode_frame(frame), now=0.0) == [frame]
    assert decoder.discarded_bytes == len(noise)


def test_a_frame_whose_opening_flag_ended_the_previous_read_is_decoded() -> None:
    # the closing flag of one read's last frame opens the next frame, which comes in the next read
    first, second = VECTORS[0], VECTORS[1]
    decoder = HdlcFrameDecoder()
    assert decoder.feed(first.wire, now=0.0) == [first.frame]
    assert decoder.buffered == 1  # the flag is kept: it may open the next frame
    assert decoder.feed(second.wire[1:], now=0.0) == [second.frame]
    assert (decoder.bad_crc, decoder.discarded_bytes) == (0, 0)


@given(
    parts=st.lists(st.one_of(frames.map(lambda frame: (True, encode_frame(frame))), st.binary(max_size=40).map(
        lambda noise: (False, noise))), min_size=1, max_size=6),
    shared=st.lists(st.booleans(), min_size=6, max_size=6),
    cuts=st.lists(st.integers(1, 300), max_size=8),
)
@settings(max_examples=300, deadline=None)
def test_any_chunking_decodes_what_the_whole_stream_decodes(parts: list[tuple[bool, bytes]], shared: list[bool],
                                                            cuts: list[int]) -> None:
    # frames (some sharing a flag with the one before) and noise: reads cut anywhere give the same frames and counts
    wire = b""
    for (is_frame, data), share in zip(parts, shared, strict=False):
        wire += data[1:] if is_frame and share and wire.endswith(b"\x7e") else data
    whole = HdlcFrameDecoder()
    expected = whole.feed(wire, now=0.0)
    chunked = HdlcFrameDecoder()
    assert _feed_cuts(chunked, wire, cuts) == expected
    assert (chunked.bad_crc, chunked.discarded_bytes, chunked.buffered) == \
        (whole.bad_crc, whole.discarded_bytes, whole.buffered)


def test_resume_keeps_our_own_processing_time_from_counting_as_a_line_gap() -> None:
    frame = bytes.fromhex("7EA00703219 30F017E".replace(" ", ""))
    busy = HdlcFrameDecoder(inter_octet_timeout_s=0.1)
    assert busy.feed(frame[:4], now=0.0) == []
    busy.resume(now=1.0)  # we were handling other frames until t = 1.0; the rest was waiting in the OS
    assert len(busy.feed(frame[4:], now=1.05)) == 1
    idle = HdlcFrameDecoder(inter_octet_timeout_s=0.1)
    assert idle.feed(frame[:4], now=0.0) == []
    assert idle.feed(frame[4:], now=1.05) == []  # a real gap on the line: the partial frame is dropped
    assert idle.timeouts == 1


@pytest.mark.parametrize("control", range(256))
def test_every_control_byte_is_classified_without_raising(control: int) -> None:
    frame = HdlcFrame(destination=CLIENT_16, source=SERVER_1, control=control, info=b"\x0f\x01")
    kind = frame.defined_kind
    if kind is None:
        with pytest.raises(HdlcError):
            _ = frame.kind
    else:
        assert frame.kind is kind


@pytest.mark.parametrize(("logical_device", "physical_address"),
                         [(1, 999999), (1, -1), (1, 0), (1, 15), (1, 16382), (1, 16383), (99999, 17), (0, 17),
                          (16383, 17), (1, True), (True, 17), (1, 17.0)])
def test_a_meter_cannot_sit_at_a_reserved_or_oversized_address(logical_device: int, physical_address: int) -> None:
    assert meter_address_problem(logical_device=logical_device, physical_address=physical_address) is not None


@pytest.mark.parametrize(("logical_device", "physical_address"), [(1, 16), (1, 16381), (16381, 300), (1, 127)])
def test_every_meter_address_can_be_encoded(logical_device: int, physical_address: int) -> None:
    assert meter_address_problem(logical_device=logical_device, physical_address=physical_address) is None
    address = HdlcAddress.server(logical_device=logical_device, physical_address=physical_address)
    assert decode_address(address.encode(), 0) == (address, address.size)


def test_a_capturing_decoder_keeps_every_whole_frame_as_it_arrived_bad_fcs_marked() -> None:
    good = encode_frame(HdlcFrame(destination=HdlcAddress.client(16),
                                  source=HdlcAddress.server(logical_device=1, physical_address=17),
                                  control=0x30, info=b"\xe6\xe7\x00\xc4\x01\xc1\x00\x09\x02AB"))
    corrupted = good[:-4] + bytes([good[-4] ^ 0xFF]) + good[-3:]  # a byte of the information field flipped
    decoder = HdlcFrameDecoder()
    decoder.keep_raw = True
    stream = good + corrupted[1:] + b"\x00garbage" + good  # the second frame shares the first one's flag
    frames = [f for chunk in (stream[:7], stream[7:]) for f in decoder.feed(chunk, now=0.0)]
    assert len(frames) == 2 and decoder.bad_crc == 1
    assert [(raw, bad) for raw, _, bad in decoder.raw] == [(good, False), (corrupted, True), (good, False)]
    assert {source.lower for _, source, _ in decoder.raw} == {17}
    quiet = HdlcFrameDecoder()
    quiet.feed(stream, now=0.0)
    assert quiet.raw == []  # nothing kept unless a capture asks


def test_split_frames_gives_back_each_frame_we_sent() -> None:
    sent = [encode_frame(HdlcFrame(destination=HdlcAddress.server(logical_device=1, physical_address=17),
                                   source=HdlcAddress.client(16), control=0x10 | n << 1, info=bytes([n]) * n))
            for n in range(1, 4)]
    assert split_frames(b"".join(sent)) == sent
    assert split_frames(b"") == []


@given(st.binary(max_size=2100))
def test_the_fast_crc_equals_the_textbook_one(data: bytes) -> None:
    from gateway.codec.hdlc.crc import crc16_x25_reference  # noqa: PLC0415

    assert crc16_x25(data) == crc16_x25_reference(data)
    assert crc16_x25(bytearray(data)) == crc16_x25_reference(data)


@given(head=st.binary(max_size=40), tail=st.binary(max_size=300))
def test_a_check_sequence_carried_on_from_a_header_equals_the_one_over_the_whole(head: bytes, tail: bytes) -> None:
    register = crc16_x25_update(crc16_x25_update(CRC16_X25_START, head), tail)
    assert crc16_x25_value(register) == crc16_x25(head + tail) == _bitwise_crc(head + tail)


@given(
    sends=st.lists(st.tuples(st.integers(0, 0xFF), st.binary(max_size=200), st.booleans()), min_size=1,
                   max_size=MAX_LINK_HEADERS + 20),
    server=st.sampled_from([SERVER_1, HdlcAddress.server(logical_device=1, physical_address=0x3FFD)]),
)
@settings(max_examples=100, deadline=None)
def test_a_link_encodes_every_frame_as_the_plain_encoder_does_cached_header_or_not(
        sends: list[tuple[int, bytes, bool]], server: HdlcAddress) -> None:
    addresses = server.encode() + CLIENT_16.encode()
    frames = LinkFrames(addresses)
    for control, info, segmented in sends * 2:  # the second pass meets the headers cached (or cleared) by the first
        wire = frames.encode(control, info, segmented=segmented)
        assert wire == encode_fields(addresses, control, info, segmented=segmented)
        assert HdlcFrameDecoder().feed(wire, now=0.0) == [HdlcFrame(server, CLIENT_16, control, info,
                                                                    segmented)]


def test_a_link_refuses_a_frame_longer_than_the_length_field_holds() -> None:
    with pytest.raises(LocalProtocolError, match="11-bit"):
        LinkFrames(SERVER_1.encode() + CLIENT_16.encode()).encode(0x10, bytes(2048))
