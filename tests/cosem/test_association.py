"""Associations at APDU level: AARQ/AARE, HLS-GMAC, ciphering, counters, release."""

from __future__ import annotations

import pytest

from gateway.codec import acse, security, xdlms
from gateway.codec.acse import AcseServiceUser, AssociationResult, Mechanism
from gateway.codec.axdr import Data
from gateway.codec.xdlms import DataAccessResult, ExceptionResponse
from gateway.cosem.association import ClientPolicy
from gateway.cosem.server import LogicalDevice
from gateway.sim.meter import LOGICAL_DEVICE_NAME, MANAGEMENT_CONFORMANCE, PUBLIC_CONFORMANCE
from tests.cosem.client import ALL_CONFORMANCE, Keys, TestClient
from tests.cosem.conftest import AUTHENTICATION_KEY, BLOCK_CIPHER_KEY, KEYS, SETTINGS

CURRENT_ASSOCIATION = bytes([0, 0, 40, 0, 0, 255])


def hls_associate(client: TestClient) -> acse.Aare:
    aare = client.associate(mechanism=Mechanism.HLS_GMAC)
    assert aare.result is AssociationResult.ACCEPTED
    answer = client.hls(aare)
    assert answer.result is xdlms.ActionResult.SUCCESS
    return aare


def exception_of(answer: bytes) -> ExceptionResponse:
    pdu = xdlms.decode_xdlms(answer)
    assert isinstance(pdu, ExceptionResponse)
    return pdu


def test_public_association_negotiates_the_common_conformance(public: TestClient, meter: LogicalDevice) -> None:
    aare = public.associate(conformance=ALL_CONFORMANCE, max_pdu=512)
    assert aare.result is AssociationResult.ACCEPTED
    assert aare.diagnostic == AcseServiceUser.NULL
    assert aare.responding_ap_title is None and aare.mechanism is None
    initiate = public.initiate_response(aare)
    assert initiate.negotiated_conformance == PUBLIC_CONFORMANCE & ALL_CONFORMANCE
    assert initiate.server_max_receive_pdu_size == 1024
    assert meter.counters.associations == 1
    assert public.get(1, LOGICAL_DEVICE_NAME, 2) == Data.octet_string(SETTINGS.logical_device_name)


def test_unknown_client_sap_gets_a_rejected_aare_not_silence(meter: LogicalDevice) -> None:
    stranger = TestClient(meter, client_sap=77)
    aare = stranger.associate()
    assert aare.result is AssociationResult.REJECTED_PERMANENT
    assert aare.diagnostic == AcseServiceUser.NO_REASON_GIVEN
    assert meter.counters.rejections == 1
    # and nothing is open for it afterwards
    answer = stranger.send(xdlms.encode_xdlms(xdlms.GetRequestNormal(0xC1, xdlms.AttributeDescriptor(
        1, LOGICAL_DEVICE_NAME, 2))))
    assert exception_of(answer).state_error == 1


WrongTerms = tuple[int, Mechanism | None, Keys | None, int | None, AcseServiceUser]


@pytest.mark.parametrize(
    "case",
    [
        (1, None, KEYS, None, AcseServiceUser.AUTHENTICATION_MECHANISM_NAME_REQUIRED),
        (1, Mechanism.LLS, KEYS, None, AcseServiceUser.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED),
        (16, Mechanism.HLS_GMAC, None, None, AcseServiceUser.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED),
        (1, Mechanism.HLS_GMAC, KEYS, acse.APPLICATION_CONTEXT_LN_NO_CIPHERING,
         AcseServiceUser.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED),
        (16, None, None, acse.APPLICATION_CONTEXT_LN_CIPHERING, AcseServiceUser.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED),
    ],
)
def test_wrong_terms_are_rejected_with_the_reason(meter: LogicalDevice, case: WrongTerms) -> None:
    client_sap, mechanism, keys, context, diagnostic = case
    client = TestClient(meter, client_sap=client_sap, keys=keys)
    aare = client.associate(mechanism=mechanism, application_context=context, password=b"12345678")
    assert aare.result is AssociationResult.REJECTED_PERMANENT
    assert aare.diagnostic == diagnostic
    assert meter.association(client_sap) is None
    assert meter.counters.rejections == 1


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [({"dlms_version": 5}, 1), ({"conformance": 0x000100}, 2), ({"max_pdu": 20}, 3)],
)
def test_refused_initiate_request_gets_a_confirmed_service_error(
    public: TestClient, kwargs: dict[str, int], reason: int
) -> None:
    aare = public.associate(**kwargs)
    assert aare.result is AssociationResult.REJECTED_PERMANENT
    assert aare.user_information is not None
    error = xdlms.decode_xdlms(aare.user_information)
    assert error == xdlms.ConfirmedServiceError(service=1, error_type=6, error_value=reason)


