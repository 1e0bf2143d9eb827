"""Client and server links in a pure loop: negotiation, segmentation, windows, losses, teardown."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec.errors import LocalProtocolError
from gateway.codec.hdlc import (
    ApduFromClient,
    ApduReceived,
    ClientConnected,
    ClientDisconnected,
    FrameKind,
    HdlcAddress,
    HdlcFrame,
    HdlcFrameDecoder,
    HdlcParameters,
    HdlcServerLink,
    LinkDown,
    LinkDownReason,
    LinkState,
    LinkUp,
    ServerSettings,
    encode_frame,
)
from gateway.codec.hdlc.params import encode_parameters
from tests.codec.hdlc.pure_loop import CLIENT_SAP, METER, Loop

CLIENT = HdlcAddress.client(CLIENT_SAP)


def _parameters(max_info: int, window: int) -> HdlcParameters:
    return HdlcParameters(max_info_tx=max_info, max_info_rx=max_info, window_tx=window, window_rx=window)


def _connected(loop: Loop) -> Loop:
    loop.client.connect()
    loop.run()
    assert loop.client.state is LinkState.CONNECTED
    return loop


def _apdu(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _from_meter(control: int, info: bytes = b"", *, segmented: bool = False) -> HdlcFrame:
    return HdlcFrame(CLIENT, METER, control, info, segmented=segmented)


def test_connect_negotiates_and_each_side_keeps_its_own_view() -> None:
    proposed = HdlcParameters(max_info_tx=2030, max_info_rx=2030, window_tx=7, window_rx=7)
    supported = HdlcParameters(max_info_tx=512, max_info_rx=256, window_tx=3, window_rx=7)
    loop = _connected(Loop(proposed=proposed, supported=supported))
    client_view = HdlcParameters(max_info_tx=256, max_info_rx=512, window_tx=7, window_rx=3)
    assert loop.client_events == [LinkUp(client_view)]
    assert loop.client.parameters == client_view
    assert loop.server_events == [ClientConnected(CLIENT_SAP)]
    snrm, ua = loop.to_server[0], loop.to_client[0]
    assert (snrm.kind, ua.kind) == (FrameKind.SNRM, FrameKind.UA)
    # the first exchange uses the negotiated sizes in each direction
    loop.client.send_apdu(_apdu(3000, 1))
    loop.run()
    assert max(len(f.info) for f in loop.sent(FrameKind.I, to_server=True)) == 256
    assert max(len(f.info) for f in loop.sent(FrameKind.I, to_server=False)) == 512


@pytest.mark.parametrize("size", [1, 125, 126, 1000, 10_000])
@pytest.mark.parametrize("max_info", [128, 2030])
@pytest.mark.parametrize("window", [1, 7])
def test_apdus_of_any_size_cross_both_ways(size: int, max_info: int, window: int) -> None:
    loop = _connected(Loop(proposed=_parameters(max_info, window), supported=_parameters(max_info, window)))
    requests = [_apdu(size, seed) for seed in range(2)]
    for request in requests:
        loop.client.send_apdu(request)
    loop.run()
    assert [e for e in loop.server_events if isinstance(e, ApduFromClient)] == [
        ApduFromClient(CLIENT_SAP, request) for request in requests
    ]
    assert loop.client_events[1:] == [ApduReceived(request[::-1]) for request in requests]
    segments = math.ceil((size + 3) / max_info)  # the LLC header rides in the first segment
    sent, answered = loop.sent(FrameKind.I, to_server=True), loop.sent(FrameKind.I, to_server=False)
    assert len(sent) == len(answered) == 2 * segments
    assert all(len(frame.info) <= max_info for frame in sent + answered)
    assert [frame.segmented for frame in sent[:segments]] == [True] * (segments - 1) + [False]
    # a window lets `window` frames go per poll: RR pulls each next batch, in both directions
    batches = math.ceil(segments / window)
    assert len(loop.sent(FrameKind.RR, to_server=True)) == 2 * (batches - 1)
    assert len(loop.sent(FrameKind.RR, to_server=False)) == 2 * (batches - 1)
    assert len(loop.transmissions) == 1 + 2 * (2 * batches - 1)
    assert loop.client.retries == 0


def test_response_timer_starts_at_transmit_not_at_queueing() -> None:
    loop = _connected(Loop())
    loop.client.send_apdu(b"\xc0\x01")
    loop.now += 500.0  # 64 sessions may wait for the medium this long
    assert loop.client.deadline is None
    assert loop.client.wants_medium
    loop.client.transmit(now=loop.now)
    assert loop.client.deadline == loop.now + 1.0
    assert loop.client.awaiting_response
    assert not loop.client.wants_medium
    assert loop.client.expire(now=loop.now + 0.999) == []
    assert loop.client.awaiting_response


def _lossy(window: int, drop_to_server: set[int], drop_to_client: set[int]) -> Loop:
    loop = Loop(
        proposed=_parameters(128, window),
        supported=_parameters(128, window),
        drop_to_server=drop_to_server,
        drop_to_client=drop_to_client,
    )
    loop.client.connect()
    for seed in range(2):
        loop.client.send_apdu(_apdu(700, seed))
    loop.run()
    loop.client.disconnect()
    loop.run()
    return loop


@pytest.mark.parametrize("window", [1, 7])
@pytest.mark.parametrize("direction", ["to-server", "to-client"])
def test_any_single_lost_frame_is_recovered_and_nothing_is_delivered_twice(window: int, direction: str) -> None:
    clean = _lossy(window, set(), set())
    clean_to_server, clean_to_client, clean_transmissions = (
        len(clean.to_server),
        len(clean.to_client),
        len(clean.transmissions),
    )
    requests = [_apdu(700, seed) for seed in range(2)]
    for index in range(clean_to_server if direction == "to-server" else clean_to_client):
        lost = {index}
        loop = _lossy(window, lost if direction == "to-server" else set(), lost if direction == "to-client" else set())
        delivered = [e.apdu for e in loop.server_events if isinstance(e, ApduFromClient)]
        assert delivered == requests, f"frame {index} lost"
        received = [e.apdu for e in loop.client_events if isinstance(e, ApduReceived)]
        assert received == [request[::-1] for request in requests], f"frame {index} lost"
        assert loop.client_events[-1] == LinkDown(LinkDownReason.DISCONNECTED)
        assert loop.client.retries <= 1
        assert len(loop.transmissions) == clean_transmissions + 1  # one loss costs one transmission
        assert loop.server_events[-1] == ClientDisconnected(CLIENT_SAP)


def _sent_again(loop: Loop) -> int:
    """Frames on the line that repeat one sent before: an I-frame's N(S) and data, or a whole transmission."""
    seen: set[tuple[int, bytes]] = set()
    again, previous = 0, b""
    for data in loop.transmissions:
        for frame in HdlcFrameDecoder().feed(data, now=0.0):
            if frame.kind is FrameKind.I:
                again += (frame.send_seq, frame.info) in seen
                seen.add((frame.send_seq, frame.info))
            else:
                again += data == previous
        previous = data
    return again


