"""Application associations (Green Book 9.4.2 and 9.2.7.4): AARQ in, AARE out, HLS-GMAC pass 3/4.

Theory of operation, one association per client SAP:

    (none) --AARQ ok, mechanism NONE or LLS-------------> ASSOCIATED
    (none) --AARQ ok, HLS-GMAC (AARE carries StoC)------> ASSOCIATION_PENDING
    ASSOCIATION_PENDING --reply_to_HLS f(StoC) ok-------> ASSOCIATED (the answer carries f(CtoS))
    ASSOCIATION_PENDING --f(StoC) wrong-----------------> stays pending for good (every retry fails)
    any --RLRQ, or the link under it goes down----------> (none)

A refused AARQ always gets an AARE (rejected-permanent with the reason), never silence.
"""

from __future__ import annotations

import datetime
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.codec import acse, xdlms
from gateway.codec.acse import AcseServiceUser, AssociationResult, Mechanism
from gateway.codec.errors import RemoteProtocolError
from gateway.codec.security import (
    SecurityContext,
    SecurityError,
    decode_ciphered_apdu,
    encode_ciphered_apdu,
    hls_gmac,
    verify_hls_gmac,
)
from gateway.cosem.ciphering import CipherRejectedError, CipherRejection, CipherState
from gateway.cosem.objects import AssociationInfo, AssociationStatus, CosemObject

DLMS_VERSION = 6  # Green Book 9.4.2: the only DLMS version in use
GLO_INITIATE_REQUEST = 0x21  # Green Book 9.5: glo-initiateRequest
GLO_INITIATE_RESPONSE = 0x28
INITIATE_REQUEST = 0x01
# Green Book 9.5 ConfirmedServiceError: initiateError [1], ServiceError initiate [6], then the reason.
SERVICE_INITIATE_ERROR = 1
ERROR_TYPE_INITIATE = 6
INITIATE_OTHER, DLMS_VERSION_TOO_LOW, INCOMPATIBLE_CONFORMANCE, PDU_SIZE_TOO_SHORT = 0, 1, 2, 3
CALLING_AP_TITLE_NOT_RECOGNISED = 3  # Green Book 9.4.2: acse-service-user diagnostic
MIN_CLIENT_PDU_SIZE = 64  # ours: smaller leaves no room for a ciphered GET block
NO_PDU_LIMIT = 0xFFFF  # Green Book 9.4.2: a max receive PDU size of 0 means no limit; we read it as 65535
CHALLENGE_RANGE = range(8, 65)  # Green Book 9.2.7.4: HLS challenges are 8 to 64 octets
SERVER_CHALLENGE_SIZE = 16  # ours, within CHALLENGE_RANGE
SYSTEM_TITLE_SIZE = 8


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """One client SAP the logical device accepts, and on what terms."""

    client_sap: int
    mechanism: Mechanism  # NONE (public client 16), LLS, or HLS_GMAC (management client 1)
    security: SecurityContext | None  # the server side keys and system title; None = no ciphering
    require_ciphering: bool  # every xDLMS APDU after the AARQ must be ciphered
    conformance: int  # what the server offers this client
    lls_password: bytes | None = None

    def __post_init__(self) -> None:
        if (self.mechanism == Mechanism.HLS_GMAC or self.require_ciphering) and self.security is None:
            raise ValueError(f"client {self.client_sap}: HLS-GMAC and ciphering need a security context")
        if self.mechanism == Mechanism.LLS and not self.lls_password:
            raise ValueError(f"client {self.client_sap}: LLS needs a password")
        if self.mechanism not in (Mechanism.NONE, Mechanism.LLS, Mechanism.HLS_GMAC):
            raise ValueError(f"client {self.client_sap}: mechanism {self.mechanism.name} is not supported")

    def __repr__(self) -> str:  # never show the LLS password
        return (
            f"ClientPolicy(client_sap={self.client_sap}, mechanism={self.mechanism.name}, "
            f"security={self.security!r}, require_ciphering={self.require_ciphering}, "
            f"conformance=0x{self.conformance:06X})"
        )


