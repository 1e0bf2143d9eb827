"""Security suite 0: Green Book vectors, tamper detection, framing, and a full HLS-GMAC exchange with gurux."""

from __future__ import annotations

import struct

import pytest
from gurux_dlms import GXByteBuffer, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType, Security
from gurux_dlms.secure import GXDLMSSecureClient
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec.acse import (
    APPLICATION_CONTEXT_LN_CIPHERING,
    Aare,
    AcseServiceUser,
    AssociationResult,
    Conformance,
    InitiateRequest,
    InitiateResponse,
    Mechanism,
    decode_aarq,
    decode_initiate_request,
    encode_aare,
    encode_initiate_request,
    encode_initiate_response,
)
from gateway.codec.axdr import Data
from gateway.codec.errors import LocalProtocolError, RemoteProtocolError
from gateway.codec.obis import obis
from gateway.codec.security import (
    DED_TAGS,
    GLO_TAGS,
    PLAIN_TAGS,
    SecurityContext,
    SecurityControl,
    SecurityError,
    SecurityUsageError,
    decode_ciphered_apdu,
    decode_general_ded,
    decode_general_glo,
    encode_ciphered_apdu,
    encode_general_ded,
    encode_general_glo,
    hls_gmac,
    protect,
    unprotect,
    verify_hls_gmac,
)
from gateway.codec.xdlms import (
    ActionRequestNormal,
    ActionResponseNormal,
    ActionResult,
    MethodDescriptor,
    decode_xdlms,
    encode_xdlms,
)

FUZZ = settings(max_examples=200, deadline=None)

# The Green Book's worked AES-GCM example (DLMS UA 1000-2 Ed. 8, Table 40 "ciphered APDU" and Table 43
# "HLS-GMAC"), widely reproduced: e.g. xdom/jdlms src/test/java/org/openmuc/jdlms/CipheringTest.java.
EK = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
AK = bytes.fromhex("d0d1d2d3d4d5d6d7d8d9dadbdcdddedf")
SERVER_TITLE = bytes.fromhex("4d4d4d0000bc614e")
CLIENT_TITLE = bytes.fromhex("4d4d4d0000000001")
IC = 0x01234567
GET_CLOCK = bytes.fromhex("c0010000080000010000ff0200")
GLO_GET = {
    0x10: "c81e1001234567c0010000080000010000ff020006725d910f9221d263877516",
    0x20: "c8122001234567411312ff935a47566827c467bc",
    0x30: "c81e3001234567411312ff935a47566827c467bc7d825c3be4a77c3fcc056b6b",
}
# The same source's glo-initiateRequest (dedicated key 00112233..FF, conformance 00 7E 1F, max PDU 1200).
GLO_INITIATE = "21303001234567801302ff8a7874133d414ced25b42534d28db0047720606b175bd52211be6841db204d39ee6fdb8e356855"
DEDICATED_KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


def _protect(security_control: int, plaintext: bytes, *, counter: int = IC, title: bytes = SERVER_TITLE) -> bytes:
    return protect(security_control=security_control, system_title=title, invocation_counter=counter,
                   block_cipher_key=EK, authentication_key=AK, plaintext=plaintext)


def _unprotect(
    protected: bytes, *, title: bytes = SERVER_TITLE, ek: bytes = EK, ak: bytes = AK
) -> tuple[int, int, bytes]:
    return unprotect(system_title=title, block_cipher_key=ek, authentication_key=ak, protected=protected)


@pytest.mark.parametrize(("security_control", "wire"), GLO_GET.items())
def test_green_book_glo_get_request(security_control: int, wire: str) -> None:
    apdu = encode_ciphered_apdu(tag=GLO_TAGS[GET_CLOCK[0]], protected=_protect(security_control, GET_CLOCK))
    assert apdu == bytes.fromhex(wire)
    tag, protected = decode_ciphered_apdu(apdu)
    assert (tag, PLAIN_TAGS[tag]) == (0xC8, 0xC0)
    assert _unprotect(protected) == (security_control, IC, GET_CLOCK)


def test_green_book_glo_initiate_request() -> None:
    initiate = encode_initiate_request(InitiateRequest(0x007E1F, 1200, dedicated_key=DEDICATED_KEY))
    assert encode_ciphered_apdu(tag=GLO_TAGS[0x01], protected=_protect(0x30, initiate)) == bytes.fromhex(GLO_INITIATE)
    _tag, protected = decode_ciphered_apdu(bytes.fromhex(GLO_INITIATE))
    _sc, _ic, plaintext = _unprotect(protected)
    assert decode_initiate_request(plaintext).dedicated_key == DEDICATED_KEY


