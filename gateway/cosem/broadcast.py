"""Broadcast APDUs a logical device accepts outside any association, and never answers.

What a head-end sends to every meter at once (Green Book 9.2.7.2.2 and 9.5): general-glo-ciphering
(DB), which carries the sender's system title (no AARQ told the meter, and the IV needs it),
around protected content whose security control has the key-set bit (broadcast), authentication
and usually encryption, ciphered with the global broadcast key (GBEK) and authenticated with the
authentication key (AK). Inside: an unconfirmed ACTION-Request-Normal (service class 0). It runs
with the access rights of the client SAP in the frame's source address, as in that client's
pre-established association. A sender's invocation counters must go up, as in unicast.

Everything else is dropped and counted: a broadcast is never answered, not even with an error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from gateway.codec import xdlms
from gateway.codec.acse import APPLICATION_CONTEXT_LN_CIPHERING, Mechanism
from gateway.codec.errors import RemoteProtocolError
from gateway.codec.security import SUITE_MASK, SecurityContext, SecurityControl, decode_general_glo, unprotect
from gateway.codec.xdlms import ActionResult
from gateway.cosem.objects import AssociationInfo, AssociationStatus, CosemObject

_DLMS_VERSION = 6


@dataclass(frozen=True, slots=True)
class BroadcastPolicy:
    """Who may broadcast to this device: one client SAP, and the GBEK (as block cipher key) with the AK."""

    client_sap: int
    security: SecurityContext


class BroadcastRejection(Enum):
    """Why a broadcast APDU was dropped."""

    CLIENT = "client"  # from a client SAP with no broadcast policy
    NOT_PROTECTED = "not-protected"  # not general-glo-ciphering, or not authenticated with the broadcast key
    DECIPHERING = "deciphering"  # bad GCM tag or header
    REPLAYED = "replayed"  # invocation counter not above the sender's last one
    NOT_UNCONFIRMED_ACTION = "not-unconfirmed-action"  # anything but an unconfirmed ACTION- or SET-Request-Normal
    REFUSED = "refused"  # the object refused the method or the value (its result was not success)


@dataclass(slots=True)
class BroadcastCounters:
    """What broadcasts did: accepted ones and drops by reason."""

    accepted: int = 0
    dropped: Counter[BroadcastRejection] = field(default_factory=Counter)


class _BroadcastContext:
    """The request context of a broadcast: the client's pre-established association, already open."""

    def __init__(self, *, client_sap: int, server_sap: int, objects: Sequence[CosemObject]) -> None:
        self._client_sap = client_sap
        self._server_sap = server_sap
        self._objects = objects

    @property
    def client_sap(self) -> int:
        return self._client_sap

    def association_info(self) -> AssociationInfo:
        return AssociationInfo(
            client_sap=self._client_sap,
            server_sap=self._server_sap,
            application_context=APPLICATION_CONTEXT_LN_CIPHERING,
            mechanism=int(Mechanism.NONE),
            conformance=0,
            client_max_receive_pdu_size=0,
            server_max_receive_pdu_size=0,
            dlms_version=_DLMS_VERSION,
            status=AssociationStatus.ASSOCIATED,
        )

    def visible_objects(self) -> Sequence[CosemObject]:
        return [item for item in self._objects if item.visible_to(self._client_sap)]

    def reply_to_hls_authentication(self, f_stoc: bytes) -> bytes | None:
        return None  # no HLS without an association


def _broadcast_protected(security_control: int) -> bool:
    """Suite 0, no compression, authenticated, under the broadcast key."""
    wanted = SecurityControl.AUTHENTICATION | SecurityControl.BROADCAST_KEY
    unsupported = SUITE_MASK | SecurityControl.COMPRESSION
    return security_control & wanted == wanted and not security_control & unsupported


class BroadcastReceiver:
    """Opens, checks and runs broadcast APDUs for one logical device."""

    def __init__(self, *, policy: BroadcastPolicy, objects: Sequence[CosemObject], server_sap: int) -> None:
        self._policy = policy
        self._by_name = {item.logical_name: item for item in objects}
        self._context = _BroadcastContext(client_sap=policy.client_sap, server_sap=server_sap, objects=objects)
        self._last_counter: dict[bytes, int] = {}  # sender system title -> last invocation counter accepted
        self.counters = BroadcastCounters()

    def receive(self, *, client_sap: int, apdu: bytes) -> BroadcastRejection | None:
        """Run one broadcast APDU; None when it ran, else why it was dropped (and counted)."""
        rejection = self._run(client_sap, apdu)
        if rejection is None:
            self.counters.accepted += 1
        else:
            self.counters.dropped[rejection] += 1
        return rejection

    def _run(self, client_sap: int, apdu: bytes) -> BroadcastRejection | None:
        if client_sap != self._policy.client_sap:
            return BroadcastRejection.CLIENT
        try:
            sender, protected = decode_general_glo(apdu)
        except RemoteProtocolError:
            return BroadcastRejection.NOT_PROTECTED
        if not protected or not _broadcast_protected(protected[0]):
            return BroadcastRejection.NOT_PROTECTED
        keys = self._policy.security
        try:
            _control, counter, plain = unprotect(
                system_title=sender,
                block_cipher_key=keys.block_cipher_key,
                authentication_key=keys.authentication_key,
                protected=protected,
            )
        except RemoteProtocolError:
            return BroadcastRejection.DECIPHERING
        if counter <= self._last_counter.get(sender, -1):
            return BroadcastRejection.REPLAYED
        self._last_counter[sender] = counter
        try:
            request = xdlms.decode_xdlms(plain)
        except RemoteProtocolError:
            return BroadcastRejection.NOT_UNCONFIRMED_ACTION
        if isinstance(request, xdlms.SetRequestNormal) and not xdlms.is_confirmed(request.invoke_id):
            return self._set(request)
        if not isinstance(request, xdlms.ActionRequestNormal) or xdlms.is_confirmed(request.invoke_id):
            return BroadcastRejection.NOT_UNCONFIRMED_ACTION
        method = request.method
        item = self._by_name.get(method.logical_name)
        if item is None or item.class_id != method.class_id:
            return BroadcastRejection.REFUSED
        result, _ = item.action(method.method_id, request.parameters, self._context)
        return None if result is ActionResult.SUCCESS else BroadcastRejection.REFUSED

    def _set(self, request: xdlms.SetRequestNormal) -> BroadcastRejection | None:
        attribute = request.attribute
        item = self._by_name.get(attribute.logical_name)
        if item is None or item.class_id != attribute.class_id or request.access is not None:
            return BroadcastRejection.REFUSED
        result = item.set(attribute.attribute_id, request.value, self._context)
        return None if result is xdlms.DataAccessResult.SUCCESS else BroadcastRejection.REFUSED