@pytest.mark.parametrize("window", [1, 7])
@pytest.mark.parametrize("direction", ["to-server", "to-client"])
def test_link_counters_count_frames_and_every_frame_sent_again(window: int, direction: str) -> None:
    clean = _lossy(window, set(), set())
    assert (clean.client.frames_sent, clean.client.frames_received) == (len(clean.to_server), len(clean.to_client))
    assert clean.client.retransmissions == 0
    for index in range(len(clean.to_server if direction == "to-server" else clean.to_client)):
        lost = {index}
        loop = _lossy(window, lost if direction == "to-server" else set(), lost if direction == "to-client" else set())
        client = loop.client
        assert client.frames_sent == len(loop.to_server), f"frame {index} lost"
        assert client.frames_received == len(loop.to_client) - (direction == "to-client"), f"frame {index} lost"
        assert client.retransmissions == _sent_again(loop), f"frame {index} lost"
        assert client.retransmissions >= 1 or direction == "to-client"  # a lost answer may be asked for by RR


@given(
    sizes=st.lists(st.integers(1, 1500), min_size=1, max_size=3),
    max_info=st.sampled_from([32, 128, 500]),
    window=st.integers(1, 7),
    drop_to_server=st.sets(st.integers(0, 120), max_size=12),
    drop_to_client=st.sets(st.integers(0, 120), max_size=12),
)
@settings(max_examples=200, deadline=None)
def test_random_losses_never_lose_duplicate_or_reorder_an_apdu(
    sizes: list[int], max_info: int, window: int, drop_to_server: set[int], drop_to_client: set[int]
) -> None:
    loop = Loop(
        proposed=_parameters(max_info, window),
        supported=_parameters(max_info, window),
        max_retries=30,  # more than the losses: every exchange must get through in the end
        drop_to_server=drop_to_server,
        drop_to_client=drop_to_client,
    )
    requests = [_apdu(size, seed) for seed, size in enumerate(sizes)]
    loop.client.connect()
    for request in requests:
        loop.client.send_apdu(request)
    loop.run()
    loop.client.disconnect()
    loop.run()
    assert [e.apdu for e in loop.server_events if isinstance(e, ApduFromClient)] == requests
    assert [e.apdu for e in loop.client_events if isinstance(e, ApduReceived)] == [r[::-1] for r in requests]
    assert loop.client_events[0] == LinkUp(_parameters(max_info, window))
    assert loop.client_events[-1] == LinkDown(LinkDownReason.DISCONNECTED)