def test_green_book_hls_gmac_passes() -> None:
    stoc, ctos = b"P6wRJ21F", b"K56iVagY"
    # Pass 3: the client answers StoC under its own title and counter 1.
    f_stoc = hls_gmac(system_title=CLIENT_TITLE, invocation_counter=1, block_cipher_key=EK, authentication_key=AK,
                      challenge=stoc)
    assert f_stoc == bytes.fromhex("10000000011a52fe7dd3e72748973c1e28")
    # Pass 4: the server answers CtoS under its title and counter 01234567.
    f_ctos = hls_gmac(system_title=SERVER_TITLE, invocation_counter=IC, block_cipher_key=EK, authentication_key=AK,
                      challenge=ctos)
    assert f_ctos == bytes.fromhex("1001234567fe1466afb3dbcd4f9389e2b7")
    assert verify_hls_gmac(system_title=CLIENT_TITLE, block_cipher_key=EK, authentication_key=AK, challenge=stoc,
                           response=f_stoc) == 1
    for wrong in (dict(challenge=ctos, response=f_stoc), dict(challenge=stoc, response=f_ctos),
                  dict(challenge=stoc, response=f_stoc[:-1]), dict(challenge=stoc, response=b"\x30" + f_stoc[1:])):
        with pytest.raises(SecurityError):
            verify_hls_gmac(system_title=CLIENT_TITLE, block_cipher_key=EK, authentication_key=AK, **wrong)


# --- tamper, wrong keys, bad headers ---


