"""One HES association to one meter, carried on its own HDLC data-link connection.

The session relays APDUs byte for byte. It peeks at tags only to know when the association
opens (AARQ brings the data link up), when it ends (RLRE brings it down) and which answers are
meter pushes. It never resends an APDU: retransmission belongs to HDLC. If the meter stays
silent past the exchange timeout the HES gets an exception-response and the link is reset.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import structlog

from gateway.codec import apdu as apdus
from gateway.codec.hdlc import ApduReceived, HdlcAddress, HdlcClientLink, LinkDown, LinkEvent, LinkUp
from gateway.codec.hdlc.window import MAX_APDU_LENGTH
from gateway.codec.wrapper import WrapperPdu
from gateway.core.rejections import aare_rejected
from gateway.deadline import Deadline
from gateway.link.line import MeterLine
from gateway.loglimit import LogLimiter

log = structlog.get_logger(__name__)

UNREACHABLE = frozenset({"no response", "refused", "meter busy", "no progress"})  # HDLC LinkDown reasons
MAX_OUTSTANDING = 8  # requests a HES may pipeline on one association before we refuse more
MAX_RELAYED_APDU = MAX_APDU_LENGTH - 3  # what one HDLC link can carry after its LLC header


class MeterObserver(Protocol):
    def meter_seen(self, sap: int) -> None: ...

    def meter_unreachable(self, sap: int) -> None: ...


class HesPeer(Protocol):
    """What a session needs of the HES connection that owns it."""

    peer: str  # address and port, for logs
    peer_address: str  # the HES's address alone: per-peer limits count this

    def send(self, pdu: WrapperPdu) -> None: ...

    def unsent_bytes(self) -> int | None:
        """Bytes written but not yet handed to the kernel; None once the connection is gone (pushes ask)."""
        ...


class SessionState(Enum):
    CONNECTING = "connecting"  # SNRM sent, waiting for UA
    OPEN = "open"
    CLOSING = "closing"  # DISC sent
    CLOSED = "closed"


@dataclass(slots=True)
class SessionCounters:
    apdus_to_meter: int = 0
    apdus_to_hes: int = 0
    started: float = field(default_factory=time.time)


class MeterSession:
    """Relays one HES association (client SAP -> meter SAP) over one HDLC link."""

    def __init__(
        self,
        *,
        owner: HesPeer,
        client_sap: int,
        meter_sap: int,
        server_address: HdlcAddress,
        link: HdlcClientLink,
        line: MeterLine,
        exchange_timeout_s: float,
        idle_timeout_s: float,
        on_closed: Callable[[MeterSession], None],
        peer_log: LogLimiter,
        observer: MeterObserver | None = None,
    ) -> None:
        self.owner = owner
        self.client_sap = client_sap
        self.meter_sap = meter_sap
        self.server_address = server_address
        self.link = link
        self.line = line
        self.state = SessionState.CONNECTING
        self.counters = SessionCounters()
        self._exchange_timeout_s = exchange_timeout_s
        self._on_closed = on_closed
        self._peer_log = peer_log  # every line here is one a HES can trigger at will: bounded per HES and event
        self._observer = observer
        self._waiting: deque[bytes] = deque()  # queued until the link is up
        self._outstanding: deque[bytes] = deque()  # requests awaiting an answer (AARQs kept whole)
        self._exchange_timer: asyncio.TimerHandle | None = None
        self._idle = Deadline(asyncio.get_running_loop(), timeout_s=idle_timeout_s, on_expiry=self._idle_expired)
        self._log = log.bind(peer=owner.peer, client_sap=client_sap, meter_sap=meter_sap, line=line.name)
        self._key = (owner.peer_address, meter_sap)  # life-cycle lines: per HES address and meter

    def start(self) -> None:
        """Attach to the line and bring the data link up (SNRM)."""
        self.line.attach(self.link, self._on_link_event, client_sap=self.client_sap, server_address=self.server_address)
        self.link.connect()
        self._touch()
        self.line.wake()

    # -- from the HES -------------------------------------------------------------------------

    def request(self, apdu: bytes) -> None:
        """An APDU from the HES for this meter."""
        if self.state in (SessionState.CLOSING, SessionState.CLOSED):
            self._answer(apdus.exception_response(
                state_error=apdus.STATE_ERROR_SERVICE_NOT_ALLOWED,
                service_error=apdus.SERVICE_ERROR_OPERATION_NOT_POSSIBLE,
            ))
            return
        if not apdu or len(apdu) > MAX_RELAYED_APDU:
            self._peer_log.emit(self._log.warning, "session.apdu_refused", key=self.owner.peer_address, size=len(apdu))
            self._answer(apdus.exception_response(
                state_error=apdus.STATE_ERROR_SERVICE_NOT_ALLOWED,
                service_error=apdus.SERVICE_ERROR_PDU_TOO_LONG if apdu else apdus.SERVICE_ERROR_OTHER_REASON,
            ))
            return
        if len(self._outstanding) >= MAX_OUTSTANDING:
            self._peer_log.emit(self._log.warning, "session.too_many_outstanding", key=self.owner.peer_address)
            self._answer(apdus.exception_response(
                state_error=apdus.STATE_ERROR_SERVICE_NOT_ALLOWED,
                service_error=apdus.SERVICE_ERROR_OTHER_REASON,
            ))
            return
        self._outstanding.append(apdu if apdu[:1] == b"\x60" else apdu[:1])
        self.counters.apdus_to_meter += 1
        if self.state is SessionState.OPEN:
            self.link.send_apdu(apdu)
            self.line.wake()
        else:
            self._waiting.append(apdu)
        if self._exchange_timer is None:
            self._arm_exchange_timer()
        self._touch()

    def hes_gone(self) -> None:
        """The HES connection closed: release the meter's data link."""
        self._disconnect("hes disconnected")

    # -- from the meter line ------------------------------------------------------------------

    def _on_link_event(self, event: LinkEvent) -> None:
        if isinstance(event, ApduReceived):
            self._from_meter(event.apdu)
        elif isinstance(event, LinkUp):
            self.state = SessionState.OPEN
            self._log.debug("session.link_up", max_info_tx=event.parameters.max_info_tx)
            while self._waiting:
                self.link.send_apdu(self._waiting.popleft())
            self.line.wake()
        elif isinstance(event, LinkDown):
            self._link_down(event.reason)

    def _from_meter(self, apdu: bytes) -> None:
        self._touch()
        if self._observer is not None:
            self._observer.meter_seen(self.meter_sap)
        self.counters.apdus_to_hes += 1
        if not apdus.is_push(apdu) and self._outstanding:
            self._outstanding.popleft()
            self._cancel_exchange_timer()
            if self._outstanding:
                self._arm_exchange_timer()
        self.owner.send(WrapperPdu(source=self.meter_sap, destination=self.client_sap, apdu=apdu))
        if apdu[:1] == b"\x63":  # RLRE: the association is over, so is the data link
            self._disconnect("released")

    def _link_down(self, reason: str) -> None:
        if self.state is SessionState.CLOSED:
            return
        if reason in UNREACHABLE and self._observer is not None:
            self._observer.meter_unreachable(self.meter_sap)
        if self._outstanding:
            self._peer_log.emit(self._log.warning, "session.link_down", key=self._key, reason=reason,
                          outstanding=len(self._outstanding))
            self._fail_outstanding()
        else:
            self._peer_log.emit(self._log.info, "session.closed", key=self._key, reason=reason)
        self._close()

    # -- timers -------------------------------------------------------------------------------

    def _arm_exchange_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._exchange_timer = loop.call_later(self._exchange_timeout_s, self._exchange_expired)

    def _cancel_exchange_timer(self) -> None:
        if self._exchange_timer is not None:
            self._exchange_timer.cancel()
            self._exchange_timer = None

    def _exchange_expired(self) -> None:
        self._exchange_timer = None
        self._peer_log.emit(self._log.warning, "session.meter_silent", key=self._key,
                            timeout_s=self._exchange_timeout_s)
        self._fail_outstanding()
        self._close()  # the link is reset: detached without waiting for a DISC exchange

    def _touch(self) -> None:
        self._idle.restart()  # a clock read per APDU; the one armed timer re-arms itself

    def _idle_expired(self) -> None:
        self._disconnect("idle")

    # -- endings ------------------------------------------------------------------------------

    def _fail_outstanding(self) -> None:
        while self._outstanding:
            request = self._outstanding.popleft()
            if request[:1] == b"\x60":
                self._answer(aare_rejected(aarq=request, transient=True))
            else:
                self._answer(apdus.exception_response(
                    state_error=apdus.STATE_ERROR_SERVICE_NOT_ALLOWED,
                    service_error=apdus.SERVICE_ERROR_OTHER_REASON,
                ))

    def _answer(self, apdu: bytes) -> None:
        self.owner.send(WrapperPdu(source=self.meter_sap, destination=self.client_sap, apdu=apdu))

    def _disconnect(self, reason: str) -> None:
        if self.state in (SessionState.CLOSING, SessionState.CLOSED):
            return
        self._peer_log.emit(self._log.info, "session.release", key=self._key, reason=reason)
        self._outstanding.clear()
        self._waiting.clear()
        self._cancel_exchange_timer()
        if self.state is SessionState.OPEN and self.line.is_open:
            self.state = SessionState.CLOSING
            self.link.disconnect()
            self.line.wake()
        else:
            self._close()

    def _close(self) -> None:
        if self.state is SessionState.CLOSED:
            return
        self.state = SessionState.CLOSED
        self._cancel_exchange_timer()
        self._idle.cancel()
        self._on_closed(self)  # first: detaching may let a waiting AARQ for this meter in at once
        self.line.detach(self.link)
