"""Broadcast APDUs on an HDLC line (IEC 62056-46): one UI frame to the all-station address.

    7E | A0 len | dest = upper(LD or all-station) lower(all-station) | src = client SAP | 03 | HCS
       | E6 E6 00 | APDU | FCS | 7E

Nobody answers a broadcast, so the P bit is clear (UI 0x03, not 0x13), and the frame is not
segmented: one APDU fits one information field of at most the default (non-negotiated)
length, since no station negotiated anything with the sender.
"""

from __future__ import annotations

from gateway.codec.errors import LocalProtocolError
from gateway.codec.hdlc.address import HdlcAddress
from gateway.codec.hdlc.control import FrameKind, frame_kind, u_control
from gateway.codec.hdlc.frame import HdlcFrame, encode_frame
from gateway.codec.hdlc.params import DEFAULT_MAX_INFO
from gateway.codec.hdlc.window import LLC_REQUEST


def encode_broadcast(
    *, client_sap: int, apdu: bytes, logical_device: int | None = None, size: int = 2, max_info: int = DEFAULT_MAX_INFO
) -> bytes:
    """One UI frame carrying ``apdu`` to every station (of ``logical_device``, or all of them)."""
    info = LLC_REQUEST + apdu
    if not apdu or len(info) > max_info:
        raise LocalProtocolError(f"broadcast information field of {len(info)} octets, at most {max_info}")
    destination = HdlcAddress.all_station(logical_device=logical_device, size=size)
    control = u_control(FrameKind.UI, poll=False)
    return encode_frame(HdlcFrame(destination, HdlcAddress.client(client_sap), control, info))


def broadcast_apdu(frame: HdlcFrame) -> bytes | None:
    """The APDU of a UI frame to all stations (request LLC header removed); None for any other frame."""
    if not frame.destination.is_all_station or frame.source.size != 1 or frame_kind(frame.control) is not FrameKind.UI:
        return None
    if not frame.info.startswith(LLC_REQUEST) or len(frame.info) == len(LLC_REQUEST) or frame.segmented:
        return None
    return frame.info[len(LLC_REQUEST) :]
