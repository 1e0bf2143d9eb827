"""Per-meter link statistics from the HDLC layer's own counters: frames, frames sent again, bad FCS.

A data link counts what crossed it (``HdlcClientLink``); a frame with a bad FCS reaches no link, so
the line's decoder keeps those by meter address, and they are attributed here to whichever meter
is registered at that address on the line.
"""

from __future__ import annotations

from typing import Protocol

from gateway.codec.hdlc import HdlcClientLink, HdlcFrameDecoder
from gateway.registry.store import Meter


class TrafficBook(Protocol):
    """Where per-meter counters go (the meter registry)."""

    def by_place(self, *, link: str, physical_address: int, logical_device: int = 1) -> Meter | None: ...

    def count_traffic(self, sap: int, *, rtt_ms: float | None = None, frames: int = 0, retries: int = 0,
                      crc_errors: int = 0) -> None: ...


def count_link(book: TrafficBook, *, sap: int, link: HdlcClientLink) -> None:
    """Add what one data link carried, once, when it is done."""
    book.count_traffic(sap, frames=link.frames_sent + link.frames_received, retries=link.retransmissions)


def attribute_bad_frames(book: TrafficBook, *, line_name: str, decoder: HdlcFrameDecoder) -> int:
    """Move the decoder's bad-FCS counts to the meters at those addresses; how many were attributed."""
    attributed = 0
    for (logical_device, physical_address), count in decoder.take_bad_fcs().items():
        if physical_address is None:
            continue
        meter = book.by_place(link=line_name, physical_address=physical_address, logical_device=logical_device)
        if meter is not None:
            book.count_traffic(meter.sap, crc_errors=count)
            attributed += count
    return attributed