def test_a_retransmission_resends_the_same_bytes() -> None:
    loop = _connected(Loop())
    first_data_frame = len(loop.to_server)
    loop.drop_to_client = {len(loop.to_client)}  # the meter's answer is lost
    loop.client.send_apdu(b"\xc3\x01\xc1\x00\x46")  # an ACTION: must not run twice
    loop.run()
    assert loop.transmissions[-1] == loop.transmissions[-2]
    assert loop.to_server[first_data_frame] == loop.to_server[first_data_frame + 1]
    assert [e for e in loop.server_events if isinstance(e, ApduFromClient)] == [
        ApduFromClient(CLIENT_SAP, b"\xc3\x01\xc1\x00\x46")
    ]
    assert loop.client_events[-1] == ApduReceived(b"\x46\x00\xc1\x01\xc3")
    assert loop.client.retries == 1


@pytest.mark.parametrize("max_retries", [0, 3])
@pytest.mark.parametrize("phase", ["connect", "data"])
def test_silent_meter_means_link_down_after_max_retries_plus_one_sends(max_retries: int, phase: str) -> None:
    loop = Loop(max_retries=max_retries)
    if phase == "data":
        _connected(loop)
        loop.client.send_apdu(b"\xc0\x01")
    else:
        loop.client.connect()
    before = len(loop.transmissions)
    loop.drop_to_server = set(range(len(loop.to_server), 1000))
    loop.run()
    assert loop.client_events[-1] == LinkDown(LinkDownReason.NO_RESPONSE)
    sends = loop.transmissions[before:]
    assert len(sends) == max_retries + 1
    assert len(set(sends)) == 1
    assert loop.client.retries == max_retries
    assert loop.client.state is LinkState.DISCONNECTED
    assert not loop.client.wants_medium
    assert loop.client.deadline is None


def test_dm_to_snrm_is_refused() -> None:
    loop = Loop()
    loop.client.connect()
    loop.client.transmit(now=0.0)
    assert loop.client.receive(_from_meter(0x1F), now=0.1) == [LinkDown(LinkDownReason.REFUSED)]
    assert loop.client.state is LinkState.DISCONNECTED


def _sent_frames(data: bytes) -> list[HdlcFrame]:
    return HdlcFrameDecoder().feed(data, now=0.0)


def test_a_meter_that_refuses_the_proposal_is_asked_again_for_the_defaults_once() -> None:
    # some meters answer DM to an SNRM whose parameters they cannot take, instead of answering their own values
    loop = Loop(proposed=_parameters(2030, 7))
    loop.client.connect()
    (first,) = _sent_frames(loop.client.transmit(now=0.0))
    assert first.kind is FrameKind.SNRM and first.info  # the proposal
    assert loop.client.receive(_from_meter(0x1F), now=0.1) == []  # DM: not refused yet
    assert loop.client.state is LinkState.CONNECTING and loop.client.wants_medium
    (second,) = _sent_frames(loop.client.transmit(now=0.2))
    assert second.kind is FrameKind.SNRM and second.info == b""  # no proposal: IEC 62056-46's defaults
    assert loop.client.requested == HdlcParameters() and loop.client.proposed == _parameters(2030, 7)
    assert loop.client.receive(_from_meter(0x73), now=0.3) == [LinkUp(HdlcParameters())]
    assert loop.client.parameters == HdlcParameters()


