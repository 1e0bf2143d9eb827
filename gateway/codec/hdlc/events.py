"""What the HDLC links are configured with and what they report (IEC 62056-46 data-link services)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from gateway.codec.hdlc.params import HdlcParameters

INACTIVITY_TIMEOUT_S = 120.0  # IEC 62056-6-2, IC 23 HDLC setup: inactivity_time_out default


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """What the client proposes and how patiently it waits."""

    parameters: HdlcParameters = field(default_factory=HdlcParameters)
    response_timeout_s: float = 1.0
    max_retries: int = 3


class LinkState(Enum):
    """The data-link connection as the HES sees it."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTING = "disconnecting"


@dataclass(frozen=True, slots=True)
class LinkUp:
    """The meter accepted the SNRM; `parameters` are ours (tx = what we send)."""

    parameters: HdlcParameters


@dataclass(frozen=True, slots=True)
class ApduReceived:
    """A whole APDU from the meter, LLC header removed."""

    apdu: bytes


class LinkDownReason(Enum):
    """Why a data-link connection ended; match on these, never on text."""

    DISCONNECTED = "disconnected"  # our DISC was answered: a graceful end
    REFUSED = "refused"  # the meter answered our SNRM with DM
    METER_DISCONNECTED = "meter disconnected"  # DM on an established connection
    FRAME_REJECTED = "frame rejected"  # FRMR
    PROTOCOL_ERROR = "protocol error"  # the meter broke IEC 62056-46; `detail` says how
    NO_RESPONSE = "no response"  # no final frame after max_retries retransmissions
    METER_BUSY = "meter busy"  # RNR beyond the retries
    NO_PROGRESS = "no progress"  # answers that acknowledge nothing, beyond the retries
    LINE_CLOSED = "line closed"  # the gateway closed the serial port
    LINE_LOST = "line lost"  # the serial port went away


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The connection is gone; `reason` says why, `detail` adds what a protocol error was."""

    reason: LinkDownReason
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


LinkEvent = LinkUp | ApduReceived | LinkDown


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What the server accepts at most, and how long an idle connection lives."""

    supported: HdlcParameters = field(default_factory=HdlcParameters)
    inactivity_timeout_s: float = INACTIVITY_TIMEOUT_S


@dataclass(frozen=True, slots=True)
class ClientConnected:
    """A client opened (or reset, with a new SNRM) its connection."""

    client_sap: int


@dataclass(frozen=True, slots=True)
class ClientDisconnected:
    """A client's connection ended: DISC, inactivity, or a protocol error."""

    client_sap: int


@dataclass(frozen=True, slots=True)
class ApduFromClient:
    """A whole APDU from a client, LLC header removed."""

    client_sap: int
    apdu: bytes


ServerEvent = ClientConnected | ClientDisconnected | ApduFromClient
