"""The one interface between the relay core and a meter medium (serial HDLC line or IPv6 mesh).

Theory of operation. The relay core opens a *channel* per association: one HES client SAP
talking to one logical device of one meter. It hands the channel APDUs byte for byte with
`send_apdu` and is told, through the listener it gave to `open`, what happens:

    ApduReceived(apdu)      the meter's answer to the exchange in progress
    Push(apdu)              a meter-initiated APDU on this association (not an answer)
    ChannelDown(reason)     the channel is gone; `reason` is a DownReason, never text to parse

A medium never resends an APDU on its own after a timeout (an ACTION could run twice): a
silent meter is `ChannelDown(TIMEOUT)` and the caller answers the HES with an
exception-response. Pushes that no open channel takes go to the medium's `on_unsolicited`
listener (push intake). Listeners are called from the medium's own I/O and timer callbacks,
never from inside `open`, `send_apdu` or `close`, so a caller is never re-entered. No event
follows `close()`.

Two media implement it:

- IPv6 mesh (`gateway/media/mesh.py`): one UDP socket per meter network; one wrapper datagram
  per APDU (source wPort = client SAP, destination wPort = logical device); a bounded number of
  exchanges in flight per network; a timeout is final for the channel. Meters that listen only
  on TCP share the network and its limit, over one wrapper connection per association.
- Serial line (`gateway/link/line.py`, adapted without changing its scheduling): a `LineMedium`
  adapter over `MeterLine`.
    open(association)  builds an `HdlcClientLink` for (client SAP,
                       HdlcAddress.server(logical_device, physical_address)), `attach`es it to
                       the line and calls `connect()` (APDUs sent before the UA wait in the link)
    send_apdu(apdu)    `link.send_apdu(apdu)` then `line.wake()`
    close()            `link.disconnect()`, and `detach` once the DISC is answered
    usable()           `line.is_open`
    on_unsolicited     `line.on_unsolicited(frame)` through `push_apdu(frame)`, with the frame's
                       addresses as `UnsolicitedPush` fields
  Link events map as: hdlc.LinkUp -> nothing; hdlc.ApduReceived -> ApduReceived, or Push when
  `codec.apdu.is_push` says so (the link reports a UI frame as ApduReceived too);
  hdlc.LinkDown -> ChannelDown once `HdlcClientLink` gives typed reasons instead of text:
  "no response" -> TIMEOUT, "refused"/"meter disconnected" -> REFUSED, "protocol error"/"frame
  rejected" -> PROTOCOL_ERROR, "meter busy" -> BUSY, "line closed"/"line lost" -> MEDIUM_LOST.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from gateway.codec.wrapper import WRAPPER_PORT


class ChannelError(Exception):
    """The caller asked for something the medium cannot do (open twice, send on a closed channel)."""


class DownReason(Enum):
    """Why a channel ended: the relay core matches on these, never on text."""

    TIMEOUT = "timeout"  # no answer within the response timeout; the APDU was not resent
    CONGESTED = "congested"  # the medium's queue is full: the APDU was not sent
    BUSY = "busy"  # the meter said it cannot take more now (HDLC RNR beyond the retries)
    REFUSED = "refused"  # the meter refused or dropped the connection (HDLC DM)
    PROTOCOL_ERROR = "protocol-error"  # the meter broke the link protocol
    MEDIUM_LOST = "medium-lost"  # the serial port or the socket went away


class IpTransport(Enum):
    """How the wrapper reaches an IP meter (IEC 62056-4-7: both on port 4059)."""

    UDP = "udp"  # one datagram per APDU
    TCP = "tcp"  # one connection per association


@dataclass(frozen=True, slots=True)
class IpMeter:
    """A meter on an IP network: its address, its wrapper port and transport."""

    host: ipaddress.IPv6Address
    port: int = WRAPPER_PORT
    transport: IpTransport = IpTransport.UDP

    def __str__(self) -> str:
        return f"{self.transport.value}://[{self.host}]:{self.port}"


MeterAddress = int | IpMeter  # an HDLC physical address on a line, an IP endpoint on a mesh


@dataclass(frozen=True, slots=True)
class Association:
    """One HES client SAP talking to one logical device (server SAP / wPort) of one meter."""

    client_sap: int
    logical_device: int
    meter: MeterAddress


@dataclass(frozen=True, slots=True)
class ApduReceived:
    """The meter's answer to the exchange in progress."""

    apdu: bytes


@dataclass(frozen=True, slots=True)
class Push:
    """A meter-initiated APDU on an open channel; it does not end the exchange in progress."""

    apdu: bytes


@dataclass(frozen=True, slots=True)
class ChannelDown:
    """The channel is gone."""

    reason: DownReason


ChannelEvent = ApduReceived | Push | ChannelDown
ChannelListener = Callable[[ChannelEvent], None]


@dataclass(frozen=True, slots=True)
class UnsolicitedPush:
    """A push that no open channel took: which meter, from which logical device, to which client SAP."""

    meter: MeterAddress
    logical_device: int
    client_sap: int
    apdu: bytes


PushListener = Callable[[UnsolicitedPush], None]


class MeterChannel(Protocol):
    """One association's path to its meter."""

    @property
    def association(self) -> Association: ...

    def send_apdu(self, apdu: bytes) -> None:
        """Queue an APDU for the meter, byte for byte. Raises ChannelError once the channel is down."""

    def close(self) -> None:
        """End the channel; no event follows."""


class MeterMedium(Protocol):
    """A meter network as the relay core sees it."""

    @property
    def name(self) -> str: ...

    def usable(self) -> bool:
        """Whether the medium can carry an exchange now (port open, socket bound)."""

    def open(self, association: Association, listener: ChannelListener) -> MeterChannel:
        """Open the association's channel. Raises ChannelError if it is open already."""

    def on_unsolicited(self, listener: PushListener) -> None:
        """Receive the pushes no open channel takes."""