def test_hls_gmac_association_is_pending_until_f_stoc_verifies(management: TestClient, meter: LogicalDevice) -> None:
    aare = management.associate(mechanism=Mechanism.HLS_GMAC, challenge=b"0123456789ABCDEF")
    assert aare.result is AssociationResult.ACCEPTED
    assert aare.diagnostic == AcseServiceUser.AUTHENTICATION_REQUIRED
    assert aare.responding_ap_title == SETTINGS.system_title
    assert aare.mechanism is Mechanism.HLS_GMAC
    stoc = aare.responding_authentication_value
    assert stoc is not None and 8 <= len(stoc) <= 64
    assert aare.user_information is not None and aare.user_information[0] == 0x28  # glo-initiateResponse
    initiate = management.initiate_response(aare)
    assert initiate.negotiated_conformance == MANAGEMENT_CONFORMANCE & ALL_CONFORMANCE

    # pending: nothing but reply_to_HLS_authentication
    assert management.get(1, LOGICAL_DEVICE_NAME, 2) is DataAccessResult.SCOPE_OF_ACCESS_VIOLATED
    assert management.get(15, CURRENT_ASSOCIATION, 8) is DataAccessResult.SCOPE_OF_ACCESS_VIOLATED

    answer = management.hls(aare)
    assert answer.result is xdlms.ActionResult.SUCCESS
    assert isinstance(answer.return_parameters, Data)
    f_ctos = answer.return_parameters.value
    assert isinstance(f_ctos, bytes)
    # f(CtoS) is GMAC over our challenge under the server's system title: it proves the meter holds the keys
    security.verify_hls_gmac(
        system_title=SETTINGS.system_title,
        block_cipher_key=BLOCK_CIPHER_KEY,
        authentication_key=AUTHENTICATION_KEY,
        challenge=b"0123456789ABCDEF",
        response=f_ctos,
    )
    assert management.get(15, CURRENT_ASSOCIATION, 8) == Data.enum(2)  # associated
    assert management.get(1, LOGICAL_DEVICE_NAME, 2) == Data.octet_string(SETTINGS.logical_device_name)


def test_wrong_authentication_key_fails_hls_and_the_association_stays_unusable(
    management: TestClient, meter: LogicalDevice
) -> None:
    aare = management.associate(mechanism=Mechanism.HLS_GMAC)
    wrong = Keys(block_cipher_key=BLOCK_CIPHER_KEY, authentication_key=bytes(16))
    answer = management.hls(aare, keys=wrong)
    assert answer.result is not xdlms.ActionResult.SUCCESS
    assert answer.return_parameters is None
    assert meter.counters.hls_failures == 1
    assert management.get(1, LOGICAL_DEVICE_NAME, 2) is DataAccessResult.SCOPE_OF_ACCESS_VIOLATED
    # a second try with the right keys does not open it either
    assert management.hls(aare).result is not xdlms.ActionResult.SUCCESS


@pytest.mark.parametrize("wrong", ["block_cipher_key", "authentication_key"])
def test_wrong_keys_cannot_even_open_the_ciphered_initiate(meter: LogicalDevice, wrong: str) -> None:
    keys = Keys(block_cipher_key=BLOCK_CIPHER_KEY, authentication_key=AUTHENTICATION_KEY)
    setattr(keys, wrong, bytes(range(16)))
    client = TestClient(meter, client_sap=1, keys=keys)
    aare = client.associate(mechanism=Mechanism.HLS_GMAC)
    assert aare.result is AssociationResult.REJECTED_PERMANENT
    assert meter.counters.decrypt_failures == 1
    assert meter.association(1) is None


def test_replayed_invocation_counter_is_rejected_and_counted(management: TestClient, meter: LogicalDevice) -> None:
    hls_associate(management)
    get = xdlms.encode_xdlms(xdlms.GetRequestNormal(0xC1, xdlms.AttributeDescriptor(1, LOGICAL_DEVICE_NAME, 2)))
    replay = security.encode_ciphered_apdu(tag=0xC8, protected=management.protect(get))
    first = meter.handle(client_sap=1, apdu=replay)
    assert first is not None and first[0] == 0xCC
    again = meter.handle(client_sap=1, apdu=replay)
    assert again is not None
    error = exception_of(again)
    assert (error.state_error, error.service_error) == (1, 6)
    assert error.invocation_counter == management.invocation_counter + 1
    older = security.encode_ciphered_apdu(tag=0xC8, protected=management.protect(get, counter=1))
    assert exception_of(meter.handle(client_sap=1, apdu=older) or b"").service_error == 6
    assert meter.counters.replay_rejections == 2
    # the association survives the attack
    assert management.get(1, LOGICAL_DEVICE_NAME, 2) == Data.octet_string(SETTINGS.logical_device_name)


def test_counter_is_kept_across_associations(management: TestClient, meter: LogicalDevice) -> None:
    hls_associate(management)
    management.release()
    restarted = TestClient(meter, client_sap=1, keys=KEYS)  # a head-end that forgot its counter
    aare = restarted.associate(mechanism=Mechanism.HLS_GMAC)
    assert aare.result is AssociationResult.REJECTED_PERMANENT
    assert meter.counters.replay_rejections == 1
    # the public client can learn which counter to use
    public = TestClient(meter, client_sap=16)
    public.associate()
    expected = public.get(1, bytes([0, 0, 43, 1, 0, 255]), 2)
    assert expected == Data.double_long_unsigned(management.invocation_counter + 1)
    resumed = TestClient(meter, client_sap=1, keys=KEYS, invocation_counter=management.invocation_counter)
    hls_associate(resumed)


