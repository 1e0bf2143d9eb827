"""pcapng files that Wireshark's DLMS/COSEM dissector reads: every leg as UDP port 4059 datagrams.

Theory of operation. Wireshark (4.6 and later) hands UDP and TCP port 4059 payloads to its
DLMS/COSEM dissector, which tells an HDLC frame (first byte 7E) from a wrapper PDU (00 01) by
itself. So each captured unit becomes one raw IP packet (LINKTYPE_RAW) carrying one UDP datagram
to or from port 4059: a HES's wrapper PDU between the HES's own address and the gateway's, an
HDLC frame between two link-local stand-in addresses for the gateway and the line. One interface
description block per leg names it ("wan", "line bus0", ...); an enhanced packet block per unit
keeps the time to the microsecond, the direction (epb_flags) and a comment for what Wireshark
cannot see (a bad FCS, a retransmission).

    SHB | IDB(leg 0) | IDB(leg 1) | ... | EPB(leg, time, packet) | EPB ...   (an IDB may follow EPBs)
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import Enum

DLMS_PORT = 4059  # IEC 62056-4-7 wrapper, IANA; Wireshark dissects it as DLMS/COSEM
LINKTYPE_RAW = 101  # raw IPv4 or IPv6, no link-layer header
MAX_PAYLOAD = 65535 - 8 - 40  # what one UDP datagram in IPv6 carries; longer units are cut and marked

_SHB = 0x0A0D0D0A
_IDB = 0x00000001
_EPB = 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END, _OPT_COMMENT = 0, 1
_IF_NAME, _IF_DESCRIPTION, _IF_TSRESOL = 2, 3, 9
_EPB_FLAGS = 2
_SHB_USERAPPL = 4


class Direction(Enum):
    """As seen by the gateway (epb_flags bits 0-1: 1 inbound, 2 outbound)."""

    INBOUND = 1
    OUTBOUND = 2


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The two IP addresses a leg's packets go between: the gateway's, and its peer's, with the peer's port."""

    gateway: str
    peer: str
    peer_port: int = DLMS_PORT


def _pad(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def _options(options: list[bytes]) -> bytes:
    return b"".join(options) + struct.pack("<HH", _OPT_END, 0) if options else b""


def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


def section_header(*, application: str) -> bytes:
    """The file's first block: little-endian, version 1.0, section length unknown."""
    body = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)
    return _block(_SHB, body + _options([_option(_SHB_USERAPPL, application.encode())]))


def interface(*, name: str, description: str, snaplen: int = 0) -> bytes:
    """One leg: raw IP packets, timestamps in microseconds (the default resolution, stated anyway)."""
    body = struct.pack("<HHI", LINKTYPE_RAW, 0, snaplen)
    return _block(_IDB, body + _options([_option(_IF_NAME, name.encode()),
                                         _option(_IF_DESCRIPTION, description.encode()),
                                         _option(_IF_TSRESOL, b"\x06")]))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_packet(*, source: str, destination: str, source_port: int, destination_port: int, payload: bytes) -> bytes:
    """An IPv4 or IPv6 packet holding one UDP datagram, checksums filled in."""
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    if src.version != dst.version:
        raise ValueError(f"{source} and {destination} are not of one IP version")
    udp_length = 8 + len(payload)
    if src.version == 4:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_length, 0, 0x4000, 64, 17, 0, src.packed, dst.packed)
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 17, udp_length)
    else:
        header = struct.pack("!IHBB16s16s", 6 << 28, udp_length, 17, 64, src.packed, dst.packed)
        pseudo = src.packed + dst.packed + struct.pack("!IxxxB", udp_length, 17)
    udp = struct.pack("!HHHH", source_port, destination_port, udp_length, 0)
    checksum = _checksum(pseudo + udp + payload) or 0xFFFF
    return header + udp[:6] + struct.pack("!H", checksum) + payload


def packet(*, interface_id: int, timestamp: float, endpoints: Endpoints, direction: Direction, payload: bytes,
           comment: str | None = None) -> bytes:
    """One captured unit as an enhanced packet block: inbound goes peer -> gateway, outbound the other way."""
    notes = [comment] if comment else []
    if len(payload) > MAX_PAYLOAD:
        notes.append(f"cut from {len(payload)} bytes")
        payload = payload[:MAX_PAYLOAD]
    ends = (endpoints.peer, endpoints.gateway, endpoints.peer_port, DLMS_PORT)
    if direction is Direction.OUTBOUND:
        ends = (endpoints.gateway, endpoints.peer, DLMS_PORT, endpoints.peer_port)
    data = udp_packet(source=ends[0], destination=ends[1], source_port=ends[2], destination_port=ends[3],
                      payload=payload)
    micros = round(timestamp * 1_000_000)
    body = struct.pack("<IIIII", interface_id, micros >> 32, micros & 0xFFFFFFFF, len(data), len(data)) + _pad(data)
    options = [_option(_EPB_FLAGS, struct.pack("<I", direction.value))]
    options += [_option(_OPT_COMMENT, note.encode()) for note in notes]
    return _block(_EPB, body + _options(options))
