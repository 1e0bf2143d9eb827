"""One HES association to one meter, carried on its own meter channel.

The session relays APDUs byte for byte. It peeks at tags only to know when the association
opens (the AARQ opens the channel), when it ends (an RLRE releases the channel) and which
answers are requests' answers. It never resends an APDU: retransmission belongs to the medium.
If the meter stays silent past the exchange timeout the HES gets an exception-response and the
channel is aborted. Time comes from the Scheduler it is handed; it knows no medium and no loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import structlog

from gateway.codec import apdu as apdus
from gateway.codec.apdu import ApduKind
from gateway.codec.wrapper import WrapperPdu
from gateway.core.channel import (
    UNREACHABLE,
    ApduReceived,
    Association,
    ChannelDown,
    ChannelEvent,
    DownReason,
    MeterChannel,
    MeterMedium,
    Push,
)
from gateway.core.clock import Scheduler, TimerHandle
from gateway.core.rejections import aare_rejected
from gateway.deadline import Deadline
from gateway.loglimit import LogLimiter

log = structlog.get_logger(__name__)

MAX_OUTSTANDING = 8  # requests a HES may pipeline on one association before we refuse more
SEEN_INTERVAL_S = 1.0  # the observer hears "the meter answered" at most this often (last_seen is to the second)


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
    OPEN = "open"  # the channel carries (or queues, while it connects) the HES's APDUs
    CLOSING = "closing"  # released: the channel says goodbye (HDLC DISC)
    CLOSED = "closed"


@dataclass(slots=True)
class SessionCounters:
    apdus_to_meter: int = 0
    apdus_to_hes: int = 0
    started: float = field(default_factory=time.time)  # wall clock, for display


class MeterSession:
    """Relays one HES association (client SAP -> meter SAP) over one meter channel."""

    def __init__(
        self,
        *,
        owner: HesPeer,
        meter_sap: int,
        association: Association,
        medium: MeterMedium,
        scheduler: Scheduler,
        exchange_timeout_s: float,
        priority_classes: frozenset[int] = frozenset({apdus.DISCONNECT_CONTROL_CLASS}),
        idle_timeout_s: float,
        on_closed: Callable[[MeterSession], None],
        peer_log: LogLimiter,
        observer: MeterObserver | None = None,
    ) -> None:
        self.owner = owner
        self.client_sap = association.client_sap
        self.meter_sap = meter_sap
        self.association = association
        self.medium = medium
        self.channel: MeterChannel | None = None
        self.state = SessionState.OPEN
        self.counters = SessionCounters()
        self._scheduler = scheduler
        self._exchange_timeout_s = exchange_timeout_s
        self._priority_classes = priority_classes  # plain ACTIONs on these interface classes go first
        self._on_closed = on_closed
        self._peer_log = peer_log  # every line here is one a HES can trigger at will: bounded per HES and event
        self._observer = observer
        self._outstanding: deque[bytes] = deque()  # requests awaiting an answer (AARQs kept whole)
        self._exchange_timer: TimerHandle | None = None
        self._seen_told_at = float("-inf")  # when the observer was last told the meter answered
        self._exchange_started = 0.0  # the request sent, or the meter's last frame: silence counts from here
        self._idle = Deadline(scheduler, timeout_s=idle_timeout_s, on_expiry=self._idle_expired)
        self._log = log.bind(peer=owner.peer, client_sap=self.client_sap, meter_sap=meter_sap, network=medium.name)
        self._key = (owner.peer_address, meter_sap)  # life-cycle lines: per HES address and meter

    @property
    def network(self) -> str:
        return self.medium.name

    def start(self) -> None:
        """Open the channel to the meter. Raises ChannelError."""
        self.channel = self.medium.open(self.association, self._on_channel_event, group=self.owner.peer_address)
        self._touch()

    # -- from the HES -------------------------------------------------------------------------

    def request(self, apdu: bytes) -> None:
        """An APDU from the HES for this meter."""
        if self.state is not SessionState.OPEN or self.channel is None:
            self._answer(apdus.exception_response(
                state_error=apdus.STATE_ERROR_SERVICE_NOT_ALLOWED,
                service_error=apdus.SERVICE_ERROR_OPERATION_NOT_POSSIBLE,
            ))
            return
        if not apdu or len(apdu) > self.channel.max_apdu:
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
        now = self._scheduler.time()
        if not self._outstanding:
            self._exchange_started = now
        self._outstanding.append(apdu if apdus.kind_of(apdu) is ApduKind.AARQ else apdu[:1])
        self.counters.apdus_to_meter += 1
        self.channel.send_apdu(apdu)
        if apdus.plain_action_class(apdu) in self._priority_classes:  # e.g. a remote disconnect: it goes first
            self.channel.prioritize()
        if self._exchange_timer is None:
            self._exchange_timer = self._scheduler.call_at(self._exchange_started + self._exchange_timeout_s,
                                                           self._exchange_expired)
        self._idle.restart(now)

    def hes_gone(self) -> None:
        """The HES connection closed: release the meter's channel."""
        self._release("hes disconnected")

    # -- from the meter -----------------------------------------------------------------------

    def _on_channel_event(self, event: ChannelEvent) -> None:
        if isinstance(event, ApduReceived):
            self._from_meter(event.apdu, answer=True)
        elif isinstance(event, Push):
            self._from_meter(event.apdu, answer=False)
        elif isinstance(event, ChannelDown):
            self._channel_down(event)

    def _from_meter(self, apdu: bytes, *, answer: bool) -> None:
        now = self._scheduler.time()
        self._idle.restart(now)
        # the registry keeps last_seen to the second: tell it once a second
        if self._observer is not None and now - self._seen_told_at >= SEEN_INTERVAL_S:
            self._seen_told_at = now
            self._observer.meter_seen(self.meter_sap)
        self.counters.apdus_to_hes += 1
        if answer and self._outstanding:
            self._outstanding.popleft()
            if self._outstanding:  # the next answer's silence counts from now (its timer is lazy)
                self._exchange_started = now
        self._answer(apdu)
        if answer and apdus.kind_of(apdu) is ApduKind.RLRE:  # the association is over, so is the channel
            self._release("released")

    def _channel_down(self, event: ChannelDown) -> None:
        if self.state is SessionState.CLOSED:
            return
        self.channel = None  # gone: nothing to abort
        if event.reason in UNREACHABLE and self._observer is not None:
            self._observer.meter_unreachable(self.meter_sap)
        if self._outstanding:
            self._peer_log.emit(self._log.warning, "session.channel_down", key=self._key, reason=event.reason.value,
                                detail=event.detail, outstanding=len(self._outstanding))
            self._fail_outstanding()
        elif event.reason is not DownReason.RELEASED:
            self._peer_log.emit(self._log.info, "session.closed", key=self._key, reason=event.reason.value,
                                detail=event.detail)
        self._close()

    # -- timers -------------------------------------------------------------------------------

    def _cancel_exchange_timer(self) -> None:
        if self._exchange_timer is not None:
            self._exchange_timer.cancel()
            self._exchange_timer = None

    def _exchange_expired(self) -> None:
        """The exchange timeout measures the meter's silence: an answer still arriving re-arms it.

        The timer is lazy: armed once, it stays while exchanges come and go and re-arms itself
        when it fires early, so an exchange costs no timer-heap work (issue 13).
        """
        self._exchange_timer = None
        if not self._outstanding:
            return
        heard = self.channel.last_heard if self.channel is not None else None
        silent_since = self._exchange_started if heard is None else max(heard, self._exchange_started)
        due = silent_since + self._exchange_timeout_s
        if due > self._scheduler.time():
            self._exchange_timer = self._scheduler.call_at(due, self._exchange_expired)
            return
        self._peer_log.emit(self._log.warning, "session.meter_silent", key=self._key,
                            timeout_s=self._exchange_timeout_s)
        self._fail_outstanding()
        self._release("meter silent")  # closed cleanly (DISC): what is still queued never reaches the meter

    def _touch(self) -> None:
        self._idle.restart()  # a clock read per APDU; the one armed timer re-arms itself

    def _idle_expired(self) -> None:
        self._release("idle")

    # -- endings ------------------------------------------------------------------------------

    def _fail_outstanding(self) -> None:
        while self._outstanding:
            request = self._outstanding.popleft()
            if apdus.kind_of(request) is ApduKind.AARQ:
                self._answer(aare_rejected(aarq=request, transient=True))
            else:
                self._answer(apdus.exception_response(
                    state_error=apdus.STATE_ERROR_SERVICE_NOT_ALLOWED,
                    service_error=apdus.SERVICE_ERROR_OTHER_REASON,
                ))

    def _answer(self, apdu: bytes) -> None:
        self.owner.send(WrapperPdu(source=self.meter_sap, destination=self.client_sap, apdu=apdu))

    def _release(self, reason: str) -> None:
        if self.state is not SessionState.OPEN:
            return
        self._peer_log.emit(self._log.info, "session.release", key=self._key, reason=reason)
        self._outstanding.clear()
        self._cancel_exchange_timer()
        self.state = SessionState.CLOSING
        if self.channel is None or self.channel.close():
            self.channel = None
            self._close()
        # else: ChannelDown(RELEASED) follows once the goodbye is done

    def _close(self) -> None:
        if self.state is SessionState.CLOSED:
            return
        self.state = SessionState.CLOSED
        self._cancel_exchange_timer()
        self._idle.cancel()
        self._on_closed(self)  # first: the channel leaving may let a waiting AARQ for this meter in at once
        channel, self.channel = self.channel, None
        if channel is not None:
            channel.abort()
