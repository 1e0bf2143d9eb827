"""Broadcasts from the head-end (firmware image blocks): sent once per meter network, answered when they have left.

Theory of operation. A HES sends an unconfirmed APDU (e.g. ACTION image_block_transfer, ciphered
under the meters' broadcast key, which the gateway never sees) either to the wrapper's
all-station wPort (every meter network) or in a gateway-request naming one network and the
all-station address. The gateway hands it, untouched, to each selected network's medium (a
serial line sends one UI frame to all stations, when the line is free, leaving relayed exchanges
their share), and once every copy has left it answers the HES with a data-notification *from
the gateway* (source wPort = the all-station wPort, never a meter's SAP): body = structure
{networks sent (unsigned), airtime in ms (double-long-unsigned)}. Nothing is answered on the
meters' behalf; an APDU that cannot be sent anywhere gets an exception-response.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from gateway.codec import apdu as apdus
from gateway.codec import xdlms
from gateway.codec.axdr import Data
from gateway.codec.errors import LocalProtocolError
from gateway.core.rejections import aare_rejected

log = structlog.get_logger(__name__)

BROADCAST_INVOKE_ID = 0  # long-invoke-id-and-priority of the gateway's own notification


class BroadcastMedium(Protocol):
    """A meter network that can carry one APDU to every meter on it."""

    @property
    def name(self) -> str: ...

    def broadcast(self, *, client_sap: int, apdu: bytes, done: Callable[[float | None], None]) -> bool: ...


@dataclass(slots=True)
class _Pending:
    answer: Callable[[bytes], None]
    waiting: int
    sent: int = 0
    airtime_s: float = 0.0
    networks: list[str] = field(default_factory=list)


def sent_notification(*, networks: int, airtime_s: float) -> bytes:
    """The gateway's answer once a broadcast has left: a data-notification, never a meter's answer."""
    body = Data.structure(Data.unsigned(min(networks, 255)), Data.double_long_unsigned(round(airtime_s * 1000)))
    return xdlms.encode_xdlms(xdlms.DataNotification(BROADCAST_INVOKE_ID, None, body))


def refused(service_error: int = apdus.SERVICE_ERROR_OPERATION_NOT_POSSIBLE) -> bytes:
    return apdus.exception_response(state_error=apdus.STATE_ERROR_SERVICE_NOT_ALLOWED, service_error=service_error)


class BroadcastRelay:
    """Sends a HES's broadcast on the networks it names and answers once every copy has left."""

    def __init__(self, *, networks: Mapping[int, BroadcastMedium]) -> None:
        self._networks = networks
        self.broadcasts = 0
        self.refusals = 0

    def all_networks(self) -> list[int]:
        return sorted(self._networks)

    def knows(self, network_id: int) -> bool:
        return network_id in self._networks

    def send(self, *, network_ids: Sequence[int], client_sap: int, apdu: bytes,
             answer: Callable[[bytes], None]) -> None:
        """Broadcast ``apdu`` on each network; ``answer`` gets the gateway's notification or a refusal."""
        if apdus.kind_of(apdu) in (apdus.ApduKind.AARQ, apdus.ApduKind.RLRQ):  # an association is with one meter
            self.refusals += 1
            answer(aare_rejected(aarq=apdu, transient=False) if apdus.kind_of(apdu) is apdus.ApduKind.AARQ
                   else refused())
            return
        pending = _Pending(answer=answer, waiting=0)
        for network_id in network_ids:
            medium = self._networks[network_id]
            try:
                accepted = medium.broadcast(client_sap=client_sap, apdu=apdu,
                                            done=functools.partial(self._left, pending, medium.name))
            except LocalProtocolError:  # longer than one frame carries: refused whole, on no network
                self.refusals += 1
                answer(refused(apdus.SERVICE_ERROR_PDU_TOO_LONG))
                return
            if accepted:
                pending.waiting += 1
        if pending.waiting == 0:
            self.refusals += 1
            answer(refused())  # every network down or full: nothing was sent
            return
        self.broadcasts += 1

    def _left(self, pending: _Pending, network: str, airtime: float | None) -> None:
        pending.waiting -= 1
        if airtime is not None:
            pending.sent += 1
            pending.airtime_s += airtime
            pending.networks.append(network)
        if pending.waiting == 0:
            log.debug("broadcast.left", networks=pending.networks, airtime_ms=round(pending.airtime_s * 1000, 1))
            pending.answer(sent_notification(networks=pending.sent, airtime_s=pending.airtime_s) if pending.sent
                           else refused())
