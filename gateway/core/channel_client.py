"""The gateway's own short association with a meter (identity read, ping, scan probe), over any medium.

A relay never answers for a meter; but registration needs the gateway itself to ask a meter
who it is, through the public client (SAP 16, no security, no key). This is the one asyncio
piece of the core: a service awaiting answers, not the sans-IO relay (router, session).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from gateway.core.channel import (
    ApduReceived,
    Association,
    ChannelDown,
    ChannelError,
    ChannelEvent,
    DownReason,
    MeterChannel,
    MeterMedium,
)

RELEASE_WAIT_S = 5.0  # for the goodbye's answer; the medium's own retries end sooner


class ChannelClientError(Exception):
    """The meter did not answer, refused, or the medium could not carry the exchange."""

    def __init__(self, reason: DownReason, detail: str = "", *, answered: bool = True) -> None:
        text = f"{reason.value}: {detail}" if detail else reason.value
        super().__init__(text if answered else f"no data link: {text}")  # never answered: it never came up
        self.reason = reason


class ChannelClient:
    """One association from the gateway to a meter, used with ``async with``."""

    def __init__(self, medium: MeterMedium, association: Association, *, timeout_s: float = 30.0,
                 probe: bool = False, background: bool = False) -> None:
        self.medium = medium
        self.association = association
        self._events: asyncio.Queue[ChannelEvent] = asyncio.Queue()
        self._timeout_s = timeout_s
        self._probe = probe
        self._background = background
        self._channel: MeterChannel | None = None
        self._answered = False  # the meter answered once: the data link came up

    async def __aenter__(self) -> ChannelClient:
        if not self.medium.usable():
            raise ChannelClientError(DownReason.MEDIUM_LOST, f"{self.medium.name} is down")
        if self.medium.busy(self.association):
            raise ChannelClientError(DownReason.IN_USE, "the meter's data link is in use (a relayed association)")
        try:
            self._channel = self.medium.open(self.association, self._events.put_nowait, probe=self._probe,
                                             background=self._background)
        except ChannelError as exc:  # an address or client SAP this medium cannot express
            raise ChannelClientError(DownReason.REFUSED, f"the medium cannot carry it: {exc}") from None
        return self

    async def request(self, apdu: bytes) -> bytes:
        """Send one APDU and return the meter's answer."""
        if self._channel is None:
            raise ChannelClientError(DownReason.MEDIUM_LOST, "the channel is down")
        try:
            self._channel.send_apdu(apdu)
        except ChannelError as exc:  # it went down since the last answer: its ChannelDown waits in the queue
            self._channel = None
            raise ChannelClientError(self._queued_down_reason(), str(exc)) from None
        while True:
            event = await self._next()
            if isinstance(event, ChannelDown):
                self._channel = None
                raise ChannelClientError(event.reason, event.detail, answered=self._answered)
            if isinstance(event, ApduReceived):
                self._answered = True
                return event.apdu
            # a push on our association answers nothing: push intake is not ours to do here

    def _queued_down_reason(self) -> DownReason:
        while not self._events.empty():
            event = self._events.get_nowait()
            if isinstance(event, ChannelDown):
                return event.reason
        return DownReason.MEDIUM_LOST

    async def _next(self) -> ChannelEvent:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._events.get()
        except TimeoutError:
            raise ChannelClientError(DownReason.TIMEOUT, "no answer in time", answered=self._answered) from None

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        # Cancelled (the daemon is stopping): let go now; the meter's inactivity timeout ends its side.
        # Otherwise say goodbye, waiting a bounded time.
        channel, self._channel = self._channel, None
        if channel is None:
            return
        if isinstance(exc, asyncio.CancelledError) or channel.close():
            channel.abort()
            return
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RELEASE_WAIT_S):
                    while not isinstance(await self._events.get(), ChannelDown):
                        pass
        finally:
            channel.abort()  # still saying goodbye after the wait (or cancelled in it): let go
