"""Routes wrapper PDUs from HES connections to meter sessions by destination wPort (server SAP).

SAP 1 is the gateway's own management logical device; every other registered SAP is one meter.
An unknown SAP gets a DLMS answer (a rejected AARE, or an exception-response), never silence.
One meter association (meter SAP, client SAP) belongs to one HES connection at a time.

An AARQ that finds its meter's data link busy (the gateway's own identity read, or the
association's previous link still saying goodbye) waits for the medium to release it, up to the
exchange timeout, with the PDUs the HES pipelines behind it; then it proceeds, or gets a
transient rejection. The router knows meters only through the MeterMedium interface and time
only through the Scheduler it is handed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog

from gateway.codec import acse
from gateway.codec import apdu as apdus
from gateway.codec.apdu import ApduKind
from gateway.codec.wrapper import WrapperPdu
from gateway.config import RelayConfig
from gateway.core.channel import Association, ChannelError, MeterAddress, MeterMedium
from gateway.core.clock import Scheduler, TimerHandle
from gateway.core.rejections import aare_rejected
from gateway.core.session import HesPeer, MeterObserver, MeterSession, SessionState
from gateway.loglimit import LogLimiter

log = structlog.get_logger(__name__)

MANAGEMENT_SAP = 1  # DLMS UA Green Book: the management logical device


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterRoute:
    """Where a meter SAP lives: which meter network, and the meter's address on that medium."""

    sap: int
    network: str
    address: MeterAddress
    logical_device: int = 1


class ApduServer(Protocol):
    """A logical device the gateway answers for itself (SAP 1)."""

    def handle(self, *, client_sap: int, apdu: bytes) -> bytes | None: ...

    def release(self, *, client_sap: int) -> None: ...

    def takes_pushes(self, *, client_sap: int) -> bool: ...


RouteLookup = Callable[[int], "MeterRoute | None"]


MAX_WAITING_PDUS = 8  # PDUs a HES may send behind an AARQ that waits for the data link


@dataclass(slots=True)
class _Waiting:
    owner: HesPeer
    network: str
    association: Association
    pdus: list[WrapperPdu]
    timer: TimerHandle


