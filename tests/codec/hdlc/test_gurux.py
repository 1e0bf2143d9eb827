"""gurux_dlms (GPL, tests only) as an outside head-end: its frames against our decoder and server."""

from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData
from gurux_dlms.enums import Authentication, Conformance, InterfaceType

from gateway.codec.hdlc import (
    ApduFromClient,
    ClientConnected,
    ClientDisconnected,
    FrameKind,
    HdlcAddress,
    HdlcFrame,
    HdlcFrameDecoder,
    HdlcParameters,
    HdlcServerLink,
    ServerSettings,
    decode_parameters,
)
from tests.codec.hdlc.vectors import GURUX_AARQ

SERVER_1 = HdlcAddress(upper=1, lower=None, size=1)
AARE = bytes.fromhex(  # an AARE accepting a public LN association, from a public capture
    "61 29 A1 09 06 07 60 85 74 05 08 01 01 A2 03 02 01 00 A3 05 A1 03 02 01 00"
    " BE 10 04 0E 08 00 06 5F 1F 04 00 00 10 10 04 00 00 07"
)


def _gurux_client(server_address: int = 1) -> GXDLMSClient:
    client = GXDLMSClient(True, 16, server_address, Authentication.NONE, None, InterfaceType.HDLC)
    client.proposedConformance = Conformance(0x007E1F)  # puts 7E inside the AARQ
    return client


def _one_frame(data: bytes) -> HdlcFrame:
    frames = HdlcFrameDecoder().feed(data, now=0.0)
    assert len(frames) == 1
    return frames[0]


def test_gurux_snrm_decodes_with_its_parameters() -> None:
    client = _gurux_client(GXDLMSClient.getServerAddress(1, 300))
    client.hdlcSettings.maxInfoTX = 2030
    client.hdlcSettings.maxInfoRX = 512
    client.hdlcSettings.windowSizeTX = 7
    client.hdlcSettings.windowSizeRX = 3
    snrm = _one_frame(client.snrmRequest())
    assert (snrm.kind, snrm.poll_final) == (FrameKind.SNRM, True)
    assert snrm.destination == HdlcAddress.server(logical_device=1, physical_address=300)
    assert snrm.source == HdlcAddress.client(16)
    assert decode_parameters(snrm.info) == HdlcParameters(max_info_tx=2030, max_info_rx=512, window_tx=7, window_rx=3)


def _connect(client: GXDLMSClient, server: HdlcServerLink, line: HdlcFrameDecoder) -> None:
    (snrm,) = line.feed(client.snrmRequest(), now=0.0)
    assert server.receive(snrm, now=0.0) == [ClientConnected(16)]
    reply = GXReplyData()
    client.getData(GXByteBuffer(b"".join(server.respond(now=0.0))), reply)
    client.parseUAResponse(reply.data)


def test_gurux_accepts_our_ua_and_reads_the_parameters_the_right_way_round() -> None:
    client = _gurux_client()
    client.hdlcSettings.maxInfoTX = 1000
    client.hdlcSettings.maxInfoRX = 300
    supported = HdlcParameters(max_info_tx=2030, max_info_rx=500, window_tx=1, window_rx=1)
    server = HdlcServerLink(server_address=SERVER_1, settings=ServerSettings(supported=supported))
    _connect(client, server, HdlcFrameDecoder())
    # gurux may send what we receive (min(1000, 500)) and receives what we send (min(2030, 300))
    assert (client.hdlcSettings.maxInfoTX, client.hdlcSettings.maxInfoRX) == (500, 300)
    assert (client.hdlcSettings.windowSizeTX, client.hdlcSettings.windowSizeRX) == (1, 1)


def test_gurux_segmented_aarq_is_reassembled_and_our_aare_accepted() -> None:
    client = _gurux_client()
    supported = HdlcParameters(max_info_tx=2030, max_info_rx=32, window_tx=1, window_rx=1)
    server = HdlcServerLink(server_address=SERVER_1, settings=ServerSettings(supported=supported))
    line = HdlcFrameDecoder()
    _connect(client, server, line)
    aarq_frames = client.aarqRequest()
    assert len(aarq_frames) == 2  # our UA told gurux to send at most 32 bytes per frame
    events = []
    answers: list[bytes] = []
    for data in aarq_frames:
        for frame in line.feed(data, now=1.0):
            events += server.receive(frame, now=1.0)
            if events and isinstance(events[-1], ApduFromClient):
                server.send_apdu(client_sap=16, apdu=AARE)
            answers += server.respond(now=1.0)
    assert events == [ApduFromClient(16, GURUX_AARQ[3:])]
    assert [_one_frame(answer).kind for answer in answers] == [FrameKind.RR, FrameKind.I]
    reply = GXReplyData()
    for answer in answers:  # as a gurux application reads the RR, then the AARE
        client.getData(GXByteBuffer(answer), reply)
    assert bytes(reply.data.array()) == AARE  # gurux stripped our LLC header and took our N(S)/N(R)
    client.parseAareResponse(reply.data)


def test_gurux_disc_closes_our_connection() -> None:
    client = _gurux_client()
    server = HdlcServerLink(server_address=SERVER_1, settings=ServerSettings())
    line = HdlcFrameDecoder()
    _connect(client, server, line)
    (disc,) = line.feed(client.disconnectRequest(), now=2.0)
    assert server.receive(disc, now=2.0) == [ClientDisconnected(16)]
    (ua,) = server.respond(now=2.0)
    assert _one_frame(ua).kind is FrameKind.UA
    client.getData(GXByteBuffer(ua), GXReplyData())
