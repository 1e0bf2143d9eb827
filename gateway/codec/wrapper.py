"""IEC 62056-4-7 wrapper, the DLMS transport over TCP and UDP (port 4059).

    +---------+---------------+--------------------+---------+------------------+
    | version | source wPort  | destination wPort  | length  |  APDU (length)   |
    | uint16  |    uint16     |       uint16       | uint16  |                  |
    +---------+---------------+--------------------+---------+------------------+
      = 0x0001  client SAP (HES->GW)   server SAP     APDU only, big-endian

The decoder is incremental: feed it any chunking of the TCP stream and it hands back whole
PDUs. It holds at most one header plus ``max_apdu`` bytes, whatever the peer sends.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from gateway.codec.errors import LocalProtocolError, RemoteProtocolError

WRAPPER_VERSION = 1  # IEC 62056-4-7, 5.3: version is fixed at 0x0001
WRAPPER_PORT = 4059  # IANA "dlms/cosem"
ALL_STATION_WPORT = 0x7F  # Green Book, reserved wPorts: all-station (broadcast) on the server side
HEADER = struct.Struct(">HHHH")  # version, source wPort, destination wPort, length
MAX_APDU = 0xFFFF  # the length field is 16 bits


class WrapperError(RemoteProtocolError):
    """The peer sent a wrapper header we cannot accept."""


class WrapperPdu(NamedTuple):
    """One wrapper PDU (immutable; a named tuple: two per relayed exchange, built in a third of the time)."""

    source: int
    destination: int
    apdu: bytes

    def reply(self, apdu: bytes) -> WrapperPdu:
        """The answer to this PDU: same ports, swapped."""
        return WrapperPdu(source=self.destination, destination=self.source, apdu=apdu)


def encode(pdu: WrapperPdu) -> bytes:
    """One wrapper PDU as bytes for the wire."""
    if not (0 <= pdu.source <= 0xFFFF and 0 <= pdu.destination <= 0xFFFF):
        raise LocalProtocolError(f"wPort out of range: {pdu.source}, {pdu.destination}")
    if len(pdu.apdu) > MAX_APDU:
        raise LocalProtocolError(f"APDU of {len(pdu.apdu)} bytes does not fit a wrapper PDU")
    return HEADER.pack(WRAPPER_VERSION, pdu.source, pdu.destination, len(pdu.apdu)) + pdu.apdu


class WrapperDecoder:
    """Incremental: feed any chunking of the stream, get whole PDUs back."""

    def __init__(self, *, max_apdu: int = MAX_APDU) -> None:
        if not 1 <= max_apdu <= MAX_APDU:
            raise LocalProtocolError(f"max_apdu must be 1..{MAX_APDU}")
        self._max_apdu = max_apdu
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a PDU."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[WrapperPdu]:
        """Add bytes from the stream; return every PDU they complete. Raises WrapperError."""
        buffer = self._buffer
        if buffer:
            buffer += data
            stream: bytes | bytearray = buffer
        else:  # the usual read starts a PDU: decoded from the bytes as they came, only a tail is kept
            stream = data
        pdus: list[WrapperPdu] = []
        offset = 0
        size = len(stream)
        while size - offset >= HEADER.size:
            version, source, destination, length = HEADER.unpack_from(stream, offset)
            if version != WRAPPER_VERSION:
                raise WrapperError(f"wrapper version {version}, expected {WRAPPER_VERSION}")
            if length > self._max_apdu:
                raise WrapperError(f"wrapper length {length} exceeds the limit of {self._max_apdu}")
            end = offset + HEADER.size + length
            if end > size:
                break
            pdus.append(WrapperPdu(source, destination, bytes(stream[offset + HEADER.size : end])))
            offset = end
        if stream is buffer:
            del buffer[:offset]
        else:
            buffer += data[offset:]
        return pdus
