"""The relay core's test doubles: a clock moved by hand, an in-memory meter medium, a HES peer, DLMS vectors."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.codec import acse, axdr, xdlms
from gateway.codec import apdu as apdus
from gateway.codec.apdu import ApduKind
from gateway.codec.wrapper import WrapperPdu
from gateway.core.channel import (
    ApduReceived,
    Association,
    ChannelDown,
    ChannelError,
    ChannelListener,
    DownReason,
    Push,
    UnsolicitedPush,
)
from gateway.core.identity import get_logical_device_name, public_aarq

AARQ = public_aarq()
GET = get_logical_device_name()
RLRQ = acse.encode_rlrq(acse.Rlrq(reason=0))
RLRE = acse.encode_rlre(acse.Rlre(reason=0))
AARE_ACCEPTED = acse.encode_aare(acse.Aare(application_context=acse.APPLICATION_CONTEXT_LN_NO_CIPHERING,
                                           result=acse.AssociationResult.ACCEPTED))
AARE_REFUSED = acse.encode_aare(acse.Aare(application_context=acse.APPLICATION_CONTEXT_LN_NO_CIPHERING,
                                          result=acse.AssociationResult.REJECTED_PERMANENT))
PUSH = xdlms.encode_xdlms(xdlms.DataNotification(long_invoke_id=1, date_time=None, body=axdr.Data.unsigned(7)))


def get_answer(value: int) -> bytes:
    """A GET answer whose value tells the answers apart."""
    return xdlms.encode_xdlms(xdlms.GetResponseNormal(invoke_id=0xC1, result=axdr.Data.long_unsigned(value)))


def kinds(pdus: list[WrapperPdu]) -> list[ApduKind | None]:
    return [apdus.kind_of(pdu.apdu) for pdu in pdus]


def aare_result(apdu: bytes) -> acse.AssociationResult:
    return acse.decode_aare(apdu).result


# -- time -----------------------------------------------------------------------------------------


@dataclass
class FakeTimer:
    when: float
    callback: Callable[[], object]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A Scheduler whose time moves only when a test says so; due timers fire in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, FakeTimer]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object], /) -> FakeTimer:
        timer = FakeTimer(when, callback)
        heapq.heappush(self._heap, (when, next(self._order), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer due on the way at its own time."""
        end = self.now + seconds
        while self._heap and self._heap[0][0] <= end:
            when, _, timer = heapq.heappop(self._heap)
            self.now = max(self.now, when)
            if not timer.cancelled:
                timer.callback()
        self.now = end

    @property
    def armed(self) -> list[FakeTimer]:
        """Timers neither fired nor cancelled."""
        return [timer for _, _, timer in self._heap if not timer.cancelled]


# -- the meter medium -----------------------------------------------------------------------------


class FakeChannel:
    """One channel of the FakeMedium: records what the core sends, lets the test play the meter."""

    max_apdu = 1024

    def __init__(self, medium: FakeMedium, association: Association, listener: ChannelListener) -> None:
        self.medium = medium
        self._association = association
        self._listener = listener
        self.sent: list[bytes] = []
        self.state = "open"  # open, closing (goodbye under way), closed (gone)
        self.aborted = False
        self.last_heard: float | None = None  # the test plays a meter still sending part of an answer
        self.prioritized = 0  # how often the core asked this channel's next exchange to go first

    @property
    def association(self) -> Association:
        return self._association

    def send_apdu(self, apdu: bytes) -> None:
        if self.state != "open":
            raise ChannelError(f"send_apdu on a {self.state} channel")
        self.sent.append(apdu)

    def prioritize(self) -> None:
        self.prioritized += 1

    def close(self) -> bool:
        if self.state != "open":
            raise ChannelError(f"close on a {self.state} channel")
        if self.medium.goodbye:
            self.state = "closing"
            return False
        self._leave()
        return True

    def abort(self) -> None:
        if self.state != "closed":
            self.aborted = True
            self._leave()

    # -- the meter's side, played by the test --

    def answer(self, apdu: bytes) -> None:
        self._listener(ApduReceived(apdu))

    def push(self, apdu: bytes) -> None:
        self._listener(Push(apdu))

    def down(self, reason: DownReason) -> None:
        """The medium ends the channel: the listener hears it, then the link leaves (as on a line)."""
        self.state = "closed"
        self._listener(ChannelDown(reason))
        self._leave()

    def _leave(self) -> None:
        self.state = "closed"
        self.medium.release(self._association)


@dataclass
class FakeMedium:
    """A MeterMedium in memory: one data link per association, held by a channel or by the gateway itself."""

    name: str = "bus0"
    idle_timeout_s: float = 120.0
    up: bool = True
    full: bool = False  # its queue is full
    goodbye: bool = True  # close() says goodbye (HDLC: DISC) rather than ending at once
    links: dict[Association, object] = field(default_factory=dict)
    opened: list[FakeChannel] = field(default_factory=list)
    _released: list[Callable[[Association], None]] = field(default_factory=list)
    _unsolicited: list[Callable[[UnsolicitedPush], None]] = field(default_factory=list)

    def usable(self) -> bool:
        return self.up

    def congested(self) -> bool:
        return self.full

    def busy(self, association: Association) -> bool:
        return association in self.links

    def open(self, association: Association, listener: ChannelListener, *, probe: bool = False,
             background: bool = False, group: str = "") -> FakeChannel:
        if not isinstance(association.meter, int):
            raise ChannelError(f"{association.meter!r} is not an address of this medium")
        if association in self.links:
            raise ChannelError("open already")
        channel = FakeChannel(self, association, listener)
        self.links[association] = channel
        self.opened.append(channel)
        return channel

    def on_released(self, listener: Callable[[Association], None]) -> None:
        self._released.append(listener)

    def on_unsolicited(self, listener: Callable[[UnsolicitedPush], None]) -> None:
        self._unsolicited.append(listener)

    def hold(self, association: Association) -> None:
        """The gateway's own short link (identity read) takes the association's data link."""
        self.links[association] = "gateway"

    def release(self, association: Association) -> None:
        if self.links.pop(association, None) is not None:
            for listener in list(self._released):
                listener(association)


# -- the HES ----------------------------------------------------------------------------------------


@dataclass
class FakeHes:
    """A HES connection as the core sees it: what it was sent."""

    peer: str = "203.0.113.9:40000"
    peer_address: str = "203.0.113.9"
    received: list[WrapperPdu] = field(default_factory=list)

    def send(self, pdu: WrapperPdu) -> None:
        self.received.append(pdu)

    def unsent_bytes(self) -> int | None:
        return 0
