"""A small DLMS client built from our codecs, talking APDUs straight to a LogicalDevice."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.codec import acse, axdr, security, xdlms
from gateway.codec.acse import Conformance, Mechanism
from gateway.codec.axdr import Data
from gateway.cosem.server import LogicalDevice

ALL_CONFORMANCE = (
    Conformance.GET | Conformance.SET | Conformance.ACTION | Conformance.SELECTIVE_ACCESS
    | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ | Conformance.MULTIPLE_REFERENCES | Conformance.GENERAL_PROTECTION
)
CLIENT_TITLE = b"HES00001"
INVOKE = 0xC1  # invoke id 1, confirmed, high priority
GLO_REQUEST = {0xC0: 0xC8, 0xC1: 0xC9, 0xC3: 0xCB}
GLO_RESPONSE = {0xCC: 0xC4, 0xCD: 0xC5, 0xCF: 0xC7}
SC_AUTH_ENC = 0x30


@dataclass
class Keys:
    block_cipher_key: bytes
    authentication_key: bytes
    system_title: bytes = CLIENT_TITLE


@dataclass
class TestClient:
    """One client association; counts what it sees so tests can assert on the wire traffic."""

    device: LogicalDevice
    client_sap: int
    keys: Keys | None = None
    general: bool = False  # general-glo-ciphering (DB) instead of service-specific glo- tags
    invocation_counter: int = 0
    server_title: bytes | None = None
    server_counters: list[int] = field(default_factory=list)
    wire: list[bytes] = field(default_factory=list)  # every answer, as sent by the server

    __test__ = False  # not a pytest class

    def send(self, apdu: bytes) -> bytes:
        answer = self.device.handle(client_sap=self.client_sap, apdu=apdu)
        assert answer is not None
        self.wire.append(answer)
        return answer

    def next_counter(self) -> int:
        self.invocation_counter += 1
        return self.invocation_counter

    def protect(self, plaintext: bytes, *, counter: int | None = None) -> bytes:
        assert self.keys is not None
        return security.protect(
            security_control=SC_AUTH_ENC,
            system_title=self.keys.system_title,
            invocation_counter=self.next_counter() if counter is None else counter,
            block_cipher_key=self.keys.block_cipher_key,
            authentication_key=self.keys.authentication_key,
            plaintext=plaintext,
        )

    def unprotect(self, protected: bytes) -> bytes:
        assert self.keys is not None and self.server_title is not None
        _sc, counter, plain = security.unprotect(
            system_title=self.server_title,
            block_cipher_key=self.keys.block_cipher_key,
            authentication_key=self.keys.authentication_key,
            protected=protected,
        )
        self.server_counters.append(counter)
        return plain

    # --- association ---

    def aarq(
        self,
        *,
        mechanism: Mechanism | None = None,
        conformance: int = ALL_CONFORMANCE,
        max_pdu: int = 1024,
        dlms_version: int = 6,
        challenge: bytes = b"CtoS-challenge-1",
        password: bytes | None = None,
        application_context: int | None = None,
    ) -> bytes:
        initiate = acse.encode_initiate_request(
            acse.InitiateRequest(
                proposed_conformance=conformance, client_max_receive_pdu_size=max_pdu, dlms_version=dlms_version
            )
        )
        ciphered = self.keys is not None
        if ciphered:
            initiate = security.encode_ciphered_apdu(tag=0x21, protected=self.protect(initiate))
        if mechanism == Mechanism.HLS_GMAC:
            value: bytes | None = challenge
        elif mechanism == Mechanism.LLS:
            value = password
        else:
            value = None
        return acse.encode_aarq(
            acse.Aarq(
                application_context=application_context
                or (acse.APPLICATION_CONTEXT_LN_CIPHERING if ciphered else acse.APPLICATION_CONTEXT_LN_NO_CIPHERING),
                calling_ap_title=self.keys.system_title if self.keys else None,
                mechanism=mechanism,
                calling_authentication_value=value,
                user_information=initiate,
            )
        )

    def associate(self, **kwargs: object) -> acse.Aare:
        aare = acse.decode_aare(self.send(self.aarq(**kwargs)))  # type: ignore[arg-type]
        self.server_title = aare.responding_ap_title
        return aare

    def initiate_response(self, aare: acse.Aare) -> acse.InitiateResponse:
        raw = aare.user_information
        assert raw is not None
        if raw[0] == 0x28:
            raw = self.unprotect(security.decode_ciphered_apdu(raw)[1])
        return acse.decode_initiate_response(raw)

    def hls(self, aare: acse.Aare, *, keys: Keys | None = None) -> xdlms.ActionResponseNormal:
        """HLS pass 3: send f(StoC); ``keys`` lets a test compute it with the wrong keys."""
        use = keys or self.keys
        assert use is not None and aare.responding_authentication_value is not None
        f_stoc = security.hls_gmac(
            system_title=use.system_title,
            invocation_counter=self.next_counter(),
            block_cipher_key=use.block_cipher_key,
            authentication_key=use.authentication_key,
            challenge=aare.responding_authentication_value,
        )
        answer = self.request(
            xdlms.ActionRequestNormal(
                INVOKE, xdlms.MethodDescriptor(15, bytes([0, 0, 40, 0, 0, 255]), 1), Data.octet_string(f_stoc)
            )
        )
        assert isinstance(answer, xdlms.ActionResponseNormal)
        return answer

    def release(self) -> acse.Rlre:
        user_information = None
        if self.keys is not None:
            initiate = acse.encode_initiate_request(
                acse.InitiateRequest(proposed_conformance=ALL_CONFORMANCE, client_max_receive_pdu_size=1024)
            )
            user_information = security.encode_ciphered_apdu(tag=0x21, protected=self.protect(initiate))
        return acse.decode_rlre(self.send(acse.encode_rlrq(acse.Rlrq(reason=0, user_information=user_information))))

    # --- services ---

    def request_raw(self, apdu: bytes) -> bytes:
        """Send one plain xDLMS APDU (ciphered if we have keys); return the plain answer."""
        if self.keys is None:
            return self.send(apdu)
        if self.general:
            assert self.server_title is not None
            answer = self.send(
                security.encode_general_glo(system_title=self.keys.system_title, protected=self.protect(apdu))
            )
            if answer[0] != 0xDB:
                return answer
            title, protected = security.decode_general_glo(answer)
            assert title == self.server_title
            return self.unprotect(protected)
        answer = self.send(security.encode_ciphered_apdu(tag=GLO_REQUEST[apdu[0]], protected=self.protect(apdu)))
        if answer[0] not in GLO_RESPONSE:
            return answer
        tag, protected = security.decode_ciphered_apdu(answer)
        plain = self.unprotect(protected)
        assert plain[0] == GLO_RESPONSE[tag]
        return plain

    def request(self, pdu: xdlms.XdlmsApdu) -> xdlms.XdlmsApdu:
        return xdlms.decode_xdlms(self.request_raw(xdlms.encode_xdlms(pdu)))

    def get(
        self, class_id: int, logical_name: bytes, attribute_id: int, access: xdlms.AccessSelection | None = None
    ) -> Data | xdlms.DataAccessResult:
        """GET, following data blocks to the end."""
        answer = self.request(
            xdlms.GetRequestNormal(INVOKE, xdlms.AttributeDescriptor(class_id, logical_name, attribute_id), access)
        )
        if isinstance(answer, xdlms.GetResponseNormal):
            return answer.result
        assert isinstance(answer, xdlms.GetResponseWithDataBlock), answer
        raw = b""
        while True:
            assert isinstance(answer, xdlms.GetResponseWithDataBlock)
            if isinstance(answer.raw_data, xdlms.DataAccessResult):
                return answer.raw_data
            raw += answer.raw_data
            if answer.last_block:
                data, end = axdr.decode(raw)
                assert end == len(raw)
                return data
            answer = self.request(xdlms.GetRequestNext(INVOKE, answer.block_number))

    def set(self, class_id: int, logical_name: bytes, attribute_id: int, value: Data) -> xdlms.DataAccessResult:
        answer = self.request(
            xdlms.SetRequestNormal(INVOKE, xdlms.AttributeDescriptor(class_id, logical_name, attribute_id), None, value)
        )
        assert isinstance(answer, xdlms.SetResponseNormal)
        return answer.result

    def action(
        self, class_id: int, logical_name: bytes, method_id: int, parameters: Data | None = None
    ) -> xdlms.ActionResponseNormal:
        answer = self.request(
            xdlms.ActionRequestNormal(INVOKE, xdlms.MethodDescriptor(class_id, logical_name, method_id), parameters)
        )
        assert isinstance(answer, xdlms.ActionResponseNormal)
        return answer
