"""The gateway's own short exchanges with a meter on a line (probe, identity read, ping).

A relay never answers for a meter; but registration needs the gateway itself to ask a meter
who it is, through the public client (SAP 16, no security, no key).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from gateway.codec.hdlc import ApduReceived, HdlcAddress, HdlcClientLink, LinkDown, LinkEvent, LinkSettings, LinkUp
from gateway.link.line import MeterLine

DISCONNECT_WAIT_S = 5.0  # for the DISC's answer; the link's own retries end sooner


class LinkClientError(Exception):
    """The meter did not answer, or refused."""


class LinkClient:
    """One HDLC data link from the gateway to a meter, used with ``async with``."""

    def __init__(self, line: MeterLine, *, server_address: HdlcAddress, client_sap: int, settings: LinkSettings,
                 timeout_s: float = 30.0, background: bool = False) -> None:
        self.line = line
        self.server_address = server_address
        self.client_sap = client_sap
        self.link = HdlcClientLink(client_sap=client_sap, server_address=server_address, settings=settings)
        self._events: asyncio.Queue[LinkEvent] = asyncio.Queue()
        self._timeout_s = timeout_s
        self._attached = False
        self._background = background

    async def __aenter__(self) -> LinkClient:
        if not self.line.is_open:
            raise LinkClientError(f"line {self.line.name} is down")
        if self.line.has_link(client_sap=self.client_sap, upper=self.server_address.upper,
                              lower=self.server_address.lower):
            raise LinkClientError("the meter is busy with an association of the same client")
        self.line.attach(self.link, self._events.put_nowait, client_sap=self.client_sap,
                         server_address=self.server_address, background=self._background)
        self._attached = True
        self.link.connect()
        self.line.wake()
        event = await self._next()
        if not isinstance(event, LinkUp):
            self._detach()
            raise LinkClientError(f"no data link: {event}")
        return self

    async def request(self, apdu: bytes) -> bytes:
        """Send one APDU and return the meter's answer."""
        self.link.send_apdu(apdu)
        self.line.wake()
        event = await self._next()
        if isinstance(event, LinkDown):
            raise LinkClientError(f"data link lost: {event}")
        assert isinstance(event, ApduReceived)
        return event.apdu

    async def _next(self) -> LinkEvent:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._events.get()
        except TimeoutError:
            raise LinkClientError("no answer in time") from None

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        # Cancelled (the daemon is stopping): let go of the line now; the meter's inactivity
        # timeout ends its side. Otherwise say goodbye with a DISC, waiting a bounded time.
        if self._attached and self.line.is_open and not isinstance(exc, asyncio.CancelledError):
            self.link.disconnect()
            self.line.wake()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DISCONNECT_WAIT_S):
                    while not isinstance(await self._events.get(), LinkDown):
                        pass
        self._detach()

    def _detach(self) -> None:
        if self._attached:
            self.line.detach(self.link)
            self._attached = False
