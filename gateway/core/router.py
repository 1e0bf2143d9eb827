"""Routes wrapper PDUs from HES connections to meter sessions by destination wPort (server SAP).

SAP 1 is the gateway's own management logical device; every other registered SAP is one meter.
An unknown SAP gets a DLMS answer (a rejected AARE, or an exception-response), never silence.
One meter association (meter SAP, client SAP) belongs to one HES connection at a time.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog

from gateway.codec import acse
from gateway.codec import apdu as apdus
from gateway.codec.apdu import ApduKind
from gateway.codec.hdlc import HdlcAddress, HdlcClientLink, HdlcParameters, LinkSettings, client_sap_fits
from gateway.codec.wrapper import WrapperPdu
from gateway.config import LinkConfig, RelayConfig
from gateway.core.rejections import aare_rejected
from gateway.core.session import HesPeer, MeterObserver, MeterSession, SessionState
from gateway.link.line import MeterLine
from gateway.loglimit import LogLimiter

log = structlog.get_logger(__name__)

MANAGEMENT_SAP = 1  # DLMS UA Green Book: the management logical device


@dataclass(frozen=True, slots=True)
class MeterRoute:
    """Where a meter SAP lives on the meter network."""

    sap: int
    line: str
    physical_address: int
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
    line: str
    server: HdlcAddress
    pdus: list[WrapperPdu]
    timer: asyncio.TimerHandle


def link_settings(config: LinkConfig) -> LinkSettings:
    """HDLC settings for links on a line, from its configuration."""
    return LinkSettings(
        parameters=HdlcParameters(
            max_info_tx=config.max_info,
            max_info_rx=config.max_info,
            window_tx=config.window,
            window_rx=config.window,
        ),
        response_timeout_s=config.response_timeout_s,
        max_retries=config.max_retries,
    )


class Router:
    """Destination wPort -> management logical device or meter session."""

    def __init__(
        self,
        *,
        lookup: RouteLookup,
        lines: Mapping[str, MeterLine],
        relay: RelayConfig,
        management: ApduServer | None = None,
        observer: MeterObserver | None = None,
    ) -> None:
        self.lookup = lookup
        self.lines = lines
        self.sessions: dict[tuple[int, int], MeterSession] = {}  # (meter SAP, client SAP) -> session
        self.management_owners: dict[int, HesPeer] = {}  # client SAP -> the HES associated with SAP 1
        self.relay = relay
        self._management = management
        self._observer = observer
        self._settings = {name: link_settings(line.config) for name, line in lines.items()}
        self.rejections = 0
        self.max_associations_per_peer: int | None = None  # per HES address (wan.max_associations_per_peer)
        self.on_subscriber: Callable[[], None] | None = None  # the management client passed HLS: it takes pushes
        self._drained: asyncio.Event | None = None
        self._log_limit = LogLimiter()
        self._waiting: dict[tuple[int, int], _Waiting] = {}  # AARQs waiting for a busy data link
        for name, line in lines.items():
            line.on_link_released(functools.partial(self._link_released, name))

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
            if session.owner is owner:
                if session.state is SessionState.CLOSING and apdus.kind_of(pdu.apdu) is ApduKind.AARQ:
                    # released and re-associating at once: wait for the DISC to finish
                    self._wait_for_link(owner, pdu, line=session.line.name, server=session.server_address)
                    return
                session.request(pdu.apdu)
                return
            self._reject(owner, pdu, "meter association held by another HES connection", transient=True)
            return
        if meter_sap == MANAGEMENT_SAP and self._management is not None:
            self._to_management(owner, pdu, self._management)
            return
        route = self.lookup(meter_sap)
        if route is None:
            self._reject(owner, pdu, "unknown SAP", transient=False)
            return
        if apdus.kind_of(pdu.apdu) is not ApduKind.AARQ:
            self._reject(owner, pdu, "no association: send an AARQ first", transient=False)
            return
        if not client_sap_fits(client_sap):
            self._reject(owner, pdu, "client SAP does not fit an HDLC client address", transient=False)
            return
        line = self.lines[route.line]
        if not line.is_open:
            self._reject(owner, pdu, "meter line down", transient=True)
            return
        server = HdlcAddress.server(logical_device=route.logical_device, physical_address=route.physical_address)
        if line.has_link(client_sap=client_sap, upper=server.upper, lower=server.lower):
            # the gateway's own short link (identity read, ping, scan) or a data link still closing:
            # wait for it to be released rather than refuse at once
            self._wait_for_link(owner, pdu, line=route.line, server=server)
            return
        if self.max_associations_per_peer is not None:
            held = sum(1 for s in self.sessions.values() if s.owner.peer_address == owner.peer_address)
            if held >= self.max_associations_per_peer:
                self._reject(owner, pdu, f"{held} associations from this HES address already", transient=True)
                return
        session = MeterSession(
            owner=owner,
            client_sap=client_sap,
            meter_sap=meter_sap,
            server_address=server,
            link=HdlcClientLink(client_sap=client_sap, server_address=server, settings=self._settings[route.line]),
            line=line,
            exchange_timeout_s=self.relay.exchange_timeout_s,
            # the HDLC inactivity timeout of the line, or the relay's association limit, whichever is first
            idle_timeout_s=min(self.relay.association_idle_s, line.config.inactivity_timeout_s),
            on_closed=self._session_closed,
            peer_log=self._log_limit,
            observer=self._observer,
        )
        self.sessions[(meter_sap, client_sap)] = session
        session.start()
        session.request(pdu.apdu)

    def _wait_for_link(self, owner: HesPeer, pdu: WrapperPdu, *, line: str, server: HdlcAddress) -> None:
        key = (pdu.destination, pdu.source)
        timer = asyncio.get_running_loop().call_later(self.relay.exchange_timeout_s, self._waited_too_long, key)
        self._waiting[key] = _Waiting(owner=owner, line=line, server=server, pdus=[pdu], timer=timer)

    def _link_released(self, line: str, client_sap: int, upper: int, lower: int | None) -> None:
        for key, waiting in list(self._waiting.items()):
            if (waiting.line, key[1], waiting.server.upper, waiting.server.lower) == (line, client_sap, upper, lower):
                del self._waiting[key]
                waiting.timer.cancel()
                for pdu in waiting.pdus:  # replayed in order: the AARQ first opens the session
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
        if not self.sessions and self._drained is not None:
            self._drained.set()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every session has closed (their DISC answered); False on timeout."""
        if not self.sessions:
            return True
        self._drained = asyncio.Event()
        try:
            async with asyncio.timeout(timeout_s):
                await self._drained.wait()
        except TimeoutError:
            return False
        finally:
            self._drained = None
        return True

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