def test_a_meter_that_refuses_the_defaults_too_refuses_the_link() -> None:
    loop = Loop(proposed=_parameters(2030, 7))
    loop.client.connect()
    loop.client.transmit(now=0.0)
    assert loop.client.receive(_from_meter(0x1F), now=0.1) == []
    loop.client.transmit(now=0.2)
    assert loop.client.receive(_from_meter(0x1F), now=0.3) == [LinkDown(LinkDownReason.REFUSED)]
    loop.client.connect()  # a new connection proposes again
    (snrm,) = _sent_frames(loop.client.transmit(now=1.0))
    assert snrm.info and loop.client.requested == _parameters(2030, 7)


def test_a_proposal_of_the_defaults_is_an_snrm_without_information_and_a_dm_refuses_it() -> None:
    loop = Loop()
    loop.client.connect()
    (snrm,) = _sent_frames(loop.client.transmit(now=0.0))
    assert snrm.kind is FrameKind.SNRM and snrm.info == b""
    assert loop.client.receive(_from_meter(0x1F), now=0.1) == [LinkDown(LinkDownReason.REFUSED)]


def test_a_ua_beyond_the_defaults_after_a_refusal_is_capped_by_them() -> None:
    loop = Loop(proposed=_parameters(2030, 7))
    loop.client.connect()
    loop.client.transmit(now=0.0)
    loop.client.receive(_from_meter(0x1F), now=0.1)
    loop.client.transmit(now=0.2)
    big_ua = encode_parameters(_parameters(1024, 4))
    assert loop.client.receive(_from_meter(0x73, big_ua), now=0.3) == [LinkUp(HdlcParameters())]


def test_disc_closes_both_ends() -> None:
    loop = _connected(Loop())
    loop.client.disconnect()
    assert loop.client.state is LinkState.DISCONNECTING
    loop.run()
    assert loop.to_server[-1].kind is FrameKind.DISC
    assert loop.to_client[-1].kind is FrameKind.UA
    assert loop.client_events[-1] == LinkDown(LinkDownReason.DISCONNECTED)
    assert loop.server_events[-1] == ClientDisconnected(CLIENT_SAP)
    assert loop.server.connected_clients == []


def test_disc_sends_queued_apdus_first() -> None:
    loop = _connected(Loop())
    loop.client.send_apdu(b"\xc0\x01\x02")
    loop.client.disconnect()
    with pytest.raises(LocalProtocolError):
        loop.client.send_apdu(b"\xc0")
    loop.run()
    assert loop.client_events[1:] == [ApduReceived(b"\x02\x01\xc0"), LinkDown(LinkDownReason.DISCONNECTED)]


def test_disconnect_before_the_link_is_up_drops_the_queue_and_sends_disc() -> None:
    loop = Loop()
    loop.client.connect()
    loop.client.send_apdu(b"\xc0\x01")
    loop.client.disconnect()
    loop.run()
    assert [frame.kind for frame in loop.to_server] == [FrameKind.DISC]
    assert loop.to_client[0].kind is FrameKind.DM  # the meter had no connection with us
    assert loop.client_events == [LinkDown(LinkDownReason.DISCONNECTED)]


def test_meter_that_forgot_us_answers_dm_and_the_link_goes_down() -> None:
    loop = _connected(Loop())
    loop.now += 121.0  # past the meter's inactivity timeout
    loop.client.send_apdu(b"\xc0\x01")
    loop.run()
    assert loop.server_events[-1] == ClientDisconnected(CLIENT_SAP)
    assert loop.to_client[-1].kind is FrameKind.DM
    assert loop.client_events[-1] == LinkDown(LinkDownReason.METER_DISCONNECTED)