@FUZZ
@given(st.sampled_from([0x10, 0x30]), st.data())
def test_any_flipped_bit_after_the_security_control_is_caught(security_control: int, data: st.DataObject) -> None:
    protected = bytearray(_protect(security_control, GET_CLOCK))
    bit = data.draw(st.integers(8, 8 * len(protected) - 1))
    protected[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(SecurityError):
        _unprotect(bytes(protected))


@pytest.mark.parametrize("security_control", [0x10, 0x30])
def test_wrong_keys_or_title_are_caught(security_control: int) -> None:
    protected = _protect(security_control, GET_CLOCK)
    other = bytes(16)
    for kwargs in (dict(ek=other), dict(ak=other), dict(title=CLIENT_TITLE)):
        with pytest.raises(SecurityError, match="tag"):
            _unprotect(protected, **kwargs)


def test_truncated_and_unsupported_headers_raise() -> None:
    protected = _protect(0x30, GET_CLOCK)
    for cut in range(5 + 12):
        with pytest.raises(SecurityError):
            _unprotect(protected[:cut])
    for security_control in (0x00, 0x31, 0xB0, 0x40):
        with pytest.raises(SecurityError):
            _unprotect(bytes([security_control]) + protected[1:])


def test_encryption_only_carries_no_integrity() -> None:
    # Documented limit: the caller must demand the authentication bit in its security policy.
    protected = bytearray(_protect(0x20, GET_CLOCK))
    protected[-1] ^= 1
    security_control, _, plaintext = _unprotect(bytes(protected))
    assert not security_control & SecurityControl.AUTHENTICATION
    assert plaintext != GET_CLOCK


@pytest.mark.parametrize(
    "kwargs",
    [dict(security_control=0x31), dict(security_control=0xB0), dict(security_control=0x00),
     dict(security_control=0x40), dict(system_title=bytes(7)), dict(block_cipher_key=bytes(15)),
     dict(authentication_key=bytes(32)), dict(invocation_counter=2**32), dict(invocation_counter=-1)],
)
def test_protect_refuses_what_it_cannot_do(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = dict(security_control=0x30, system_title=SERVER_TITLE, invocation_counter=1,
                                        block_cipher_key=EK, authentication_key=AK, plaintext=b"x")
    arguments.update(kwargs)
    with pytest.raises(SecurityUsageError) as info:
        protect(**arguments)  # type: ignore[arg-type]
    assert isinstance(info.value, LocalProtocolError)


@FUZZ
@given(st.sampled_from([0x10, 0x20, 0x30, 0x50, 0x70]), st.integers(0, 2**32 - 1), st.binary(max_size=300))
def test_round_trip(security_control: int, counter: int, plaintext: bytes) -> None:
    protected = _protect(security_control, plaintext, counter=counter)
    assert _unprotect(protected) == (security_control, counter, plaintext)


@FUZZ
@given(st.binary(max_size=60))
def test_any_bytes_unprotect_or_raise(protected: bytes) -> None:
    try:
        _unprotect(protected)
    except SecurityError as exc:
        assert isinstance(exc, RemoteProtocolError)


def test_context_repr_hides_keys() -> None:
    context = SecurityContext(system_title=SERVER_TITLE, block_cipher_key=EK, authentication_key=AK)
    for text in (repr(context), str(context), f"{context!r}"):
        assert SERVER_TITLE.hex() in text
        for key in (EK, AK):
            assert key.hex() not in text
            assert repr(key) not in text
            assert key.hex().upper() not in text
    with pytest.raises(SecurityUsageError):
        SecurityContext(system_title=SERVER_TITLE, block_cipher_key=EK[:8], authentication_key=AK)


# --- framing ---


def test_tag_tables() -> None:
    assert GLO_TAGS[0x01] == 0x21 and GLO_TAGS[0x08] == 0x28 and GLO_TAGS[0xC7] == 0xCF
    assert DED_TAGS[0xC0] == 0xD0 and DED_TAGS[0xC7] == 0xD7
    assert 0xD8 not in GLO_TAGS and 0xD8 not in DED_TAGS  # exception-response travels plain
    assert len(PLAIN_TAGS) == len(GLO_TAGS) + len(DED_TAGS)


@pytest.mark.parametrize("size", [0, 0x7F, 0x80, 0x100, 0x10000])
def test_ciphered_apdu_lengths(size: int) -> None:
    protected = bytes(size)
    apdu = encode_ciphered_apdu(tag=0xCC, protected=protected)
    assert decode_ciphered_apdu(apdu) == (0xCC, protected)


@pytest.mark.parametrize("wire", ["", "c0", "c805010203", "c80101ff", "c88401", "c802000000"])
def test_malformed_ciphered_apdu_raises(wire: str) -> None:
    with pytest.raises(SecurityError):
        decode_ciphered_apdu(bytes.fromhex(wire))


def test_general_glo_and_ded() -> None:
    protected = _protect(0x30, GET_CLOCK)
    apdu = encode_general_glo(system_title=SERVER_TITLE, protected=protected)
    assert apdu == b"\xdb\x08" + SERVER_TITLE + bytes([len(protected)]) + protected
    assert decode_general_glo(apdu) == (SERVER_TITLE, protected)
    ded = encode_general_ded(system_title=SERVER_TITLE, protected=protected)
    assert ded[0] == 0xDC and decode_general_ded(ded) == (SERVER_TITLE, protected)
    for bad in (apdu[:-1], apdu + b"\x00", b"\xdb\x07" + apdu[2:], ded, b"\xdb"):
        with pytest.raises(SecurityError):
            decode_general_glo(bad)
    with pytest.raises(SecurityUsageError):
        encode_general_glo(system_title=bytes(4), protected=protected)


# --- a full HLS-GMAC association with gurux as the head-end, our codecs as the meter ---


def _unwrap(frame: bytes | bytearray) -> bytes:
    version, _source, _destination, length = struct.unpack(">HHHH", bytes(frame[:8]))
    assert (version, length) == (1, len(frame) - 8)
    return bytes(frame[8:])


def _wrap(apdu: bytes) -> bytes:
    return struct.pack(">HHHH", 1, 1, 1, len(apdu)) + apdu


def _gurux_client() -> GXDLMSSecureClient:
    client = GXDLMSSecureClient(True, 1, 1, Authentication.HIGH_GMAC, None, InterfaceType.WRAPPER)
    client.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
    client.ciphering.systemTitle = CLIENT_TITLE
    client.ciphering.blockCipherKey = EK
    client.ciphering.authenticationKey = AK
    client.ciphering.invocationCounter = 5
    return client


def _open(protected_apdu: bytes, *, title: bytes) -> tuple[int, int, bytes]:
    tag, protected = decode_ciphered_apdu(protected_apdu)
    security_control, counter, plaintext = _unprotect(protected, title=title)
    assert PLAIN_TAGS[tag] == plaintext[0]
    return security_control, counter, plaintext


def _accepting_aare(stoc: bytes, *, server_counter: int) -> bytes:
    negotiated = Conformance.GET | Conformance.SET | Conformance.ACTION | Conformance.GENERAL_PROTECTION
    initiate = encode_initiate_response(InitiateResponse(int(negotiated), 1024))
    protected = _protect(0x30, initiate, counter=server_counter)
    return encode_aare(Aare(
        APPLICATION_CONTEXT_LN_CIPHERING, AssociationResult.ACCEPTED, AcseServiceUser.AUTHENTICATION_REQUIRED,
        responding_ap_title=SERVER_TITLE, mechanism=Mechanism.HLS_GMAC, responding_authentication_value=stoc,
        user_information=encode_ciphered_apdu(tag=GLO_TAGS[0x08], protected=protected),
    ))


def _associate_through_pass_3(client: GXDLMSSecureClient, stoc: bytes) -> tuple[bytes, ActionRequestNormal]:
    """Runs AARQ/AARE and returns (CtoS, the decoded pass-3 ACTION request)."""
    [frame] = client.aarqRequest()
    aarq = decode_aarq(_unwrap(frame))
    assert (aarq.application_context, aarq.mechanism) == (APPLICATION_CONTEXT_LN_CIPHERING, Mechanism.HLS_GMAC)
    assert aarq.calling_ap_title == CLIENT_TITLE
    assert aarq.calling_authentication_value is not None and aarq.user_information is not None
    security_control, counter, plaintext = _open(aarq.user_information, title=CLIENT_TITLE)
    assert (security_control, counter) == (0x30, 5)
    assert decode_initiate_request(plaintext).dlms_version == 6
    client.parseAareResponse(GXByteBuffer(_accepting_aare(stoc, server_counter=100)))
    assert client.maxReceivePDUSize == 1024
    [frame] = client.getApplicationAssociationRequest()
    _sc, _ic, plaintext = _open(_unwrap(frame), title=CLIENT_TITLE)
    request = decode_xdlms(plaintext)
    assert isinstance(request, ActionRequestNormal)
    assert request.method == MethodDescriptor(15, obis("0.0.40.0.0.255"), 1)
    return aarq.calling_authentication_value, request


def _pass_4(client: GXDLMSSecureClient, request: ActionRequestNormal, f_ctos: bytes) -> None:
    answer = encode_xdlms(ActionResponseNormal(request.invoke_id, ActionResult.SUCCESS, Data.octet_string(f_ctos)))
    apdu = encode_ciphered_apdu(tag=GLO_TAGS[0xC7], protected=_protect(0x30, answer, counter=102))
    reply = GXReplyData()
    client.getData(_wrap(apdu), reply)
    client.parseApplicationAssociationResponse(reply.data)


def test_gurux_hls_gmac_association_end_to_end() -> None:
    client, stoc = _gurux_client(), b"server-challenge"
    ctos, request = _associate_through_pass_3(client, stoc)
    assert request.parameters is not None and isinstance(request.parameters.value, bytes)
    client_counter = verify_hls_gmac(system_title=CLIENT_TITLE, block_cipher_key=EK, authentication_key=AK,
                                     challenge=stoc, response=request.parameters.value)
    assert client_counter > 5
    f_ctos = hls_gmac(system_title=SERVER_TITLE, invocation_counter=101, block_cipher_key=EK, authentication_key=AK,
                      challenge=ctos)
    _pass_4(client, request, f_ctos)  # gurux checks f(CtoS) and raises if it is wrong


def test_gurux_refuses_a_wrong_f_ctos_and_we_refuse_a_wrong_f_stoc() -> None:
    client, stoc = _gurux_client(), b"server-challenge"
    ctos, request = _associate_through_pass_3(client, stoc)
    assert request.parameters is not None and isinstance(request.parameters.value, bytes)
    with pytest.raises(SecurityError):
        verify_hls_gmac(system_title=CLIENT_TITLE, block_cipher_key=EK, authentication_key=AK,
                        challenge=b"another-challeng", response=request.parameters.value)
    wrong = hls_gmac(system_title=SERVER_TITLE, invocation_counter=101, block_cipher_key=EK, authentication_key=AK,
                     challenge=ctos[::-1])
    with pytest.raises(Exception, match="do not match"):  # gurux raises a bare Exception here
        _pass_4(client, request, wrong)