@dataclass(slots=True)
class ServerCounters:
    """What a logical device has seen; the daemon reports these."""

    associations: int = 0  # AARQs accepted
    rejections: int = 0  # AARQs refused (AARE rejected)
    hls_failures: int = 0  # wrong f(StoC)
    decrypt_failures: int = 0  # ciphered APDUs whose tag or header did not verify
    replay_rejections: int = 0  # ciphered APDUs with an invocation counter not above the last one
    exception_responses: int = 0  # garbage or refused APDUs answered with an exception-response
    releases: int = 0  # RLRQ or link down with an association open
    get_blocks_sent: int = 0  # Get-Response-With-Datablock APDUs carrying data
    last_association_at: datetime.datetime | None = None


class Association:
    """One application association with one client (the request context every object sees)."""

    def __init__(
        self,
        *,
        policy: ClientPolicy,
        application_context: int,
        conformance: int,
        client_max_receive_pdu_size: int,
        server_max_receive_pdu_size: int,
        server_sap: int,
        objects: Sequence[CosemObject],
        cipher_state: CipherState,
        counters: ServerCounters,
        client_system_title: bytes | None = None,
        server_challenge: bytes | None = None,
        client_challenge: bytes | None = None,
    ) -> None:
        self.policy = policy
        self.application_context = application_context
        self.conformance = conformance
        self.client_max_receive_pdu_size = client_max_receive_pdu_size
        self.server_max_receive_pdu_size = server_max_receive_pdu_size
        self.server_sap = server_sap
        self.client_system_title = client_system_title
        self.status = AssociationStatus.ASSOCIATED
        if policy.mechanism == Mechanism.HLS_GMAC:
            self.status = AssociationStatus.ASSOCIATION_PENDING
        self._objects = objects
        self._cipher_state = cipher_state
        self._counters = counters
        self._server_challenge = server_challenge
        self._client_challenge = client_challenge
        self._hls_failed = False

    @property
    def client_sap(self) -> int:
        return self.policy.client_sap

    @property
    def ciphered(self) -> bool:
        return self.application_context == acse.APPLICATION_CONTEXT_LN_CIPHERING

    def association_info(self) -> AssociationInfo:
        return AssociationInfo(
            client_sap=self.client_sap,
            server_sap=self.server_sap,
            application_context=self.application_context,
            mechanism=int(self.policy.mechanism),
            conformance=self.conformance,
            client_max_receive_pdu_size=self.client_max_receive_pdu_size,
            server_max_receive_pdu_size=self.server_max_receive_pdu_size,
            dlms_version=DLMS_VERSION,
            status=self.status,
        )

    def visible_objects(self) -> Sequence[CosemObject]:
        return [item for item in self._objects if item.visible_to(self.client_sap)]

    def reply_to_hls_authentication(self, f_stoc: bytes) -> bytes | None:
        security = self.policy.security
        if (
            self.status != AssociationStatus.ASSOCIATION_PENDING
            or self._hls_failed
            or security is None
            or self.client_system_title is None
            or self._server_challenge is None
            or self._client_challenge is None
        ):
            return None
        try:
            verify_hls_gmac(
                system_title=self.client_system_title,
                block_cipher_key=security.block_cipher_key,
                authentication_key=security.authentication_key,
                challenge=self._server_challenge,
                response=f_stoc,
            )
        except SecurityError:
            self._hls_failed = True  # no second guess within this association
            self._counters.hls_failures += 1
            return None
        self.status = AssociationStatus.ASSOCIATED
        return hls_gmac(
            system_title=security.system_title,
            invocation_counter=self._cipher_state.next_counter(),
            block_cipher_key=security.block_cipher_key,
            authentication_key=security.authentication_key,
            challenge=self._client_challenge,
        )


class _RefusalError(Exception):
    """An AARQ we refuse: the AARE's diagnostic and optional user-information."""

    def __init__(self, diagnostic: int, user_information: bytes | None = None) -> None:
        super().__init__(diagnostic)
        self.diagnostic = diagnostic
        self.user_information = user_information


