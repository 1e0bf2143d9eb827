"""Copies of what crosses each leg, for whoever is capturing; one boolean test when nobody is.

The WAN connections and the meter lines call ``wan()`` / ``hdlc()`` only while ``active`` is
true. Each running capture has its own filter and a bounded queue: a capture that cannot keep up
loses its oldest units (counted, and said in the file), never the relay's time or memory.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.capture.pcapng import Direction

MAX_QUEUED = 20_000  # units one capture may hold before the oldest are dropped
MAX_REMEMBERED_TX = 1024  # last frame sent per meter address, to mark retransmissions


@dataclass(frozen=True, slots=True)
class CapturedUnit:
    """One wrapper PDU or one HDLC frame, as it crossed its leg."""

    timestamp: float
    leg: str  # "wan", or "line NAME"
    direction: Direction
    data: bytes
    peer: str = ""  # the HES address and port on the WAN leg
    local: str = ""  # the gateway's address and port on the WAN leg
    note: str = ""  # what the bytes cannot say: "bad FCS", "retransmission"


@dataclass(frozen=True, slots=True)
class CaptureFilter:
    """Which units one capture wants: a line, a meter (SAP, with its place on its line), or all."""

    line: str | None = None
    sap: int | None = None
    place: tuple[str, int, int] | None = None  # (line, logical device, physical address) of that SAP

    def wants_wan(self, *, server_sap: int) -> bool:
        if self.sap is not None:
            return server_sap == self.sap
        return self.line is None

    def wants_hdlc(self, *, line: str, upper: int, lower: int | None) -> bool:
        if self.place is not None:
            return self.place == (line, upper, lower)
        if self.sap is not None:
            return False  # a SAP with no place on a line: none of its frames are here
        return self.line is None or self.line == line


@dataclass(eq=False)
class Capture:
    """One technician's capture: filtered units waiting to be written."""

    filter: CaptureFilter
    units: deque[CapturedUnit] = field(default_factory=lambda: deque(maxlen=MAX_QUEUED))
    dropped: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, unit: CapturedUnit) -> None:
        if len(self.units) == self.units.maxlen:
            self.dropped += 1
        self.units.append(unit)
        self.ready.set()

    def take(self) -> list[CapturedUnit]:
        units = list(self.units)
        self.units.clear()
        self.ready.clear()
        return units


class FrameTap:
    """Where the legs hand their units while a capture runs."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._captures: list[Capture] = []
        self._last_tx: dict[tuple[str, int, int | None], bytes] = {}
        self.active = False

    def start(self, capture_filter: CaptureFilter) -> Capture:
        capture = Capture(filter=capture_filter)
        self._captures.append(capture)
        self.active = True
        return capture

    def stop(self, capture: Capture) -> None:
        if capture in self._captures:
            self._captures.remove(capture)
        self.active = bool(self._captures)
        if not self.active:
            self._last_tx.clear()

    def wan(self, *, direction: Direction, data: bytes, server_sap: int, peer: str, local: str) -> None:
        """A wrapper PDU from (inbound) or to (outbound) a HES; ``data`` is the whole PDU, header included."""
        unit: CapturedUnit | None = None
        for capture in self._captures:
            if capture.filter.wants_wan(server_sap=server_sap):
                unit = unit or CapturedUnit(timestamp=self._clock(), leg="wan", direction=direction, data=data,
                                            peer=peer, local=local)
                capture.put(unit)

    def hdlc(self, *, line: str, direction: Direction, data: bytes, upper: int, lower: int | None,
             bad_fcs: bool = False) -> None:
        """An HDLC frame sent to (outbound) or read from (inbound) a meter address on ``line``."""
        note = "bad FCS" if bad_fcs else ""
        if direction is Direction.OUTBOUND:
            key = (line, upper, lower)
            if self._last_tx.get(key) == data:
                note = "retransmission"
            elif len(self._last_tx) < MAX_REMEMBERED_TX or key in self._last_tx:
                self._last_tx[key] = data
        unit: CapturedUnit | None = None
        for capture in self._captures:
            if capture.filter.wants_hdlc(line=line, upper=upper, lower=lower):
                unit = unit or CapturedUnit(timestamp=self._clock(), leg=f"line {line}", direction=direction,
                                            data=data, note=note)
                capture.put(unit)
