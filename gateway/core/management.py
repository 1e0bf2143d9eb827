"""The gateway's own management logical device (SAP 1): how a HES learns the meters' SAPs.

DLMS Direct Connect: "the HES obtains the list of every SAP from the concentrator, then iterates
over each logical device and sets up an association with it." The list is the SAP assignment
object (IC 17, 0.0.41.0.0.255), always read live from the registry. The public client (16) may
read; only the management client, authenticated with HLS-GMAC under the gateway's OWN keys,
may change a mapping with connect_logical_device.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import structlog

from gateway.codec.acse import Conformance, Mechanism
from gateway.codec.axdr import Data
from gateway.codec.obis import obis
from gateway.codec.security import SecurityContext
from gateway.codec.xdlms import ActionResult
from gateway.cosem.association import ClientPolicy
from gateway.cosem.association_ln import AssociationLN
from gateway.cosem.objects import AssociationStatus, Clock, DataObject, SapAssignment, access
from gateway.cosem.server import LogicalDevice
from gateway.keys import GatewayKeys
from gateway.registry.counters import ReservedCounter
from gateway.registry.store import MANAGEMENT_SAP, PUBLIC_CLIENT_SAP, MeterRegistry, RegistryError

log = structlog.get_logger(__name__)

LOGICAL_DEVICE_NAME = obis("0.0.42.0.0.255")
CLOCK = obis("0.0.1.0.0.255")
SAP_ASSIGNMENT = obis("0.0.41.0.0.255")
INVOCATION_COUNTER = obis("0.0.43.1.0.255")  # security setup 0: the counter the management client uses next
MAX_PDU = 1024  # what we receive; answers larger than the client's PDU go in GET blocks

PUBLIC_CONFORMANCE = (Conformance.GET | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ | Conformance.SELECTIVE_ACCESS
                      | Conformance.MULTIPLE_REFERENCES)
MANAGEMENT_CONFORMANCE = PUBLIC_CONFORMANCE | Conformance.ACTION | Conformance.GENERAL_PROTECTION


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ManagementDevice:
    """SAP 1: builds the logical device and keeps its invocation counter durable."""

    def __init__(self, *, name: bytes, registry: MeterRegistry, keys: GatewayKeys | None, management_sap: int,
                 counter: ReservedCounter | None, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.name = name
        self._registry = registry
        self._counter = counter
        self._management_sap = management_sap
        public_read = access(read=(1, 2))
        rights = {PUBLIC_CLIENT_SAP: public_read, management_sap: public_read}
        device: LogicalDevice | None = None

        def next_management_counter() -> Data:
            assert device is not None
            return Data.double_long_unsigned(device.expected_client_counter(management_sap))

        objects = [
            DataObject(logical_name=LOGICAL_DEVICE_NAME, rights=rights, value=Data.octet_string(name)),
            Clock(logical_name=CLOCK, rights={PUBLIC_CLIENT_SAP: access(read=range(1, 10)),
                                              management_sap: access(read=range(1, 10))}, clock=clock),
            SapAssignment(
                logical_name=SAP_ASSIGNMENT,
                rights={PUBLIC_CLIENT_SAP: public_read, management_sap: access(read=(1, 2), methods=(1,))},
                assignments=self.assignments,
                connect_logical_device=self._connect_logical_device,
            ),
            AssociationLN(rights={
                PUBLIC_CLIENT_SAP: access(read=(1, 2, 3, 4, 5, 6, 8)),
                management_sap: access(read=(1, 2, 3, 4, 5, 6, 8), methods=(1,)),
            }),
        ]
        clients = [ClientPolicy(client_sap=PUBLIC_CLIENT_SAP, mechanism=Mechanism.NONE, security=None,
                                require_ciphering=False, conformance=int(PUBLIC_CONFORMANCE))]
        if keys is not None:
            objects.append(DataObject(logical_name=INVOCATION_COUNTER, rights=rights, value=next_management_counter))
            security = SecurityContext(system_title=keys.system_title, block_cipher_key=keys.block_cipher_key,
                                       authentication_key=keys.authentication_key)
            clients.append(ClientPolicy(client_sap=management_sap, mechanism=Mechanism.HLS_GMAC, security=security,
                                        require_ciphering=True, conformance=int(MANAGEMENT_CONFORMANCE)))
        device = LogicalDevice(name=name, objects=objects, clients=clients, max_receive_pdu_size=MAX_PDU,
                               clock=clock, server_sap=MANAGEMENT_SAP,
                               invocation_counter=counter.start if counter is not None else 0)
        self.device = device

    def assignments(self) -> list[tuple[int, bytes]]:
        """SAP 1 (the gateway itself) and every live meter."""
        return [(MANAGEMENT_SAP, self.name), *self._registry.sap_assignment()]

    def handle(self, *, client_sap: int, apdu: bytes) -> bytes | None:
        answer = self.device.handle(client_sap=client_sap, apdu=apdu)
        if self._counter is not None:
            self._counter.ensure(self.device.invocation_counter)  # durable before the next one is spent
        return answer

    def release(self, *, client_sap: int) -> None:
        self.device.release(client_sap=client_sap)

    def takes_pushes(self, *, client_sap: int) -> bool:
        """True once the management client has passed HLS-GMAC with the gateway's own keys (pushes are its)."""
        if client_sap != self._management_sap:
            return False
        association = self.device.association(client_sap)
        return (association is not None and association.policy.mechanism is Mechanism.HLS_GMAC
                and association.status is AssociationStatus.ASSOCIATED)

    def _connect_logical_device(self, sap: int, name: bytes) -> ActionResult:
        """Blue Book IC 17 method 1: connect the named logical device to ``sap``; SAP 0 disconnects it."""
        meter = self._registry.by_name(name)
        if meter is None:
            return ActionResult.OBJECT_UNAVAILABLE  # a name we have never seen on the meter network
        try:
            if sap == 0:
                removed = self._registry.remove(meter.sap)
                log.info("management.sap_removed", sap=removed.sap, meter=removed.name_text)
                return ActionResult.SUCCESS
            if sap == MANAGEMENT_SAP:
                return ActionResult.READ_WRITE_DENIED
            moved = self._registry.change_sap(meter.sap, sap)
            log.info("management.sap_assigned", sap=moved.sap, meter=moved.name_text)
            return ActionResult.SUCCESS
        except RegistryError as exc:
            log.warning("management.sap_refused", sap=sap, reason=str(exc))
            return ActionResult.OTHER_REASON
