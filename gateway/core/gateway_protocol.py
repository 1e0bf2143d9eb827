"""The DLMS gateway protocol (gateway-request E6 / gateway-response E7) beside SAP addressing.

Theory of operation. This layer sits between the HES connections and the router. A wrapper PDU
whose APDU is not a gateway-request passes straight through (SAP addressing, as before). A
gateway-request names a meter by network id and physical device address; the layer asks the
daemon's lookup for that meter's SAP and hands the inner APDU, byte for byte, to the router as
if the HES had sent it to that SAP, on behalf of a *gateway peer*: a stand-in for the HES
connection that wraps every answer in a gateway-response with the request's network id and
address, and the request's wPorts swapped (the gurux client, like the Green Book, sends to the
gateway's wPort 1). There is one gateway peer per (HES connection, network, address, wPort), so
the router treats an association opened by gateway-request exactly like one opened by SAP: one
HES connection owns it, releases and timeouts are the same, and the same data-link rules apply.
An unknown network or meter, or a malformed prefix, gets a DLMS refusal, never silence.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import structlog

from gateway.codec import apdu as apdus
from gateway.codec import gateway as gateway_pdu
from gateway.codec.wrapper import ALL_STATION_WPORT, WrapperPdu
from gateway.core.broadcast import BroadcastRelay
from gateway.core.rejections import aare_rejected
from gateway.core.session import HesPeer
from gateway.loglimit import LogLimiter

log = structlog.get_logger(__name__)

MAX_GATEWAY_PEERS = 256  # per HES connection: meters it addresses by gateway-request at once


class GatewayRefusal(Enum):
    """Why a gateway-request names no meter we relay to."""

    UNKNOWN_NETWORK = "unknown network"
    UNKNOWN_METER = "no registered meter at that address"
    INVALID_ADDRESS = "not a meter address on that network"
    REGISTRATION_REFUSED = "registration refused (bounded)"


# (network id, physical device address, logical device) -> the meter's SAP, or why not
GatewayLookup = Callable[[int, bytes, int], "int | GatewayRefusal"]


class PduSink(Protocol):
    def pdu_from_hes(self, owner: HesPeer, pdu: WrapperPdu) -> None: ...

    def hes_disconnected(self, owner: HesPeer) -> None: ...


@dataclass(eq=False, slots=True)
class GatewayPeer:
    """A HES connection as seen through one gateway-request address: answers go back in E7."""

    owner: HesPeer
    network_id: int
    physical_address: bytes
    gateway_wport: int  # where the HES sent its gateway-requests (the gateway's own logical device)
    peer: str = ""  # the owner's, for logs and per-address limits
    peer_address: str = ""

    def __post_init__(self) -> None:
        self.peer, self.peer_address = self.owner.peer, self.owner.peer_address

    @property
    def addressing(self) -> str:
        return f"gateway:{self.network_id}/{self.physical_address.hex().upper()}"  # network id / address

    def send(self, pdu: WrapperPdu) -> None:
        answer = gateway_pdu.encode(gateway_pdu.GatewayPdu(network_id=self.network_id,
                                                           physical_address=self.physical_address,
                                                           apdu=pdu.apdu, response=True))
        self.owner.send(WrapperPdu(source=self.gateway_wport, destination=pdu.destination, apdu=answer))

    def unsent_bytes(self) -> int | None:
        return self.owner.unsent_bytes()


def _refusal(apdu: bytes) -> bytes:
    """What a request that cannot be relayed gets: a rejected AARE for an AARQ, else an exception-response."""
    if apdus.kind_of(apdu) is apdus.ApduKind.AARQ:
        return aare_rejected(aarq=apdu, transient=False)
    return apdus.exception_response(state_error=apdus.STATE_ERROR_SERVICE_NOT_ALLOWED,
                                    service_error=apdus.SERVICE_ERROR_OPERATION_NOT_POSSIBLE)


class GatewayProtocol:
    """Gateway-requests to meter SAPs, everything else straight to the router."""

    def __init__(self, *, router: PduSink, lookup: GatewayLookup, broadcasts: BroadcastRelay | None = None,
                 log_limit: LogLimiter | None = None, meter_at: Callable[[int], bool] | None = None) -> None:
        self._router = router
        self._lookup = lookup
        # whether a meter holds a SAP: one configured at the all-station wPort before broadcasts existed keeps it
        self._meter_at = meter_at or (lambda _sap: False)
        self._broadcasts = broadcasts
        # id(HES connection) -> its gateway peers by (network, address, wPort); a HesPeer need not be hashable,
        # and each peer holds its owner, so an id is never reused while its entry lives
        self._peers: dict[int, dict[tuple[int, bytes, int], GatewayPeer]] = {}
        self._log_limit = log_limit or LogLimiter()
        self.requests = 0
        self.refusals = 0

    def pdu_from_hes(self, owner: HesPeer, pdu: WrapperPdu) -> None:
        if not gateway_pdu.is_gateway_request(pdu.apdu):
            if pdu.destination == ALL_STATION_WPORT and self._broadcasts is not None and \
                    not self._meter_at(ALL_STATION_WPORT):
                self._broadcasts.send(network_ids=self._broadcasts.all_networks(), client_sap=pdu.source,
                                      apdu=pdu.apdu, answer=functools.partial(self._answer, owner, pdu))
                return
            self._router.pdu_from_hes(owner, pdu)
            return
        self.requests += 1
        try:
            request = gateway_pdu.decode(pdu.apdu)
        except gateway_pdu.GatewayPduError as exc:  # no prefix to answer in: a plain refusal
            self._refuse(owner, pdu, reason=str(exc), answer=_refusal(b""))
            return
        if request.physical_address == gateway_pdu.ALL_STATION_ADDRESS and self._broadcasts is not None:
            self._broadcast_on_one(owner, pdu, request, self._broadcasts)
            return
        target = self._lookup(request.network_id, request.physical_address, pdu.destination)
        if isinstance(target, GatewayRefusal):
            answer = gateway_pdu.response_to(request, _refusal(request.apdu))
            self._refuse(owner, pdu, reason=target.value, answer=answer, network_id=request.network_id)
            return
        peer = self._peer(owner, request, gateway_wport=pdu.destination)
        if peer is None:
            answer = gateway_pdu.response_to(request, _refusal(request.apdu))
            self._refuse(owner, pdu, reason=f"more than {MAX_GATEWAY_PEERS} meters addressed at once", answer=answer)
            return
        self._router.pdu_from_hes(peer, WrapperPdu(source=pdu.source, destination=target, apdu=request.apdu))

    def _broadcast_on_one(self, owner: HesPeer, pdu: WrapperPdu, request: gateway_pdu.GatewayPdu,
                          broadcasts: BroadcastRelay) -> None:
        """A gateway-request to every meter of one network: the gateway's answer comes in a gateway-response."""
        if not broadcasts.knows(request.network_id):
            refusal = gateway_pdu.response_to(request, _refusal(request.apdu))
            self._refuse(owner, pdu, reason=GatewayRefusal.UNKNOWN_NETWORK.value, answer=refusal,
                         network_id=request.network_id)
            return

        def in_gateway_response(apdu: bytes) -> None:
            self._answer(owner, pdu, gateway_pdu.response_to(request, apdu))

        broadcasts.send(network_ids=[request.network_id], client_sap=pdu.source, apdu=request.apdu,
                        answer=in_gateway_response)

    @staticmethod
    def _answer(owner: HesPeer, pdu: WrapperPdu, apdu: bytes) -> None:
        owner.send(WrapperPdu(source=pdu.destination, destination=pdu.source, apdu=apdu))

    def hes_disconnected(self, owner: HesPeer) -> None:
        for peer in self._peers.pop(id(owner), {}).values():
            self._router.hes_disconnected(peer)
        self._router.hes_disconnected(owner)

    def peers_of(self, owner: HesPeer) -> list[GatewayPeer]:
        return list(self._peers.get(id(owner), {}).values())

    def _peer(self, owner: HesPeer, request: gateway_pdu.GatewayPdu, *, gateway_wport: int) -> GatewayPeer | None:
        peers = self._peers.setdefault(id(owner), {})
        key = (request.network_id, request.physical_address, gateway_wport)
        peer = peers.get(key)
        if peer is None:
            if len(peers) >= MAX_GATEWAY_PEERS:
                return None
            peer = GatewayPeer(owner=owner, network_id=request.network_id,
                               physical_address=request.physical_address, gateway_wport=gateway_wport)
            peers[key] = peer
        return peer

    def _refuse(self, owner: HesPeer, pdu: WrapperPdu, *, reason: str, answer: bytes,
                network_id: int | None = None) -> None:
        self.refusals += 1
        self._log_limit.emit(log.warning, "gateway.refused", key=(owner.peer_address, reason), peer=owner.peer,
                             network_id=network_id, reason=reason)
        owner.send(WrapperPdu(source=pdu.destination, destination=pdu.source, apdu=answer))