@pytest.mark.parametrize(
    ("answer", "down"),
    [
        (_from_meter(0x97), LinkDown(LinkDownReason.FRAME_REJECTED)),
        (_from_meter(0x1F), LinkDown(LinkDownReason.METER_DISCONNECTED)),
        # RR N(R)=2: we sent one frame
        (_from_meter(0x51), LinkDown(LinkDownReason.PROTOCOL_ERROR, "N(R) out of range")),
        # N(S)=2
        (_from_meter(0x54, b"\xe6\xe7\x00\xc4"), LinkDown(LinkDownReason.PROTOCOL_ERROR, "N(S) out of sequence")),
        (_from_meter(0x09), LinkDown(LinkDownReason.PROTOCOL_ERROR, "undefined HDLC control field 0x09")),
    ],
)
def test_protocol_breaches_bring_the_link_down(answer: HdlcFrame, down: LinkDown) -> None:
    loop = _connected(Loop())
    loop.client.send_apdu(b"\xc0\x01")
    loop.client.transmit(now=loop.now)
    assert loop.client.receive(answer, now=loop.now) == [down]
    assert loop.client.state is LinkState.DISCONNECTED


def test_frames_for_another_link_are_ignored() -> None:
    loop = _connected(Loop())
    stranger = HdlcFrame(CLIENT, HdlcAddress.server(logical_device=1, physical_address=18), 0x1F)
    assert loop.client.receive(stranger, now=loop.now) == []
    assert loop.client.state is LinkState.CONNECTED


def test_rnr_backs_off_polls_with_rr_then_resends_the_unacknowledged_frame() -> None:
    loop = _connected(Loop())
    loop.client.send_apdu(b"\xc0\x01")
    first = loop.client.transmit(now=10.0)
    assert loop.client.receive(_from_meter(0x15), now=10.1) == []  # RNR, N(R)=0, F: busy
    assert not loop.client.awaiting_response
    assert not loop.client.wants_medium
    assert loop.client.deadline == 11.1
    assert loop.client.expire(now=11.1) == []
    poll = HdlcFrameDecoder().feed(loop.client.transmit(now=11.2), now=11.2)
    assert [(f.kind, f.recv_seq, f.poll_final) for f in poll] == [(FrameKind.RR, 0, True)]
    assert loop.client.receive(_from_meter(0x11), now=11.3) == []  # RR, N(R)=0: ready, frame not taken
    assert loop.client.transmit(now=11.4) == first
    answer = encode_frame(_from_meter(0x30, b"\xe6\xe7\x00\xc4\x01"))  # I, N(R)=1, N(S)=0, F
    frames = HdlcFrameDecoder().feed(answer, now=11.5)
    assert loop.client.receive(frames[0], now=11.5) == [ApduReceived(b"\xc4\x01")]


def test_a_meter_busy_for_ever_brings_the_link_down() -> None:
    loop = _connected(Loop())
    loop.client.send_apdu(b"\xc0\x01")
    events = []
    for attempt in range(4):
        loop.client.transmit(now=float(attempt))
        events = loop.client.receive(_from_meter(0x15), now=attempt + 0.1)
        loop.client.expire(now=attempt + 1.1)
    assert events == [LinkDown(LinkDownReason.METER_BUSY)]


def test_ui_push_is_delivered_without_disturbing_the_link() -> None:
    loop = _connected(Loop())
    push = loop.server.send_ui(client_sap=CLIENT_SAP, apdu=b"\x0f\x00\x00\x00\x01")
    frames = HdlcFrameDecoder().feed(push, now=loop.now)
    assert frames[0].kind is FrameKind.UI
    assert loop.client.receive(frames[0], now=loop.now) == [ApduReceived(b"\x0f\x00\x00\x00\x01")]
    assert loop.client.state is LinkState.CONNECTED
    assert not loop.client.wants_medium


def test_local_misuse_is_refused() -> None:
    loop = Loop()
    with pytest.raises(LocalProtocolError):
        loop.client.send_apdu(b"\xc0")
    with pytest.raises(LocalProtocolError):
        loop.client.transmit(now=0.0)
    loop.client.connect()
    with pytest.raises(LocalProtocolError):
        loop.client.connect()
    with pytest.raises(LocalProtocolError):
        loop.client.send_apdu(b"")
    with pytest.raises(LocalProtocolError):
        loop.server.send_apdu(client_sap=CLIENT_SAP, apdu=b"\xc4")


