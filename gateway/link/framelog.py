"""HDLC frames for the debug log, with anything that may carry a secret left out.

An AARQ can hold an LLS password or an HLS challenge, an ACTION the HLS reply, a SET a new key;
ciphered APDUs are opaque anyway. So only plain GET requests and responses are shown in hex;
every other information field is logged as its tag and size.
"""

from __future__ import annotations

from typing import Any

from gateway.codec.hdlc import HdlcFrame, HdlcFrameDecoder, llc_payload

SHOWN_TAGS = frozenset({0xC0, 0xC4})  # get-request, get-response: no secrets in plain GETs


def describe(frame: HdlcFrame) -> dict[str, Any]:
    """A frame as log fields: kind, addresses, control, and the information field when it is safe."""
    kind = frame.defined_kind
    fields: dict[str, Any] = {
        "kind": kind.value if kind is not None else "undefined", "control": f"{frame.control:02X}",
        "segmented": frame.segmented,
        "dst": f"{frame.destination.upper}/{frame.destination.lower}",
        "src": f"{frame.source.upper}/{frame.source.lower}",
    }
    info = frame.info
    if not info:
        return fields
    apdu = llc_payload(info)
    if apdu and apdu[0] in SHOWN_TAGS:
        fields["info"] = info.hex(" ")
    else:
        tag = f"{apdu[0]:02X}" if apdu else "segment"
        fields["info"] = f"<{tag}, {len(info)} bytes not shown>"
    return fields


def describe_bytes(data: bytes) -> list[dict[str, Any]]:
    """Frames we are about to send, decoded again for the log (debug level only)."""
    return [describe(frame) for frame in HdlcFrameDecoder().feed(data, now=0.0)]
