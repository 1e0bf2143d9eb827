"""IEC 62056-4-7 wrapper over UDP: one datagram carries exactly one wrapper PDU, and a meter push.

    +--------------------- one UDP datagram (port 4059) ---------------------+
    | version=1 | source wPort | destination wPort | length | APDU (length)  |
    +------------------------------------------------------------------------+

A datagram whose length field does not match its size, or that holds two PDUs, is refused:
on UDP there is no stream to resynchronise on, so nothing is buffered between datagrams.
"""

from __future__ import annotations

from gateway.codec.apdu import PUSH_TAGS
from gateway.codec.wrapper import HEADER, MAX_APDU, WrapperDecoder, WrapperError, WrapperPdu


def decode_datagram(data: bytes, *, max_apdu: int = MAX_APDU) -> WrapperPdu:
    """The one wrapper PDU of a UDP datagram. Raises WrapperError."""
    if len(data) < HEADER.size:
        raise WrapperError(f"datagram of {len(data)} bytes is shorter than a wrapper header")
    decoder = WrapperDecoder(max_apdu=max_apdu)
    pdus = decoder.feed(data)
    if len(pdus) != 1 or decoder.buffered:
        _, _, _, length = HEADER.unpack_from(data)
        raise WrapperError(f"wrapper length {length} does not match a datagram of {len(data)} bytes")
    return pdus[0]


def may_be_push(apdu: bytes) -> bool:
    """True when the APDU's tag is one a meter may push unsolicited (plain or ciphered: routed on the tag)."""
    return bool(apdu) and apdu[0] in PUSH_TAGS