def test_tampered_ciphertext_is_a_deciphering_error(management: TestClient, meter: LogicalDevice) -> None:
    hls_associate(management)
    get = xdlms.encode_xdlms(xdlms.GetRequestNormal(0xC1, xdlms.AttributeDescriptor(1, LOGICAL_DEVICE_NAME, 2)))
    apdu = bytearray(security.encode_ciphered_apdu(tag=0xC8, protected=management.protect(get)))
    apdu[10] ^= 0x01
    error = exception_of(meter.handle(client_sap=1, apdu=bytes(apdu)) or b"")
    assert (error.state_error, error.service_error) == (1, 5)
    assert meter.counters.decrypt_failures == 1
    assert management.get(1, LOGICAL_DEVICE_NAME, 2) == Data.octet_string(SETTINGS.logical_device_name)


def test_plain_request_on_a_ciphered_association_is_refused(management: TestClient, meter: LogicalDevice) -> None:
    hls_associate(management)
    get = xdlms.encode_xdlms(xdlms.GetRequestNormal(0xC1, xdlms.AttributeDescriptor(1, LOGICAL_DEVICE_NAME, 2)))
    error = exception_of(meter.handle(client_sap=1, apdu=get) or b"")
    assert (error.state_error, error.service_error) == (1, 1)


def test_general_glo_ciphering_is_answered_in_kind_with_fresh_counters(meter: LogicalDevice) -> None:
    client = TestClient(meter, client_sap=1, keys=KEYS, general=True)
    hls_associate(client)
    for _ in range(3):
        assert client.get(1, LOGICAL_DEVICE_NAME, 2) == Data.octet_string(SETTINGS.logical_device_name)
    assert all(answer[0] == 0xDB for answer in client.wire[-3:])
    # every APDU we protected (initiate response, f(CtoS), answers) used a new counter
    assert client.server_counters == sorted(set(client.server_counters))
    assert meter.invocation_counter >= len(client.server_counters) + 1  # f(CtoS) used one too


def test_ciphered_release_answers_a_ciphered_initiate_response(management: TestClient, meter: LogicalDevice) -> None:
    hls_associate(management)
    rlre = management.release()
    assert rlre.reason == 0
    assert rlre.user_information is not None and rlre.user_information[0] == 0x28
    plain = management.unprotect(security.decode_ciphered_apdu(rlre.user_information)[1])
    assert acse.decode_initiate_response(plain).server_max_receive_pdu_size == 1024
    assert meter.association(1) is None
    assert meter.counters.releases == 1


def test_link_down_ends_the_association(public: TestClient, meter: LogicalDevice) -> None:
    public.associate()
    meter.release(client_sap=16)
    answer = public.send(xdlms.encode_xdlms(xdlms.GetRequestNormal(0xC1, xdlms.AttributeDescriptor(
        1, LOGICAL_DEVICE_NAME, 2))))
    assert exception_of(answer).service_error == 1


def test_hls_without_a_calling_ap_title_is_refused(meter: LogicalDevice) -> None:
    client = TestClient(meter, client_sap=1, keys=KEYS)
    aarq = acse.decode_aarq(client.aarq(mechanism=Mechanism.HLS_GMAC))
    untitled = acse.encode_aarq(acse.Aarq(
        application_context=aarq.application_context, mechanism=aarq.mechanism,
        calling_authentication_value=aarq.calling_authentication_value, user_information=aarq.user_information,
    ))
    aare = acse.decode_aare(client.send(untitled))
    assert aare.result is AssociationResult.REJECTED_PERMANENT
    assert aare.diagnostic == 3  # calling-AP-title-not-recognized


def test_a_refused_aarq_leaves_the_open_association_alone(public: TestClient, meter: LogicalDevice) -> None:
    public.associate()
    assert public.associate(dlms_version=5).result is AssociationResult.REJECTED_PERMANENT
    assert public.get(1, LOGICAL_DEVICE_NAME, 2) == Data.octet_string(SETTINGS.logical_device_name)


def test_inconsistent_client_policies_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="security context"):
        ClientPolicy(client_sap=1, mechanism=Mechanism.HLS_GMAC, security=None, require_ciphering=False,
                     conformance=ALL_CONFORMANCE)
    with pytest.raises(ValueError, match="password"):
        ClientPolicy(client_sap=2, mechanism=Mechanism.LLS, security=None, require_ciphering=False,
                     conformance=ALL_CONFORMANCE)
    policy = ClientPolicy(client_sap=3, mechanism=Mechanism.LLS, security=None, require_ciphering=False,
                          conformance=ALL_CONFORMANCE, lls_password=b"secret-pw")
    assert "secret-pw" not in repr(policy)
