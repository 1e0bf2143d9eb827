"""The application layer of one COSEM logical device: one request APDU in, its answer out.

APDU-level only (no HDLC, no TCP). ``handle`` never raises for anything a client sends:
an AARQ always gets an AARE, a service request gets its response, and garbage gets an
exception-response (Green Book 9.5). Our choices where the Green Book leaves room:

- a plain GET/SET/ACTION on an association that requires ciphering, a ciphered one on an
  association without keys, or any request outside an association: exception-response
  service-not-allowed / operation-not-possible;
- a bad GCM tag or header: exception-response deciphering-error; a client invocation
  counter not above the last one accepted: invocation-counter-error (with the lowest
  counter we would accept);
- while HLS is pending, every request but reply_to_HLS_authentication gets its own
  response with scope-of-access-violated;
- an accepted AARQ from a client SAP replaces its association (the data link under it may
  have been reset without us hearing of it); a refused one leaves it alone.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.codec import axdr, xdlms
from gateway.codec.acse import Conformance, Rlre, decode_rlrq, encode_rlre
from gateway.codec.errors import LocalProtocolError, RemoteProtocolError
from gateway.codec.security import (
    decode_ciphered_apdu,
    decode_general_glo,
    encode_ciphered_apdu,
    encode_general_glo,
)
from gateway.codec.xdlms import ActionResult, DataAccessResult, ExceptionResponse
from gateway.cosem.association import (
    GLO_INITIATE_REQUEST,
    GLO_INITIATE_RESPONSE,
    Association,
    AssociationAcceptor,
    ClientPolicy,
    ServerCounters,
    initiate_response,
)
from gateway.cosem.broadcast import BroadcastPolicy, BroadcastReceiver, BroadcastRejection
from gateway.cosem.ciphering import GLO_PLAIN_TAG, CipherRejectedError, CipherRejection, CipherState, glo_response_tag
from gateway.cosem.objects import AssociationStatus, CosemObject

AARQ, RLRQ = 0x60, 0x62  # Green Book 9.5 tags
GENERAL_GLO_CIPHERING = 0xDB
# Green Book 9.5 EXCEPTION-Response: state-error and service-error.
SERVICE_NOT_ALLOWED, SERVICE_UNKNOWN = 1, 2
OPERATION_NOT_POSSIBLE, SERVICE_NOT_SUPPORTED, OTHER_REASON, PDU_TOO_LONG, DECIPHERING_ERROR = 1, 2, 3, 4, 5
INVOCATION_COUNTER_ERROR = xdlms.INVOCATION_COUNTER_ERROR
# Worst-case octets around a protected APDU: tag, 3-octet length, SC, IC, 12-octet GCM tag;
# general-glo adds the length-prefixed 8-octet system title (Green Book 9.5).
GLO_OVERHEAD = 1 + 3 + 1 + 4 + 12
GENERAL_GLO_OVERHEAD = GLO_OVERHEAD + 1 + 8
# Get-Response-With-Datablock header: tag, choice, invoke id, last-block, block-number(4),
# result choice, 3-octet raw-data length.
BLOCK_HEADER = 1 + 1 + 1 + 1 + 4 + 1 + 3
RLRE_NORMAL = 0  # Green Book 9.4.2: release-response-reason normal
HLS_ACTION = (15, bytes([0, 0, 40, 0, 0, 255]), 1)  # reply_to_HLS_authentication of the current association


@dataclass(slots=True)
class _LongGet:
    """A GET answer sent in blocks: the encoded data and the last block number sent."""

    raw: bytes
    block_size: int
    block_number: int


class LogicalDevice:
    """The application layer of one logical device: associations, ciphering, GET/SET/ACTION."""

    def __init__(
        self,
        *,
        name: bytes,
        objects: Sequence[CosemObject],
        clients: Sequence[ClientPolicy],
        max_receive_pdu_size: int = 1024,
        clock: Callable[[], datetime.datetime] | None = None,
        server_sap: int = 1,
        invocation_counter: int = 0,
        challenge: Callable[[int], bytes] = secrets.token_bytes,
        broadcast: BroadcastPolicy | None = None,
    ) -> None:
        self.name = bytes(name)
        self.objects = tuple(objects)
        self.max_receive_pdu_size = max_receive_pdu_size
        self.counters = ServerCounters()
        self._clock = clock
        self._by_name = {item.logical_name: item for item in self.objects}
        self._cipher_state = CipherState(invocation_counter=invocation_counter)
        self._acceptor = AssociationAcceptor(
            policies=clients,
            max_receive_pdu_size=max_receive_pdu_size,
            server_sap=server_sap,
            objects=self.objects,
            cipher_state=self._cipher_state,
            counters=self.counters,
            challenge=challenge,
        )
        self._associations: dict[int, Association] = {}
        self._long_gets: dict[int, _LongGet] = {}
        self.broadcasts: BroadcastReceiver | None = None
        if broadcast is not None:
            self.broadcasts = BroadcastReceiver(policy=broadcast, objects=self.objects, server_sap=server_sap)

    @property
    def invocation_counter(self) -> int:
        """The last invocation counter we used (never reused within a run)."""
        return self._cipher_state.invocation_counter

    def expected_client_counter(self, client_sap: int) -> int:
        """The lowest invocation counter we would accept next from this client."""
        return self._cipher_state.expected_client_counter(client_sap)

    def association(self, client_sap: int) -> Association | None:
        return self._associations.get(client_sap)

    def handle(self, *, client_sap: int, apdu: bytes) -> bytes | None:
        """One request APDU in, the answer out."""
        try:
            return self._handle(client_sap, apdu)
        except (RemoteProtocolError, LocalProtocolError):
            return self._exception(SERVICE_NOT_ALLOWED, OTHER_REASON)

    def handle_broadcast(self, *, client_sap: int, apdu: bytes) -> BroadcastRejection | None:
        """One broadcast APDU in, never an answer: None when it ran, else why it was dropped."""
        if self.broadcasts is None:
            return BroadcastRejection.CLIENT
        return self.broadcasts.receive(client_sap=client_sap, apdu=apdu)

    def release(self, *, client_sap: int) -> None:
        """The link under the association went down: the association ends."""
        if self._associations.pop(client_sap, None) is not None:
            self.counters.releases += 1
        self._long_gets.pop(client_sap, None)

    def _handle(self, client_sap: int, apdu: bytes) -> bytes:
        tag = apdu[0] if apdu else None
        if tag == AARQ:
            aare, association = self._acceptor.accept(client_sap=client_sap, apdu=apdu)
            if association is not None:  # a refused AARQ leaves an open association alone
                self.release(client_sap=client_sap)
                self._associations[client_sap] = association
                self.counters.last_association_at = self._clock() if self._clock else None
            return aare
        if tag == RLRQ:
            return self._release_request(client_sap, apdu)
        association = self._associations.get(client_sap)
        if association is None:
            return self._exception(SERVICE_NOT_ALLOWED, OPERATION_NOT_POSSIBLE)
        if len(apdu) > self.max_receive_pdu_size:
            return self._exception(SERVICE_NOT_ALLOWED, PDU_TOO_LONG)
        if tag in (xdlms.GET_REQUEST, xdlms.SET_REQUEST, xdlms.ACTION_REQUEST):
            if association.policy.require_ciphering:
                return self._exception(SERVICE_NOT_ALLOWED, OPERATION_NOT_POSSIBLE)
            return self._serve(association, apdu, limit=association.client_max_receive_pdu_size)
        if (tag in GLO_PLAIN_TAG and tag != GLO_INITIATE_REQUEST) or tag == GENERAL_GLO_CIPHERING:
            return self._serve_ciphered(association, apdu)
        return self._exception(SERVICE_UNKNOWN, SERVICE_NOT_SUPPORTED)

    def _serve_ciphered(self, association: Association, apdu: bytes) -> bytes:
        security, title = association.policy.security, association.client_system_title
        if security is None or title is None or not association.ciphered:
            return self._exception(SERVICE_NOT_ALLOWED, OPERATION_NOT_POSSIBLE)
        general = apdu[0] == GENERAL_GLO_CIPHERING
        try:
            if general:
                sender, protected = decode_general_glo(apdu)
                if sender != title:
                    raise CipherRejectedError(CipherRejection.DECIPHERING)
            else:
                protected = decode_ciphered_apdu(apdu)[1]
            security_control, plain = self._cipher_state.open(
                security=security, client_sap=association.client_sap, client_system_title=title, protected=protected
            )
        except CipherRejectedError as rejected:
            if rejected.reason is CipherRejection.REPLAYED:
                self.counters.replay_rejections += 1
                expected = self._cipher_state.expected_client_counter(association.client_sap)
                return self._exception(SERVICE_NOT_ALLOWED, INVOCATION_COUNTER_ERROR, counter=expected)
            self.counters.decrypt_failures += 1
            return self._exception(SERVICE_NOT_ALLOWED, DECIPHERING_ERROR)
        except RemoteProtocolError:
            self.counters.decrypt_failures += 1
            return self._exception(SERVICE_NOT_ALLOWED, DECIPHERING_ERROR)
        inner_ok = plain[:1] in (b"\xc0", b"\xc1", b"\xc3") if general else plain[:1] == bytes([GLO_PLAIN_TAG[apdu[0]]])
        if not inner_ok:
            return self._exception(SERVICE_UNKNOWN, SERVICE_NOT_SUPPORTED)
        overhead = GENERAL_GLO_OVERHEAD if general else GLO_OVERHEAD
        answer = self._serve(association, plain, limit=association.client_max_receive_pdu_size - overhead)
        if answer[0] == xdlms.EXCEPTION_RESPONSE and not general:
            return answer  # no glo- tag exists for it
        sealed = self._cipher_state.seal(security=security, security_control=security_control, plaintext=answer)
        if general:
            return encode_general_glo(system_title=security.system_title, protected=sealed)
        return encode_ciphered_apdu(tag=glo_response_tag(apdu[0]), protected=sealed)

    def _release_request(self, client_sap: int, apdu: bytes) -> bytes:
        association = self._associations.get(client_sap)
        self.release(client_sap=client_sap)
        try:
            rlrq = decode_rlrq(apdu)
        except RemoteProtocolError:
            return encode_rlre(Rlre(reason=RLRE_NORMAL))
        user_information = None
        raw = rlrq.user_information
        security = association.policy.security if association is not None else None
        title = association.client_system_title if association is not None else None
        if raw and raw[0] == GLO_INITIATE_REQUEST and association is not None and security and title:
            try:
                security_control, _plain = self._cipher_state.open(
                    security=security,
                    client_sap=client_sap,
                    client_system_title=title,
                    protected=decode_ciphered_apdu(raw)[1],
                )
                response = initiate_response(association)
                sealed = self._cipher_state.seal(
                    security=security, security_control=security_control, plaintext=response
                )
                user_information = encode_ciphered_apdu(tag=GLO_INITIATE_RESPONSE, protected=sealed)
            except (CipherRejectedError, RemoteProtocolError):
                self.counters.decrypt_failures += 1
        return encode_rlre(Rlre(reason=RLRE_NORMAL, user_information=user_information))

    def _exception(self, state_error: int, service_error: int, *, counter: int | None = None) -> bytes:
        self.counters.exception_responses += 1
        return xdlms.encode_xdlms(ExceptionResponse(state_error, service_error, counter))

    # --- services ---

    def _serve(self, association: Association, apdu: bytes, *, limit: int) -> bytes:
        try:
            request = xdlms.decode_xdlms(apdu)
        except RemoteProtocolError:
            return self._exception(SERVICE_UNKNOWN, SERVICE_NOT_SUPPORTED)
        if not self._allowed(association, request):
            return self._exception(SERVICE_NOT_ALLOWED, SERVICE_NOT_SUPPORTED)
        sap = association.client_sap
        match request:
            case xdlms.GetRequestNormal(invoke_id, attribute, access):
                self._long_gets.pop(sap, None)  # a new GET abandons a long one
                answer = self._get(association, attribute, access)
                return self._get_response(association, invoke_id, answer, limit=limit)
            case xdlms.GetRequestWithList(invoke_id, items):
                self._long_gets.pop(sap, None)
                results = tuple(self._get(association, a, s) for a, s in items)
                return self._list_response(association, invoke_id, results, limit=limit)
            case xdlms.GetRequestNext(invoke_id, block_number):
                return self._next_block(sap, invoke_id, block_number)
            case xdlms.SetRequestNormal(invoke_id, attribute, access, value):
                result = self._set(association, attribute, access, value)
                return xdlms.encode_xdlms(xdlms.SetResponseNormal(invoke_id, result))
            case xdlms.ActionRequestNormal(invoke_id, method, parameters):
                key = (method.class_id, method.logical_name, method.method_id)
                if association.status != AssociationStatus.ASSOCIATED and key != HLS_ACTION:
                    return xdlms.encode_xdlms(
                        xdlms.ActionResponseNormal(invoke_id, ActionResult.SCOPE_OF_ACCESS_VIOLATED)
                    )
                outcome, returned = self._action(association, method, parameters)
                return xdlms.encode_xdlms(xdlms.ActionResponseNormal(invoke_id, outcome, returned))
        return self._exception(SERVICE_NOT_ALLOWED, SERVICE_NOT_SUPPORTED)

    @staticmethod
    def _allowed(association: Association, request: xdlms.XdlmsApdu) -> bool:
        """Whether the negotiated conformance block covers this request (Green Book 9.4.6.1)."""
        conformance = Conformance(association.conformance)
        match request:
            case xdlms.GetRequestNormal(_, _, access):
                return Conformance.GET in conformance and (
                    access is None or Conformance.SELECTIVE_ACCESS in conformance
                )
            case xdlms.GetRequestWithList(_, items):
                return Conformance.GET in conformance and Conformance.MULTIPLE_REFERENCES in conformance and (
                    all(s is None for _, s in items) or Conformance.SELECTIVE_ACCESS in conformance
                )
            case xdlms.GetRequestNext():
                return Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ in conformance
            case xdlms.SetRequestNormal():
                return Conformance.SET in conformance
            case xdlms.ActionRequestNormal():
                return Conformance.ACTION in conformance
        return False

    def _find(self, association: Association, class_id: int, logical_name: bytes) -> CosemObject | DataAccessResult:
        item = self._by_name.get(logical_name)
        if item is None or not item.visible_to(association.client_sap):
            return DataAccessResult.OBJECT_UNDEFINED
        if item.class_id != class_id:
            return DataAccessResult.OBJECT_CLASS_INCONSISTENT
        return item

    def _get(
        self, association: Association, attribute: xdlms.AttributeDescriptor, access: xdlms.AccessSelection | None
    ) -> axdr.Data | DataAccessResult:
        if association.status != AssociationStatus.ASSOCIATED:
            return DataAccessResult.SCOPE_OF_ACCESS_VIOLATED  # HLS pass 3 has not succeeded
        item = self._find(association, attribute.class_id, attribute.logical_name)
        if isinstance(item, DataAccessResult):
            return item
        return item.get(attribute.attribute_id, access, association)

    def _set(
        self,
        association: Association,
        attribute: xdlms.AttributeDescriptor,
        access: xdlms.AccessSelection | None,
        value: axdr.Data,
    ) -> DataAccessResult:
        if association.status != AssociationStatus.ASSOCIATED:
            return DataAccessResult.SCOPE_OF_ACCESS_VIOLATED
        item = self._find(association, attribute.class_id, attribute.logical_name)
        if isinstance(item, DataAccessResult):
            return item
        if access is not None:
            return DataAccessResult.OBJECT_UNAVAILABLE  # no attribute of ours takes a selective SET
        return item.set(attribute.attribute_id, value, association)

    def _action(
        self, association: Association, method: xdlms.MethodDescriptor, parameters: axdr.Data | None
    ) -> tuple[ActionResult, axdr.Data | None]:
        item = self._find(association, method.class_id, method.logical_name)
        if isinstance(item, DataAccessResult):
            return ActionResult(int(item)), None
        return item.action(method.method_id, parameters, association)

    # --- GET answers, whole or in blocks (Green Book 9.3.5, service-specific block transfer) ---

    def _get_response(
        self, association: Association, invoke_id: int, answer: axdr.Data | DataAccessResult, *, limit: int
    ) -> bytes:
        try:
            whole = xdlms.encode_xdlms(xdlms.GetResponseNormal(invoke_id, answer))
        except LocalProtocolError:  # an object of ours produced a value its type cannot carry
            whole = xdlms.encode_xdlms(xdlms.GetResponseNormal(invoke_id, DataAccessResult.OTHER_REASON))
        if len(whole) <= limit:
            return whole
        # The blocks carry the encoded Data: what follows tag, choice, invoke id and result choice.
        return self._first_block(association, invoke_id, whole[4:], limit=limit)

    def _list_response(
        self,
        association: Association,
        invoke_id: int,
        results: tuple[axdr.Data | DataAccessResult, ...],
        *,
        limit: int,
    ) -> bytes:
        try:
            whole = xdlms.encode_xdlms(xdlms.GetResponseWithList(invoke_id, results))
        except LocalProtocolError:
            whole = xdlms.encode_xdlms(xdlms.GetResponseWithList(invoke_id, tuple(map(_encodable, results))))
        if len(whole) <= limit:
            return whole
        # The blocks carry the SEQUENCE OF Get-Data-Result: what follows tag, choice and invoke id.
        return self._first_block(association, invoke_id, whole[3:], limit=limit)

    def _first_block(self, association: Association, invoke_id: int, raw: bytes, *, limit: int) -> bytes:
        if Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ not in Conformance(association.conformance):
            return xdlms.encode_xdlms(xdlms.GetResponseNormal(invoke_id, DataAccessResult.OTHER_REASON))
        block_size = max(limit - BLOCK_HEADER, 1)
        self._long_gets[association.client_sap] = _LongGet(raw=raw, block_size=block_size, block_number=1)
        return self._block(association.client_sap, invoke_id)

    def _next_block(self, client_sap: int, invoke_id: int, block_number: int) -> bytes:
        long_get = self._long_gets.get(client_sap)
        if long_get is None:
            result = DataAccessResult.NO_LONG_GET_IN_PROGRESS
        elif block_number != long_get.block_number:
            del self._long_gets[client_sap]
            result = DataAccessResult.LONG_GET_ABORTED
        else:
            long_get.block_number += 1
            return self._block(client_sap, invoke_id)
        return xdlms.encode_xdlms(xdlms.GetResponseWithDataBlock(invoke_id, True, block_number, result))

    def _block(self, client_sap: int, invoke_id: int) -> bytes:
        long_get = self._long_gets[client_sap]
        start = (long_get.block_number - 1) * long_get.block_size
        chunk = long_get.raw[start : start + long_get.block_size]
        last = start + long_get.block_size >= len(long_get.raw)
        if last:
            del self._long_gets[client_sap]
        self.counters.get_blocks_sent += 1
        return xdlms.encode_xdlms(xdlms.GetResponseWithDataBlock(invoke_id, last, long_get.block_number, chunk))


def _encodable(result: axdr.Data | DataAccessResult) -> axdr.Data | DataAccessResult:
    """The result itself if it encodes, else other-reason."""
    if isinstance(result, DataAccessResult):
        return result
    try:
        axdr.encode(result)
    except LocalProtocolError:
        return DataAccessResult.OTHER_REASON
    return result
