"""The gateway's own DLMS client for legacy polling: one association, read-only, on our codecs.

    AARQ (LLS password, or HLS-GMAC challenge; glo-initiateRequest when ciphered)  ->  AARE
    HLS-GMAC pass 3/4: ACTION reply_to_HLS_authentication f(StoC)  ->  f(CtoS), verified
    GET normal / with-list / next block (glo-get when ciphered), selective access by range
    RLRQ (glo-initiateRequest inside when ciphered)  ->  RLRE

Read-only by construction: the only ACTION this client can send is HLS pass 3 on the current
association (Green Book 9.2.7.4 requires it); there is no SET and no other method. Every
invocation counter comes from ``CounterSource``, which makes it durable before it is spent.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.codec import acse, axdr, security, xdlms
from gateway.codec.acse import Conformance, Mechanism
from gateway.codec.axdr import Data
from gateway.codec.errors import RemoteProtocolError
from gateway.codec.obis import obis

ASSOCIATION_LN = obis("0.0.40.0.0.255")  # Blue Book IC 15: the current association
REPLY_TO_HLS = 1  # Blue Book IC 15 method 1: reply_to_HLS_authentication
ASSOCIATION_LN_CLASS = 15
PROFILE_GENERIC_CLASS = 7
SELECTOR_RANGE = 1  # Blue Book IC 7: range_descriptor
SC_AUTHENTICATED_ENCRYPTED = 0x30  # Green Book 9.2.7.2.2: security control, suite 0
GLO_INITIATE_REQUEST, GLO_INITIATE_RESPONSE = 0x21, 0x28  # Green Book 9.5
GLO_GET_REQUEST, GLO_GET_RESPONSE, GLO_ACTION_REQUEST, GLO_ACTION_RESPONSE = 0xC8, 0xCC, 0xCB, 0xCF
CHALLENGE_OCTETS = 16  # Green Book 9.2.7.4: 8..64 octets
INVOKE_PRIORITY_HIGH_CONFIRMED = 0xC0  # invoke-id-and-priority: bit 7 priority, bit 6 confirmed
READ_CONFORMANCE = (Conformance.GET | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ | Conformance.SELECTIVE_ACCESS
                    | Conformance.MULTIPLE_REFERENCES)
MAX_BLOCKS = 4096  # ours: a GET answer longer than this many blocks is a meter gone wrong


class PollingError(Exception):
    """A poll that did not succeed; the message is for the log and the failure report."""


class AssociationRefusedError(PollingError):
    """The meter refused the association (wrong keys, password, client SAP, or HLS failed)."""


class InvocationCounterRejectedError(PollingError):
    """The meter says our invocation counter was already used (it must never happen)."""

    def __init__(self, message: str, expected: int | None) -> None:
        super().__init__(message)
        self.expected = expected


class ReadRefusedError(PollingError):
    """The meter answered a GET with a data-access-result instead of data."""


class ApduChannel(Protocol):
    """Sends one APDU to the meter and returns its answer (LinkClient does this over HDLC)."""

    async def request(self, apdu: bytes) -> bytes: ...


class CounterSource(Protocol):
    """Hands out invocation counters, each durable before it is returned, never twice."""

    def next_counter(self) -> int: ...


@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    """How the gateway authenticates to a meter; keys and password never shown."""

    mechanism: Mechanism  # NONE, LLS or HLS_GMAC
    system_title: bytes | None = None  # ours (the client's); ciphering and HLS-GMAC need it
    block_cipher_key: bytes | None = None
    authentication_key: bytes | None = None
    password: bytes | None = None  # LLS only

    @property
    def ciphered(self) -> bool:
        return self.block_cipher_key is not None

    def __repr__(self) -> str:
        title = self.system_title.hex().upper() if self.system_title else None
        return f"Credentials(mechanism={self.mechanism.name}, system_title={title}, secrets=<hidden>)"


@dataclass(frozen=True, slots=True)
class Attribute:
    """One COSEM attribute to read."""

    class_id: int
    logical_name: bytes
    attribute_id: int

    def descriptor(self) -> xdlms.AttributeDescriptor:
        return xdlms.AttributeDescriptor(self.class_id, self.logical_name, self.attribute_id)


def range_selection(*, restricting: Attribute, start: dt.datetime, end: dt.datetime | None) -> xdlms.AccessSelection:
    """Blue Book IC 7 range_descriptor on a date-time column: start..end inclusive, end None = open."""
    column = Data.structure(Data.long_unsigned(restricting.class_id), Data.octet_string(restricting.logical_name),
                            Data.integer(restricting.attribute_id), Data.long_unsigned(0))
    upper = _date_time_octets(end) if end is not None else bytes.fromhex("FFFFFFFFFFFFFFFFFF8000FF")
    return xdlms.AccessSelection(SELECTOR_RANGE, Data.structure(
        column, Data.octet_string(_date_time_octets(start)), Data.octet_string(upper), Data.array()))


def _date_time_octets(moment: dt.datetime) -> bytes:
    value = axdr.date_time(moment.astimezone(dt.UTC).replace(tzinfo=None), deviation_minutes=None).value
    assert isinstance(value, bytes)
    return value


class DlmsClient:
    """One application association, opened by ``associate`` and closed by ``release``."""

    def __init__(self, channel: ApduChannel, *, credentials: Credentials, counter: CounterSource | None,
                 max_receive_pdu_size: int = 1024) -> None:
        secured = credentials.ciphered or credentials.mechanism is Mechanism.HLS_GMAC
        if secured and (counter is None or credentials.system_title is None or credentials.authentication_key is None):
            raise ValueError("ciphering and HLS-GMAC need a system title, both keys and a counter")
        self._channel = channel
        self._credentials = credentials
        self._counter = counter
        self._max_pdu = max_receive_pdu_size
        self._invoke = 0
        self._server_title: bytes | None = None
        self._server_counter = -1
        self.server_max_receive_pdu_size = 0
        self.conformance = 0
        self.associated = False
        self.exchanges = 0

    # -- association --------------------------------------------------------------------------

    async def associate(self) -> None:
        """AARQ/AARE, then HLS-GMAC pass 3/4 when that is the mechanism. Raises PollingError."""
        creds = self._credentials
        hls = creds.mechanism is Mechanism.HLS_GMAC
        conformance = READ_CONFORMANCE | (Conformance.ACTION if hls else 0)  # ACTION only for HLS pass 3
        initiate = acse.encode_initiate_request(acse.InitiateRequest(
            proposed_conformance=int(conformance), client_max_receive_pdu_size=self._max_pdu))
        if creds.ciphered:
            initiate = security.encode_ciphered_apdu(tag=GLO_INITIATE_REQUEST, protected=self._protect(initiate))
        challenge = secrets.token_bytes(CHALLENGE_OCTETS) if hls else None
        aarq = acse.Aarq(
            application_context=(acse.APPLICATION_CONTEXT_LN_CIPHERING if creds.ciphered
                                 else acse.APPLICATION_CONTEXT_LN_NO_CIPHERING),
            calling_ap_title=creds.system_title if creds.ciphered or hls else None,
            mechanism=None if creds.mechanism is Mechanism.NONE else creds.mechanism,
            calling_authentication_value=challenge if hls else creds.password,
            user_information=initiate,
        )
        answer = await self._exchange(acse.encode_aarq(aarq))
        try:
            aare = acse.decode_aare(answer)
        except RemoteProtocolError as exc:
            raise PollingError(f"no AARE: {exc}") from None
        if aare.result is not acse.AssociationResult.ACCEPTED:
            raise AssociationRefusedError(f"association refused ({aare.result.name.lower()}, "
                                          f"diagnostic {aare.diagnostic})")
        self._server_title = aare.responding_ap_title
        self._initiate_response(aare.user_information)
        if hls:
            await self._hls_pass_3(aare.responding_authentication_value, challenge)
        self.associated = True

    def _initiate_response(self, raw: bytes | None) -> None:
        if not raw:
            raise PollingError("AARE without an InitiateResponse")
        if raw[0] == GLO_INITIATE_RESPONSE:
            raw = self._unprotect(security.decode_ciphered_apdu(raw)[1])
        elif self._credentials.ciphered:
            raise PollingError("ciphered association answered in plain")
        try:
            response = acse.decode_initiate_response(raw)
        except RemoteProtocolError as exc:
            raise PollingError(f"bad InitiateResponse: {exc}") from None
        self.conformance = response.negotiated_conformance
        self.server_max_receive_pdu_size = response.server_max_receive_pdu_size

    async def _hls_pass_3(self, server_challenge: bytes | None, client_challenge: bytes | None) -> None:
        creds = self._credentials
        if not server_challenge or client_challenge is None:
            raise AssociationRefusedError("HLS-GMAC: the AARE carries no server challenge")
        assert creds.system_title and creds.block_cipher_key and creds.authentication_key
        f_stoc = security.hls_gmac(system_title=creds.system_title, invocation_counter=self._next_counter(),
                                   block_cipher_key=creds.block_cipher_key,
                                   authentication_key=creds.authentication_key, challenge=server_challenge)
        method = xdlms.MethodDescriptor(ASSOCIATION_LN_CLASS, ASSOCIATION_LN, REPLY_TO_HLS)
        answer = await self._service(xdlms.ActionRequestNormal(self._invoke_id(), method, Data.octet_string(f_stoc)))
        if not isinstance(answer, xdlms.ActionResponseNormal) or answer.result is not xdlms.ActionResult.SUCCESS:
            raise AssociationRefusedError("HLS-GMAC: the meter did not accept f(StoC)")
        returned = answer.return_parameters
        if not isinstance(returned, Data) or not isinstance(returned.value, bytes) or self._server_title is None:
            raise AssociationRefusedError("HLS-GMAC: no f(CtoS) from the meter")
        try:
            security.verify_hls_gmac(system_title=self._server_title, block_cipher_key=creds.block_cipher_key,
                                     authentication_key=creds.authentication_key, challenge=client_challenge,
                                     response=returned.value)
        except security.SecurityError:
            raise AssociationRefusedError("HLS-GMAC: the meter's f(CtoS) does not verify") from None

    async def release(self) -> None:
        """RLRQ; the answer is checked only for its tag (some meters get RLRE lengths wrong)."""
        user_information = None
        if self._credentials.ciphered:
            initiate = acse.encode_initiate_request(acse.InitiateRequest(
                proposed_conformance=int(READ_CONFORMANCE), client_max_receive_pdu_size=self._max_pdu))
            user_information = security.encode_ciphered_apdu(tag=GLO_INITIATE_REQUEST,
                                                             protected=self._protect(initiate))
        self.associated = False
        answer = await self._exchange(acse.encode_rlrq(acse.Rlrq(reason=0, user_information=user_information)))
        if answer[:1] != bytes([acse.RLRE]):
            raise PollingError(f"release answered with tag {answer[:1].hex()}")

    # -- reading ------------------------------------------------------------------------------

    async def get(self, attribute: Attribute, access: xdlms.AccessSelection | None = None) -> Data:
        """GET one attribute, following data blocks. Raises ReadRefusedError on a data-access-result."""
        answer = await self._service(xdlms.GetRequestNormal(self._invoke_id(), attribute.descriptor(), access))
        result = await self._whole(answer)
        if isinstance(result, xdlms.DataAccessResult):
            raise ReadRefusedError(f"{attribute}: {result.name.lower()}")
        assert isinstance(result, Data)
        return result

    async def get_with_list(self, attributes: Sequence[Attribute]) -> list[Data | xdlms.DataAccessResult]:
        """GET several attributes in one request when negotiated, one by one otherwise."""
        if Conformance.MULTIPLE_REFERENCES not in Conformance(self.conformance) or len(attributes) == 1:
            results: list[Data | xdlms.DataAccessResult] = []
            for attribute in attributes:
                answer = await self._service(xdlms.GetRequestNormal(self._invoke_id(), attribute.descriptor()))
                one = await self._whole(answer)
                assert not isinstance(one, list)
                results.append(one)
            return results
        items = tuple((a.descriptor(), None) for a in attributes)
        answer = await self._service(xdlms.GetRequestWithList(self._invoke_id(), items))
        if isinstance(answer, xdlms.GetResponseWithDataBlock):
            whole = await self._whole(answer, with_list=True)
            assert isinstance(whole, list)
            return whole
        if not isinstance(answer, xdlms.GetResponseWithList) or len(answer.results) != len(attributes):
            raise PollingError(f"unexpected answer to GET with-list: {type(answer).__name__}")
        return list(answer.results)

    async def get_range(self, profile: bytes, *, restricting: Attribute, start: dt.datetime,
                        end: dt.datetime | None) -> Data:
        """The rows of a profile generic buffer whose ``restricting`` column lies in start..end."""
        selection = range_selection(restricting=restricting, start=start, end=end)
        return await self.get(Attribute(PROFILE_GENERIC_CLASS, profile, 2), selection)

    async def _whole(self, answer: xdlms.XdlmsApdu, *, with_list: bool = False
                     ) -> Data | xdlms.DataAccessResult | list[Data | xdlms.DataAccessResult]:
        if isinstance(answer, xdlms.GetResponseNormal) and not with_list:
            return answer.result
        raw = bytearray()
        for _ in range(MAX_BLOCKS):
            if not isinstance(answer, xdlms.GetResponseWithDataBlock):
                raise PollingError(f"unexpected answer to GET: {type(answer).__name__}")
            if isinstance(answer.raw_data, xdlms.DataAccessResult):
                return answer.raw_data
            raw += answer.raw_data
            if answer.last_block:
                return _decode_blocks(bytes(raw), with_list=with_list)
            answer = await self._service(xdlms.GetRequestNext(self._invoke_id(), answer.block_number))
        raise PollingError(f"GET answer longer than {MAX_BLOCKS} blocks")

    # -- one service exchange -----------------------------------------------------------------

    async def _service(self, request: xdlms.XdlmsApdu) -> xdlms.XdlmsApdu:
        plain = xdlms.encode_xdlms(request)
        if self._credentials.ciphered:
            tag = GLO_ACTION_REQUEST if plain[0] == xdlms.ACTION_REQUEST else GLO_GET_REQUEST
            answer = await self._exchange(security.encode_ciphered_apdu(tag=tag, protected=self._protect(plain)))
            if answer[:1] in (bytes([GLO_GET_RESPONSE]), bytes([GLO_ACTION_RESPONSE])):
                try:
                    answer = self._unprotect(security.decode_ciphered_apdu(answer)[1])
                except RemoteProtocolError as exc:
                    raise PollingError(f"ciphered answer rejected: {exc}") from None
            elif answer[:1] != bytes([xdlms.EXCEPTION_RESPONSE]):  # the only plain answer allowed
                raise PollingError(f"plain answer {answer[:1].hex()} to a ciphered request")
        else:
            answer = await self._exchange(plain)
        try:
            response = xdlms.decode_xdlms(answer)
        except RemoteProtocolError as exc:
            raise PollingError(f"unreadable answer: {exc}") from None
        if isinstance(response, xdlms.ExceptionResponse):
            if response.service_error == xdlms.INVOCATION_COUNTER_ERROR:
                raise InvocationCounterRejectedError("the meter rejected our invocation counter",
                                                     response.invocation_counter)
            raise PollingError(f"exception-response (state {response.state_error}, service "
                               f"{response.service_error})")
        if isinstance(response, xdlms.ConfirmedServiceError):
            raise PollingError(f"confirmed-service-error {response.service}/{response.error_type}/"
                               f"{response.error_value}")
        invoke_id = getattr(response, "invoke_id", None)
        if invoke_id is not None and invoke_id & 0x0F != request.invoke_id & 0x0F:  # type: ignore[union-attr]
            raise PollingError("answer to another invoke-id")
        return response

    async def _exchange(self, apdu: bytes) -> bytes:
        self.exchanges += 1
        answer = await self._channel.request(apdu)
        if not answer:
            raise PollingError("empty answer")
        return answer

    def _invoke_id(self) -> int:
        self._invoke = (self._invoke + 1) % 16
        return INVOKE_PRIORITY_HIGH_CONFIRMED | self._invoke

    def _next_counter(self) -> int:
        assert self._counter is not None
        return self._counter.next_counter()

    def _protect(self, plaintext: bytes) -> bytes:
        creds = self._credentials
        assert creds.system_title and creds.block_cipher_key and creds.authentication_key
        return security.protect(security_control=SC_AUTHENTICATED_ENCRYPTED, system_title=creds.system_title,
                                invocation_counter=self._next_counter(), block_cipher_key=creds.block_cipher_key,
                                authentication_key=creds.authentication_key, plaintext=plaintext)

    def _unprotect(self, protected: bytes) -> bytes:
        creds = self._credentials
        if self._server_title is None:
            raise PollingError("ciphered answer but the meter gave no system title")
        assert creds.block_cipher_key and creds.authentication_key
        try:
            control, counter, plain = security.unprotect(system_title=self._server_title,
                                                         block_cipher_key=creds.block_cipher_key,
                                                         authentication_key=creds.authentication_key,
                                                         protected=protected)
        except security.SecurityError as exc:
            raise PollingError(f"ciphered answer rejected: {exc}") from None
        if not control & security.SecurityControl.AUTHENTICATION:
            raise PollingError("the meter's answer is not authenticated")
        if counter <= self._server_counter:  # a replayed answer from the meter
            raise PollingError("the meter's invocation counter went backwards")
        self._server_counter = counter
        return plain


def _decode_blocks(raw: bytes, *, with_list: bool) -> Data | list[Data | xdlms.DataAccessResult]:
    """The data of a GET answer sent in blocks (for with-list: a count, then Get-Data-Results)."""
    try:
        if not with_list:
            data, end = axdr.decode(raw)
            if end != len(raw):
                raise PollingError(f"{len(raw) - end} octets after the data of a GET answer")
            return data
        count, offset = axdr.decode_length(raw, 0)
        results: list[Data | xdlms.DataAccessResult] = []
        for _ in range(count):
            if offset >= len(raw):
                raise PollingError("truncated GET with-list answer")
            choice, offset = raw[offset], offset + 1
            if choice == 0:
                data, offset = axdr.decode(raw, offset)
                results.append(data)
            else:
                results.append(xdlms.DataAccessResult(raw[offset]))
                offset += 1
        return results
    except (RemoteProtocolError, ValueError, IndexError) as exc:
        raise PollingError(f"unreadable GET data: {exc}") from None
