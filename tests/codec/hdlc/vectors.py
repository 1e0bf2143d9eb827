"""HDLC byte vectors captured from meters, public logs and gurux_dlms; each with what it must decode to."""

from dataclasses import dataclass

from gateway.codec.hdlc import HdlcAddress, HdlcFrame


@dataclass(frozen=True)
class Vector:
    """A frame as captured on the line and the frame it decodes to."""

    name: str
    wire: bytes
    frame: HdlcFrame


CLIENT_16 = HdlcAddress.client(16)
CLIENT_1 = HdlcAddress.client(1)
SERVER_1 = HdlcAddress(upper=1, lower=None, size=1)
DEFAULT_PARAMETERS = bytes.fromhex("81 80 12 05 01 80 06 01 80 07 04 00 00 00 01 08 04 00 00 00 01")
AARQ_WITH_FLAG_BYTE = bytes.fromhex(  # LLC + AARQ whose conformance block holds 7E 1F
    "E6 E6 00 60 36 A1 09 06 07 60 85 74 05 08 01 01 8A 02 07 80 8B 07 60 85 74 05 08 02 01 AC 0A"
    " 80 08 78 52 77 50 62 45 78 46 BE 10 04 0E 01 00 00 00 06 5F 1F 04 00 00 7E 1F 01 00"
)
GURUX_AARQ = bytes.fromhex(  # gurux_dlms 1.0.203 aarqRequest(), proposed conformance 0x007E1F
    "e6 e6 00 60 1d a1 09 06 07 60 85 74 05 08 01 01 be 10 04 0e 01 00 00 00 06 5f 1f 04 00 f8 7e 00 ff ff"
)

VECTORS = [
    Vector(  # IEC 62056-46 example, also what gurux_dlms sends with default parameters
        "snrm-one-byte-server",
        bytes.fromhex("7E A0 07 03 21 93 0F 01 7E"),
        HdlcFrame(SERVER_1, CLIENT_16, 0x93),
    ),
    Vector(  # a meter's UA with the default parameters, from a public capture
        "ua-default-parameters",
        bytes.fromhex("7E A0 1E 03 03 73 40 CC") + DEFAULT_PARAMETERS + bytes.fromhex("53 3B 7E"),
        HdlcFrame(CLIENT_1, SERVER_1, 0x73, DEFAULT_PARAMETERS),
    ),
    Vector(  # UA from a 4-byte server address (logical 1, physical 5185), public capture
        "ua-four-byte-server",
        bytes.fromhex("7E A0 21 03 00 02 50 83 73 67 53") + DEFAULT_PARAMETERS + bytes.fromhex("53 3B 7E"),
        HdlcFrame(CLIENT_1, HdlcAddress.server(logical_device=1, physical_address=5185), 0x73, DEFAULT_PARAMETERS),
    ),
    Vector(  # SNRM proposing 128/1 with 2-byte values, public capture
        "snrm-two-byte-values",
        bytes.fromhex(
            "7E A0 20 03 03 93 FE C9 81 80 14 05 02 00 80 06 02 00 80 07 04 00 00 00 01 08 04 00 00 00 01 CE 6A 7E"
        ),
        HdlcFrame(
            SERVER_1,
            CLIENT_1,
            0x93,
            bytes.fromhex("81 80 14 05 02 00 80 06 02 00 80 07 04 00 00 00 01 08 04 00 00 00 01"),
        ),
    ),
    Vector(  # AARQ I-frame with 7E inside the information field, public capture
        "aarq-flag-byte-inside",
        bytes.fromhex("7E A0 44 03 03 10 65 94") + AARQ_WITH_FLAG_BYTE + bytes.fromhex("AF DF 7E"),
        HdlcFrame(SERVER_1, CLIENT_1, 0x10, AARQ_WITH_FLAG_BYTE),
    ),
    Vector(  # gurux_dlms AARQ to logical 1, physical 17 (2-byte server address)
        "aarq-two-byte-server",
        bytes.fromhex("7e a0 2c 02 23 21 10 af 9f") + GURUX_AARQ + bytes.fromhex("4d c2 7e"),
        HdlcFrame(HdlcAddress.server(logical_device=1, physical_address=17), CLIENT_16, 0x10, GURUX_AARQ),
    ),
    Vector(  # gurux_dlms AARQ to logical 1, physical 300 (4-byte server address)
        "aarq-four-byte-server",
        bytes.fromhex("7e a0 2e 00 02 04 59 21 10 30 4a") + GURUX_AARQ + bytes.fromhex("4d c2 7e"),
        HdlcFrame(HdlcAddress.server(logical_device=1, physical_address=300), CLIENT_16, 0x10, GURUX_AARQ),
    ),
    Vector(  # gurux_dlms AARQ split at max_info 32: first segment (S bit), 7E inside its HCS
        "aarq-first-segment",
        bytes.fromhex("7e a8 26 03 21 10 54 7e") + GURUX_AARQ[:29] + bytes.fromhex("61 86 7e"),
        HdlcFrame(SERVER_1, CLIENT_16, 0x10, GURUX_AARQ[:29], segmented=True),
    ),
    Vector(  # ... and its last segment, N(S)=1
        "aarq-last-segment",
        bytes.fromhex("7e a0 0e 03 21 12 ed 6d") + GURUX_AARQ[29:] + bytes.fromhex("49 4d 7e"),
        HdlcFrame(SERVER_1, CLIENT_16, 0x12, GURUX_AARQ[29:]),
    ),
    Vector(  # an AARE I-frame (N(R)=1, N(S)=0, F) from logical 1, physical 32, public capture
        "aare-response",
        bytes.fromhex(
            "7E A0 38 21 02 41 30 D1 B1 E6 E7 00 61 29 A1 09 06 07 60 85 74 05 08 01 01 A2 03 02 01 00 A3"
            " 05 A1 03 02 01 00 BE 10 04 0E 08 00 06 5F 1F 04 00 00 10 10 04 00 00 07 36 E3 7E"
        ),
        HdlcFrame(
            CLIENT_16,
            HdlcAddress.server(logical_device=1, physical_address=32),
            0x30,
            bytes.fromhex(
                "E6 E7 00 61 29 A1 09 06 07 60 85 74 05 08 01 01 A2 03 02 01 00 A3 05 A1 03 02 01 00"
                " BE 10 04 0E 08 00 06 5F 1F 04 00 00 10 10 04 00 00 07"
            ),
        ),
    ),
    Vector(  # DM from logical 0, physical 32, public capture
        "dm",
        bytes.fromhex("7E A0 08 21 00 41 1F 4D 09 7E"),
        HdlcFrame(CLIENT_16, HdlcAddress.server(logical_device=0, physical_address=32), 0x1F),
    ),
    Vector(  # gurux_dlms disconnectRequest()
        "disc",
        bytes.fromhex("7e a0 07 03 21 53 03 c7 7e"),
        HdlcFrame(SERVER_1, CLIENT_16, 0x53),
    ),
]