def _server_with_client() -> tuple[HdlcServerLink, HdlcFrameDecoder]:
    server = HdlcServerLink(server_address=METER, settings=ServerSettings())
    assert server.receive(HdlcFrame(METER, CLIENT, 0x93), now=0.0) == [ClientConnected(CLIENT_SAP)]
    server.respond(now=0.0)
    return server, HdlcFrameDecoder()


def test_server_does_not_deliver_a_retransmitted_i_frame_twice_and_resends_its_answer() -> None:
    server, line = _server_with_client()
    action = HdlcFrame(METER, CLIENT, 0x10, b"\xe6\xe6\x00\xc3\x01\xc1")  # I, N(S)=0, N(R)=0, P
    assert server.receive(action, now=1.0) == [ApduFromClient(CLIENT_SAP, b"\xc3\x01\xc1")]
    server.send_apdu(client_sap=CLIENT_SAP, apdu=b"\xc7\x01\xc1\x00")
    answer = server.respond(now=1.0)
    assert [(f.kind, f.send_seq, f.recv_seq, f.info) for f in line.feed(b"".join(answer), now=1.0)] == [
        (FrameKind.I, 0, 1, b"\xe6\xe7\x00\xc7\x01\xc1\x00")
    ]
    assert server.receive(action, now=2.0) == []  # our answer was lost; the client tries again
    assert server.respond(now=2.0) == answer


def test_server_answers_only_when_polled_and_rr_when_it_has_nothing() -> None:
    server, line = _server_with_client()
    assert server.receive(HdlcFrame(METER, CLIENT, 0x00, b"\xe6\xe6\x00\xc0", segmented=True), now=1.0) == []
    assert server.respond(now=1.0) == []  # no P bit: a secondary stays silent
    assert server.receive(HdlcFrame(METER, CLIENT, 0x12, b"\x01"), now=1.0) == [  # N(S)=1, P
        ApduFromClient(CLIENT_SAP, b"\xc0\x01")
    ]
    frames = line.feed(b"".join(server.respond(now=1.0)), now=1.0)
    assert [(f.kind, f.recv_seq, f.poll_final) for f in frames] == [(FrameKind.RR, 2, True)]


def test_server_ignores_other_addresses_and_answers_dm_to_strangers() -> None:
    server, line = _server_with_client()
    other_meter = HdlcAddress.server(logical_device=1, physical_address=18)
    assert server.receive(HdlcFrame(other_meter, CLIENT, 0x10, b"\xe6\xe6\x00\xc0"), now=1.0) == []
    assert server.respond(now=1.0) == []
    stranger = HdlcAddress.client(1)
    assert server.receive(HdlcFrame(METER, stranger, 0x10, b"\xe6\xe6\x00\xc0"), now=1.0) == []
    frames = line.feed(b"".join(server.respond(now=1.0)), now=1.0)
    assert [(f.kind, f.destination) for f in frames] == [(FrameKind.DM, stranger)]
    assert server.receive(HdlcFrame(METER, stranger, 0x19), now=1.0) == []  # REJ: undefined in DLMS
    assert [f.kind for f in line.feed(b"".join(server.respond(now=1.0)), now=1.0)] == [FrameKind.DM]
    assert server.receive(HdlcFrame(METER, CLIENT, 0x19), now=1.0) == [ClientDisconnected(CLIENT_SAP)]
    assert [f.kind for f in line.feed(b"".join(server.respond(now=1.0)), now=1.0)] == [FrameKind.FRMR]


def test_snrm_while_connected_resets_the_connection() -> None:
    server, line = _server_with_client()
    server.receive(HdlcFrame(METER, CLIENT, 0x10, b"\xe6\xe6\x00\xc0"), now=1.0)  # V(R) becomes 1
    server.respond(now=1.0)
    assert server.receive(HdlcFrame(METER, CLIENT, 0x93), now=2.0) == [ClientConnected(CLIENT_SAP)]
    assert line.feed(b"".join(server.respond(now=2.0)), now=2.0)[-1].kind is FrameKind.UA
    # sequence numbers start again at 0: N(S)=0 is new data, not a duplicate
    assert server.receive(HdlcFrame(METER, CLIENT, 0x10, b"\xe6\xe6\x00\xc1"), now=3.0) == [
        ApduFromClient(CLIENT_SAP, b"\xc1")
    ]
