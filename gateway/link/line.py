"""One meter line: a serial port, the shared half-duplex medium, and the HDLC links on it.

Theory of operation. Many HDLC data-link connections (one per HES association) share one
multi-drop line, and the line carries one exchange at a time: the gateway (primary station)
sends a frame with the poll bit, then the addressed meter answers until the final bit. So the
line is a token: at most one link "holds the medium" from its ``transmit()`` until it no
longer ``awaiting_response`` (answer received or timer expired). Links that want the medium
are served round-robin, one exchange each, so a long load-profile read cannot starve a short
GET; a link's response timer starts when its frame goes out, not when its APDU was queued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from gateway.codec.hdlc import HdlcClientLink, HdlcFrame, HdlcFrameDecoder, LinkDown, LinkEvent
from gateway.config import LinkConfig

log = structlog.get_logger(__name__)

LinkListener = Callable[[LinkEvent], None]
UnsolicitedListener = Callable[[HdlcFrame], None]
Opener = Callable[[Callable[[], asyncio.Protocol]], Awaitable[asyncio.Transport]]

_Key = tuple[int, int, int | None]  # (client SAP, meter logical device, physical address)


def _key(*, client_sap: int, upper: int, lower: int | None) -> _Key:
    return (client_sap, upper, lower)


def _link_key(link: HdlcClientLink) -> _Key:
    return (link.client_sap, link.server_address.upper, link.server_address.lower)


@dataclass(slots=True)
class LineCounters:
    frames_sent: int = 0
    frames_received: int = 0
    frames_unrouted: int = 0
    exchanges: int = 0
    timeouts: int = 0


class _LineProtocol(asyncio.Protocol):
    def __init__(self, line: MeterLine) -> None:
        self._line = line

    def data_received(self, data: bytes) -> None:
        self._line.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._line.connection_lost(exc)


class MeterLine:
    """The medium: schedules exchanges of the HDLC links on one serial line, fairly."""

    def __init__(
        self, *, config: LinkConfig, opener: Opener, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.name = config.name
        self.counters = LineCounters()
        self._opener = opener
        self._clock = clock
        self._decoder = HdlcFrameDecoder(inter_octet_timeout_s=config.inter_octet_timeout_s)
        self._transport: asyncio.Transport | None = None
        self._links: dict[_Key, tuple[HdlcClientLink, LinkListener]] = {}
        self._order: list[_Key] = []  # round-robin order
        self._next = 0
        self._holder: _Key | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._unsolicited: UnsolicitedListener | None = None
        self._log = log.bind(line=config.name, device=config.device)

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._transport is not None

    @property
    def decoder(self) -> HdlcFrameDecoder:
        return self._decoder

    async def open(self) -> None:
        """Open the serial device. Raises LineOpenError."""
        self._transport = await self._opener(lambda: _LineProtocol(self))
        self._log.info("line.open")

    def close(self) -> None:
        """Close the device; every link on it goes down."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        self._fail_all("line closed")

    def on_unsolicited(self, listener: UnsolicitedListener) -> None:
        """Receive frames no link asked for (UI pushes, frames for unknown links)."""
        self._unsolicited = listener

    # -- links --------------------------------------------------------------------------------

    def attach(self, link: HdlcClientLink, listener: LinkListener) -> None:
        """Put a link on this line; its events go to ``listener``."""
        key = _link_key(link)
        if key in self._links:
            raise ValueError(f"a link for {key} is already on line {self.name}")
        self._links[key] = (link, listener)
        self._order.append(key)

    def detach(self, link: HdlcClientLink) -> None:
        """Take a link off this line (it no longer gets the medium)."""
        key = _link_key(link)
        if self._links.pop(key, None) is None:
            return
        index = self._order.index(key)
        self._order.pop(index)
        if index < self._next:
            self._next -= 1
        if self._holder == key:
            self._release()
        self.wake()

    def has_link(self, *, client_sap: int, upper: int, lower: int | None) -> bool:
        return _key(client_sap=client_sap, upper=upper, lower=lower) in self._links

    def wake(self) -> None:
        """A link may want the medium: grant it if the line is idle."""
        if self._holder is not None or self._transport is None:
            return
        count = len(self._order)
        for step in range(count):
            index = (self._next + step) % count
            key = self._order[index]
            link, _ = self._links[key]
            if link.wants_medium:
                self._next = (index + 1) % count
                self._grant(key, link)
                return

    def _grant(self, key: _Key, link: HdlcClientLink) -> None:
        assert self._transport is not None
        now = self._clock()
        data = link.transmit(now=now)
        self._transport.write(data)
        self.counters.frames_sent += 1
        self.counters.exchanges += 1
        if link.awaiting_response:
            self._holder = key
            self._arm(link.deadline)
        else:  # e.g. a UI frame or a final RR: nothing to wait for
            self.wake()

    def _arm(self, deadline: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, deadline - self._clock())
            self._timer = loop.call_at(loop.time() + delay, self._expired)

    def _release(self) -> None:
        self._holder = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        key = self._holder
        if key is None or key not in self._links:
            self._release()
            self.wake()
            return
        link, listener = self._links[key]
        self.counters.timeouts += 1
        events = link.expire(now=self._clock())
        self._after_holder_event(key, link)
        for event in events:
            listener(event)
        self.wake()

    def _after_holder_event(self, key: _Key, link: HdlcClientLink) -> None:
        if link.awaiting_response:
            self._arm(link.deadline)
        else:
            self._release()

    # -- bytes from the line ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        for frame in self._decoder.feed(data, now=self._clock()):
            self.counters.frames_received += 1
            self._dispatch(frame)
        self.wake()

    def _dispatch(self, frame: HdlcFrame) -> None:
        server = frame.source
        key = _key(client_sap=frame.destination.upper, upper=server.upper, lower=server.lower)
        entry = self._links.get(key)
        if entry is None:
            self.counters.frames_unrouted += 1
            if self._unsolicited is not None:
                self._unsolicited(frame)
            return
        link, listener = entry
        events = link.receive(frame, now=self._clock())
        if self._holder == key:
            self._after_holder_event(key, link)
        for event in events:
            listener(event)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return
        self._transport = None
        self._log.warning("line.lost", error=str(exc) if exc else None)
        self._fail_all("line lost")

    def _fail_all(self, reason: str) -> None:
        self._release()
        for link, listener in list(self._links.values()):
            listener(LinkDown(reason=reason))
            del link