class AssociationAcceptor:
    """Turns AARQs into AAREs and associations for one logical device."""

    def __init__(
        self,
        *,
        policies: Sequence[ClientPolicy],
        max_receive_pdu_size: int,
        server_sap: int,
        objects: Sequence[CosemObject],
        cipher_state: CipherState,
        counters: ServerCounters,
        challenge: Callable[[int], bytes],
    ) -> None:
        self._policies = {policy.client_sap: policy for policy in policies}
        self._max_receive_pdu_size = max_receive_pdu_size
        self._server_sap = server_sap
        self._objects = objects
        self._cipher_state = cipher_state
        self._counters = counters
        self._challenge = challenge

    def accept(self, *, client_sap: int, apdu: bytes) -> tuple[bytes, Association | None]:
        """The AARE for one AARQ, and the association if it was accepted."""
        try:
            aarq = acse.decode_aarq(apdu)
        except RemoteProtocolError:
            self._counters.rejections += 1
            return self._rejected(acse.APPLICATION_CONTEXT_LN_NO_CIPHERING, AcseServiceUser.NO_REASON_GIVEN), None
        policy = self._policies.get(client_sap)
        if policy is None:
            self._counters.rejections += 1
            return self._rejected(aarq.application_context, AcseServiceUser.NO_REASON_GIVEN), None
        context = self._expected_context(policy, aarq.application_context)
        if context != aarq.application_context:
            self._counters.rejections += 1
            return self._rejected(context, AcseServiceUser.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED), None
        try:
            return self._accept(policy, aarq)
        except _RefusalError as refusal:
            self._counters.rejections += 1
            aare = acse.Aare(
                application_context=context,
                result=AssociationResult.REJECTED_PERMANENT,
                diagnostic=refusal.diagnostic,
                user_information=refusal.user_information,
            )
            return acse.encode_aare(aare), None

    @staticmethod
    def _expected_context(policy: ClientPolicy, asked: int) -> int:
        if policy.security is None:
            return acse.APPLICATION_CONTEXT_LN_NO_CIPHERING
        if policy.require_ciphering:
            return acse.APPLICATION_CONTEXT_LN_CIPHERING
        both = (acse.APPLICATION_CONTEXT_LN_NO_CIPHERING, acse.APPLICATION_CONTEXT_LN_CIPHERING)
        return asked if asked in both else acse.APPLICATION_CONTEXT_LN_CIPHERING

    def _accept(self, policy: ClientPolicy, aarq: acse.Aarq) -> tuple[bytes, Association]:
        self._check_mechanism(policy, aarq)
        ciphered = aarq.application_context == acse.APPLICATION_CONTEXT_LN_CIPHERING
        hls = policy.mechanism == Mechanism.HLS_GMAC
        client_system_title = aarq.calling_ap_title
        # Ciphering and HLS-GMAC both put the client's system title in the IV: without it, nothing verifies.
        if (ciphered or hls) and (client_system_title is None or len(client_system_title) != SYSTEM_TITLE_SIZE):
            raise _RefusalError(CALLING_AP_TITLE_NOT_RECOGNISED)
        request, security_control = self._initiate_request(policy, aarq)
        conformance = policy.conformance & request.proposed_conformance
        if request.dlms_version < DLMS_VERSION:
            raise _RefusalError(AcseServiceUser.NO_REASON_GIVEN, _initiate_error(DLMS_VERSION_TOO_LOW))
        if conformance == 0:
            raise _RefusalError(AcseServiceUser.NO_REASON_GIVEN, _initiate_error(INCOMPATIBLE_CONFORMANCE))
        client_pdu = request.client_max_receive_pdu_size or NO_PDU_LIMIT
        if client_pdu < MIN_CLIENT_PDU_SIZE:
            raise _RefusalError(AcseServiceUser.NO_REASON_GIVEN, _initiate_error(PDU_SIZE_TOO_SHORT))
        server_challenge = self._challenge(SERVER_CHALLENGE_SIZE) if hls else None
        association = Association(
            policy=policy,
            application_context=aarq.application_context,
            conformance=conformance,
            client_max_receive_pdu_size=client_pdu,
            server_max_receive_pdu_size=self._max_receive_pdu_size,
            server_sap=self._server_sap,
            objects=self._objects,
            cipher_state=self._cipher_state,
            counters=self._counters,
            client_system_title=client_system_title,
            server_challenge=server_challenge,
            client_challenge=aarq.calling_authentication_value if hls else None,
        )
        response = initiate_response(association)
        if security_control is not None and policy.security is not None:
            protected = self._cipher_state.seal(
                security=policy.security, security_control=security_control, plaintext=response
            )
            response = encode_ciphered_apdu(tag=GLO_INITIATE_RESPONSE, protected=protected)
        aare = acse.Aare(
            application_context=aarq.application_context,
            result=AssociationResult.ACCEPTED,
            diagnostic=AcseServiceUser.AUTHENTICATION_REQUIRED if hls else AcseServiceUser.NULL,
            responding_ap_title=policy.security.system_title if policy.security is not None and ciphered else None,
            mechanism=policy.mechanism if policy.mechanism != Mechanism.NONE else None,
            responding_authentication_value=server_challenge,
            user_information=response,
        )
        self._counters.associations += 1
        return acse.encode_aare(aare), association

    @staticmethod
    def _check_mechanism(policy: ClientPolicy, aarq: acse.Aarq) -> None:
        asked = Mechanism.NONE if aarq.mechanism is None else aarq.mechanism
        if policy.mechanism == Mechanism.NONE:
            if asked != Mechanism.NONE:
                raise _RefusalError(AcseServiceUser.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED)
            return
        if aarq.mechanism is None:
            raise _RefusalError(AcseServiceUser.AUTHENTICATION_MECHANISM_NAME_REQUIRED)
        if asked != policy.mechanism:
            raise _RefusalError(AcseServiceUser.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED)
        value = aarq.calling_authentication_value
        if policy.mechanism == Mechanism.LLS:
            if value is None or policy.lls_password is None or not _same(value, policy.lls_password):
                raise _RefusalError(AcseServiceUser.AUTHENTICATION_FAILURE)
        elif value is None or len(value) not in CHALLENGE_RANGE:
            raise _RefusalError(AcseServiceUser.AUTHENTICATION_FAILURE)

    def _initiate_request(self, policy: ClientPolicy, aarq: acse.Aarq) -> tuple[acse.InitiateRequest, int | None]:
        """The client's InitiateRequest, deciphered if it came glo-ciphered; and its security control."""
        raw = aarq.user_information
        if not raw:
            raise _RefusalError(AcseServiceUser.NO_REASON_GIVEN, _initiate_error(INITIATE_OTHER))
        security_control = None
        if raw[0] == GLO_INITIATE_REQUEST:
            if policy.security is None or aarq.calling_ap_title is None:
                raise _RefusalError(AcseServiceUser.NO_REASON_GIVEN, _initiate_error(INITIATE_OTHER))
            try:
                _tag, protected = decode_ciphered_apdu(raw)
                security_control, raw = self._cipher_state.open(
                    security=policy.security,
                    client_sap=policy.client_sap,
                    client_system_title=aarq.calling_ap_title,
                    protected=protected,
                )
            except CipherRejectedError as rejected:
                if rejected.reason is CipherRejection.REPLAYED:
                    self._counters.replay_rejections += 1
                else:
                    self._counters.decrypt_failures += 1
                raise _RefusalError(AcseServiceUser.NO_REASON_GIVEN, _initiate_error(INITIATE_OTHER)) from None
            except RemoteProtocolError:
                self._counters.decrypt_failures += 1
                raise _RefusalError(AcseServiceUser.NO_REASON_GIVEN, _initiate_error(INITIATE_OTHER)) from None
        elif policy.require_ciphering:
            raise _RefusalError(AcseServiceUser.NO_REASON_GIVEN, _initiate_error(INITIATE_OTHER))
        try:
            return acse.decode_initiate_request(raw), security_control
        except RemoteProtocolError:
            raise _RefusalError(AcseServiceUser.NO_REASON_GIVEN, _initiate_error(INITIATE_OTHER)) from None

    @staticmethod
    def _rejected(application_context: int, diagnostic: int) -> bytes:
        return acse.encode_aare(
            acse.Aare(
                application_context=application_context,
                result=AssociationResult.REJECTED_PERMANENT,
                diagnostic=diagnostic,
            )
        )


def initiate_response(association: Association) -> bytes:
    """The plain xDLMS InitiateResponse for an association (AARE, and RLRE of a ciphered release)."""
    return acse.encode_initiate_response(
        acse.InitiateResponse(
            negotiated_conformance=association.conformance,
            server_max_receive_pdu_size=association.server_max_receive_pdu_size,
        )
    )


def _initiate_error(reason: int) -> bytes:
    """A ConfirmedServiceError for a refused InitiateRequest, for the AARE's user-information."""
    return xdlms.encode_xdlms(
        xdlms.ConfirmedServiceError(service=SERVICE_INITIATE_ERROR, error_type=ERROR_TYPE_INITIATE, error_value=reason)
    )


def _same(first: bytes, second: bytes) -> bool:
    return hmac.compare_digest(first, second)