class Router:
    """Destination wPort -> management logical device or meter session."""

    def __init__(
        self,
        *,
        lookup: RouteLookup,
        media: Mapping[str, MeterMedium],
        relay: RelayConfig,
        scheduler: Scheduler,
        management: ApduServer | None = None,
        observer: MeterObserver | None = None,
    ) -> None:
        self.lookup = lookup
        self.media = media
        self.sessions: dict[tuple[int, int], MeterSession] = {}  # (meter SAP, client SAP) -> session
        self.management_owners: dict[int, HesPeer] = {}  # client SAP -> the HES associated with SAP 1
        self.relay = relay
        self._scheduler = scheduler
        self._management = management
        self._observer = observer
        self.rejections = 0
        self.max_associations_per_peer: int | None = None  # per HES address (wan.max_associations_per_peer)
        self.on_subscriber: Callable[[], None] | None = None  # the management client passed HLS: it takes pushes
        self.on_drained: Callable[[], None] | None = None  # the last session closed
        self._log_limit = LogLimiter()
        self._waiting: dict[tuple[int, int], _Waiting] = {}  # AARQs waiting for a busy data link
        for name, medium in media.items():
            medium.on_released(functools.partial(self._link_released, name))

    def pdu_from_hes(self, owner: HesPeer, pdu: WrapperPdu) -> None:
        """Handle one wrapper PDU from a HES connection."""
        meter_sap, client_sap = pdu.destination, pdu.source
        waiting = self._waiting.get((meter_sap, client_sap))
        if waiting is not None:  # its AARQ waits for the data link: keep the order behind it
            if waiting.owner is owner and len(waiting.pdus) < MAX_WAITING_PDUS:
                waiting.pdus.append(pdu)
            else:
                self._reject(owner, pdu, "meter data link busy", transient=True)
            return
        session = self.sessions.get((meter_sap, client_sap))
        if session is not None:
            if session.state is SessionState.CLOSING and apdus.kind_of(pdu.apdu) is ApduKind.AARQ:
                # released, or its HES connection dropped, and still saying goodbye on the medium: whoever
                # associates now (the same connection, or a HES that reconnected at once) waits for it
                self._wait_for_link(owner, pdu, network=session.network, association=session.association)
                return
            if session.owner is owner:
                session.request(pdu.apdu)
                return
            self._reject(owner, pdu, "meter association held by another HES connection", transient=True)
            return
        if meter_sap == MANAGEMENT_SAP and self._management is not None:
            self._to_management(owner, pdu, self._management)
            return
        route = self.lookup(meter_sap)
        if route is None or route.network not in self.media:
            self._reject(owner, pdu, "unknown SAP", transient=False)
            return
        if apdus.kind_of(pdu.apdu) is not ApduKind.AARQ:
            self._reject(owner, pdu, "no association: send an AARQ first", transient=False)
            return
        medium = self.media[route.network]
        if not medium.usable():
            self._reject(owner, pdu, "meter network down", transient=True)
            return
        if medium.congested():  # a bounded queue: a clear refusal now beats an exchange timeout later
            self._reject(owner, pdu, "meter network congested", transient=True)
            return
        association = Association(client_sap=client_sap, logical_device=route.logical_device, meter=route.address)
        if medium.busy(association):
            # the gateway's own short link (identity read, ping, scan) or a data link still closing:
            # wait for it to be released rather than refuse at once
            self._wait_for_link(owner, pdu, network=route.network, association=association)
            return
        if self.max_associations_per_peer is not None:
            held = sum(1 for s in self.sessions.values() if s.owner.peer_address == owner.peer_address)
            if held >= self.max_associations_per_peer:
                self._reject(owner, pdu, f"{held} associations from this HES address already", transient=True)
                return
        session = MeterSession(
            owner=owner,
            meter_sap=meter_sap,
            association=association,
            medium=medium,
            scheduler=self._scheduler,
            exchange_timeout_s=self.relay.exchange_timeout_s,
            priority_classes=frozenset(self.relay.priority_classes),
            # the meter's own idle limit (HDLC inactivity timeout) or the relay's, whichever is first
            idle_timeout_s=min(self.relay.association_idle_s, medium.idle_timeout_s),
            on_closed=self._session_closed,
            peer_log=self._log_limit,
            observer=self._observer,
        )
        try:
            session.start()
        except ChannelError as exc:
            self._reject(owner, pdu, f"the meter network cannot carry it: {exc}", transient=False)
            return
        self.sessions[(meter_sap, client_sap)] = session
        session.request(pdu.apdu)

    def _wait_for_link(self, owner: HesPeer, pdu: WrapperPdu, *, network: str, association: Association) -> None:
        key = (pdu.destination, pdu.source)
        when = self._scheduler.time() + self.relay.exchange_timeout_s
        timer = self._scheduler.call_at(when, functools.partial(self._waited_too_long, key))
        self._waiting[key] = _Waiting(owner=owner, network=network, association=association, pdus=[pdu], timer=timer)

    def _link_released(self, network: str, association: Association) -> None:
        for key, waiting in list(self._waiting.items()):
            # one data link per meter: any link to that meter leaving may let a waiting AARQ in
            same_meter = (waiting.network, waiting.association.meter) == (network, association.meter)
            if same_meter and key not in self.sessions:
                self._replay(key)  # (a session still closing replays when it has closed)

    def _replay(self, key: tuple[int, int]) -> None:
        waiting = self._waiting.pop(key)
        waiting.timer.cancel()
        for pdu in waiting.pdus:  # in order: the AARQ first opens the session
            self.pdu_from_hes(waiting.owner, pdu)

    def _waited_too_long(self, key: tuple[int, int]) -> None:
        waiting = self._waiting.pop(key, None)
        if waiting is not None:
            for pdu in waiting.pdus:
                self._reject(waiting.owner, pdu, "meter data link still busy", transient=True)

    def hes_disconnected(self, owner: HesPeer) -> None:
        """A HES connection closed: release every association it held."""
        for key, waiting in list(self._waiting.items()):
            if waiting.owner is owner:
                waiting.timer.cancel()
                del self._waiting[key]
        for session in [s for s in self.sessions.values() if s.owner is owner]:
            session.hes_gone()
        for client_sap, holder in list(self.management_owners.items()):
            if holder is owner and self._management is not None:
                self._management.release(client_sap=client_sap)
                del self.management_owners[client_sap]

    def _to_management(self, owner: HesPeer, pdu: WrapperPdu, management: ApduServer) -> None:
        """SAP 1: one association per client SAP at a time, like a meter; held only once accepted."""
        client_sap = pdu.source
        holder = self.management_owners.get(client_sap)
        if holder is not None and holder is not owner:
            self._reject(owner, pdu, "management association held by another HES connection", transient=True)
            return
        subscribed = holder is not None and management.takes_pushes(client_sap=client_sap)
        answer = management.handle(client_sap=client_sap, apdu=pdu.apdu)
        if answer is None:
            return
        if apdus.kind_of(pdu.apdu) is ApduKind.AARQ and acse.association_accepted(answer):
            self.management_owners[client_sap] = owner  # a refused AARQ holds nothing (nor drops what was held)
        elif apdus.kind_of(answer) is ApduKind.RLRE:
            self.management_owners.pop(client_sap, None)
        owner.send(pdu.reply(answer))
        if (not subscribed and client_sap in self.management_owners and management.takes_pushes(client_sap=client_sap)
                and self.on_subscriber is not None):
            self.on_subscriber()  # after the answer: the HES learns it is associated before any push

    def push_subscriber(self) -> HesPeer | None:
        """The HES connection entitled to pushes: the management client, association accepted and authenticated."""
        if self._management is None:
            return None
        for client_sap, holder in self.management_owners.items():
            if self._management.takes_pushes(client_sap=client_sap):
                return holder
        return None

    def _session_closed(self, session: MeterSession) -> None:
        key = (session.meter_sap, session.client_sap)
        if self.sessions.get(key) is session:
            del self.sessions[key]
        waiting = self._waiting.get(key)
        if waiting is not None and not self.media[waiting.network].busy(waiting.association):
            self._replay(key)  # its link left before the session did
        if not self.sessions and self.on_drained is not None:
            self.on_drained()

    def _reject(self, owner: HesPeer, pdu: WrapperPdu, reason: str, *, transient: bool) -> None:
        self.rejections += 1
        # one line per HES address and reason per second, a budget for all: a flood cannot fill the journal
        self._log_limit.emit(log.warning, "router.reject", key=(owner.peer_address, reason), peer=owner.peer,
                             meter_sap=pdu.destination, client_sap=pdu.source, reason=reason,
                             tag=pdu.apdu[:1].hex())
        if apdus.kind_of(pdu.apdu) is ApduKind.AARQ:
            answer = aare_rejected(aarq=pdu.apdu, transient=transient)
        else:
            answer = apdus.exception_response(
                state_error=apdus.STATE_ERROR_SERVICE_NOT_ALLOWED,
                service_error=apdus.SERVICE_ERROR_OPERATION_NOT_POSSIBLE,
            )
        owner.send(pdu.reply(answer))
