"""The one interface between the relay core and a meter medium (serial HDLC line, IPv6 mesh).

Theory of operation. The relay core opens a *channel* per association: one HES client SAP talking
to one logical device of one meter. It hands the channel APDUs byte for byte with `send_apdu` and
is told, through the listener it gave to `MeterMedium.open`, what happens:

    ApduReceived(apdu)            an APDU from the meter that is not a push (an answer)
    Push(apdu)                    a meter-initiated APDU on this association (it answers nothing)
    ChannelDown(reason, detail)   the channel is gone, for good; `reason` is a DownReason

A channel ends in one of three ways:

    close()   graceful: True if the channel is gone at once (nothing to say goodbye to), False if a
              goodbye is under way (HDLC: DISC), ChannelDown(RELEASED) -- or why it failed -- follows
    abort()   at once, without a goodbye; no event follows
    the medium ends it: ChannelDown(TIMEOUT, BUSY, REFUSED, ...)

A medium never resends an APDU on its own after a timeout (an ACTION could run twice): the caller
answers the HES with an exception-response and aborts. Channel listeners are called from the
medium's own I/O and timer callbacks, never from inside `open`, `send_apdu`, `close` or `abort`.

A medium holds at most one data link per association. `busy(association)` says one is there that
the caller did not open or that is still closing (the gateway's own identity read, a DISC in
flight); `on_released` listeners hear when such a link leaves (possibly from inside `close` or
`abort`), so an AARQ can wait for it instead of failing. Pushes that no open channel takes
go to `on_unsolicited` listeners as an `UnsolicitedPush` (push intake).

The serial HDLC line implements it in `gateway/link/medium.py`; the IPv6 mesh in `gateway/media/`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

MeterAddress = Hashable  # the medium's own address of a meter (HDLC physical address, IP endpoint): only compared here


class ChannelError(Exception):
    """The caller asked for something the medium cannot do (open twice, an address it cannot express)."""


class DownReason(Enum):
    """Why a channel ended (or could not open): the relay core matches on these, never on text."""

    RELEASED = "released"  # close() finished: the data link said goodbye
    TIMEOUT = "timeout"  # no answer within the medium's retries; the APDU was not resent
    BUSY = "busy"  # the meter keeps saying it cannot take more now (HDLC RNR, no progress)
    REFUSED = "refused"  # the meter refused the connection (HDLC DM to SNRM)
    DROPPED = "dropped"  # the meter ended an established connection (HDLC DM)
    PROTOCOL_ERROR = "protocol-error"  # the meter broke the link protocol
    MEDIUM_LOST = "medium-lost"  # the serial port or the socket went away, or was closed
    CONGESTED = "congested"  # the medium's own queue is full: the APDU was not sent
    IN_USE = "in-use"  # (opening) a data link for this association is on the medium already


UNREACHABLE = frozenset({DownReason.TIMEOUT, DownReason.BUSY, DownReason.REFUSED})  # the meter, not us


@dataclass(frozen=True, slots=True, kw_only=True)
class Association:
    """One HES client SAP talking to one logical device of one meter."""

    client_sap: int
    logical_device: int
    meter: MeterAddress


@dataclass(frozen=True, slots=True)
class ApduReceived:
    """An APDU from the meter that answers a request."""

    apdu: bytes


@dataclass(frozen=True, slots=True)
class Push:
    """A meter-initiated APDU on an open channel; it does not end the exchange in progress."""

    apdu: bytes


@dataclass(frozen=True, slots=True)
class ChannelDown:
    """The channel is gone."""

    reason: DownReason
    detail: str = ""


ChannelEvent = ApduReceived | Push | ChannelDown
ChannelListener = Callable[[ChannelEvent], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class UnsolicitedPush:
    """A push no open channel took: from which meter and logical device, to which client SAP."""

    network: str
    meter: MeterAddress | None  # None: the frame named no meter the gateway could address
    logical_device: int
    client_sap: int
    apdu: bytes


class MeterChannel(Protocol):
    """One association's path to its meter."""

    @property
    def association(self) -> Association: ...

    @property
    def max_apdu(self) -> int:
        """The longest APDU `send_apdu` carries."""
        ...

    @property
    def last_heard(self) -> float | None:
        """When (scheduler time) the meter last sent anything on this channel, a part of an answer included."""
        ...

    def send_apdu(self, apdu: bytes) -> None:
        """Queue an APDU for the meter, byte for byte. Raises ChannelError once the channel is down."""

    def prioritize(self) -> None:
        """Serve this channel's next exchange before those of the others waiting for the medium."""

    def close(self) -> bool:
        """Release gracefully; True if gone at once, False if ChannelDown follows."""
        ...

    def abort(self) -> None:
        """End the channel at once, without a goodbye; no event follows."""


class MeterMedium(Protocol):
    """A meter network as the relay core sees it."""

    @property
    def name(self) -> str: ...

    @property
    def idle_timeout_s(self) -> float:
        """How long a meter keeps an idle channel (HDLC: the inactivity timeout); inf if for ever."""
        ...

    def usable(self) -> bool:
        """Whether the medium can carry an exchange now (port open, socket bound)."""
        ...

    def congested(self) -> bool:
        """Whether the medium's queue is full: a new association would only wait, so it is refused for now."""
        ...

    def busy(self, association: Association) -> bool:
        """Whether the meter's data link is taken (a serial line keeps one per physical meter): wait, or refuse."""
        ...

    def open(self, association: Association, listener: ChannelListener, *, probe: bool = False,
             background: bool = False, group: str = "") -> MeterChannel:
        """Open the association's channel.

        `probe`: a short look at an address that may be empty (give up early); `background`: the
        gateway's own work, which lets every relay exchange on the medium go first; `group`: whom the
        channel works for (a HES's address): the medium takes turns between groups, then channels.

        Raises ChannelError when the medium cannot carry the association or it is open already.
        """
        ...

    def on_released(self, listener: Callable[[Association], None]) -> None:
        """Be told when an association's data link leaves the medium."""

    def on_unsolicited(self, listener: Callable[[UnsolicitedPush], None]) -> None:
        """Receive the pushes no open channel takes."""
