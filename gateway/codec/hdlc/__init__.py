"""HDLC (IEC 62056-46), pure and sans-IO: frames, addresses, parameters, client and server links."""

from gateway.codec.hdlc.address import HdlcAddress, client_sap_fits, decode_address, meter_address_problem
from gateway.codec.hdlc.broadcast import broadcast_apdu, encode_broadcast
from gateway.codec.hdlc.client import (
    ApduReceived,
    HdlcClientLink,
    LinkDown,
    LinkDownReason,
    LinkEvent,
    LinkSettings,
    LinkState,
    LinkUp,
)
from gateway.codec.hdlc.control import FrameKind
from gateway.codec.hdlc.crc import crc16_x25
from gateway.codec.hdlc.frame import HdlcError, HdlcFrame, HdlcFrameDecoder, encode_frame
from gateway.codec.hdlc.params import HdlcParameters, decode_parameters, encode_parameters, negotiate
from gateway.codec.hdlc.server import (
    ApduFromClient,
    ClientConnected,
    ClientDisconnected,
    HdlcServerLink,
    ServerEvent,
    ServerSettings,
)
from gateway.codec.hdlc.window import llc_payload

__all__ = [
    "ApduFromClient",
    "ApduReceived",
    "ClientConnected",
    "ClientDisconnected",
    "FrameKind",
    "HdlcAddress",
    "HdlcClientLink",
    "HdlcError",
    "HdlcFrame",
    "HdlcFrameDecoder",
    "HdlcParameters",
    "HdlcServerLink",
    "LinkDown",
    "LinkDownReason",
    "LinkEvent",
    "LinkSettings",
    "LinkState",
    "LinkUp",
    "ServerEvent",
    "ServerSettings",
    "broadcast_apdu",
    "client_sap_fits",
    "crc16_x25",
    "decode_address",
    "decode_parameters",
    "encode_broadcast",
    "encode_frame",
    "encode_parameters",
    "llc_payload",
    "meter_address_problem",
    "negotiate",
]
