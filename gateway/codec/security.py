"""Security suite 0: AES-GCM-128 ciphering of xDLMS APDUs and HLS-GMAC (Green Book 9.2.7).

    protected = SC(1) | IC(4) | ciphertext-or-plaintext | tag(12)    IV = system title(8) | IC(4)
    SC 0x30 authenticated+encrypted: AAD = SC | AK                   ciphertext, tag
    SC 0x10 authenticated only:      AAD = SC | AK | plaintext       plaintext, tag
    SC 0x20 encrypted only:          no AAD, no tag                  ciphertext
    SC bit 6 (0x40, key set):        the global broadcast key (GBEK) replaces the unicast key;
                                     the AAD keeps the one authentication key (AK)
    HLS-GMAC f(challenge) = 0x10 | IC | GMAC(AAD = 0x10 | AK | challenge)
    glo-/ded- APDU  = tag | A-XDR length | protected
    general-glo/ded = DB/DC | length | system title | length | protected

The caller checks the returned security control against its security policy: an encryption-only
APDU carries no tag, so only SC with the authentication bit proves integrity. Keys never appear
in messages or reprs.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import IntFlag

from gateway.codec import axdr
from gateway.codec.errors import LocalProtocolError, RemoteProtocolError

SUITE_MASK = 0x0F  # Green Book 9.2.7.2.2: security suite id in the low nibble
SUITE_0 = 0  # AES-GCM-128
TAG_OCTETS = 12  # Green Book 9.2.7.2.4.2: authentication tag truncated to 96 bits
SYSTEM_TITLE_OCTETS = 8  # Green Book 9.2.7.2.4.1: IV fixed field
KEY_OCTETS = 16  # AES-128
_HEADER_OCTETS = 5  # SC(1) + IC(4)
_MAX_COUNTER = 0xFFFF_FFFF
GENERAL_GLO_CIPHERING, GENERAL_DED_CIPHERING = 0xDB, 0xDC  # Green Book 9.5, xDLMS-APDU tags

# Green Book 9.5: service-specific ciphered tags. glo- = plain + 0x20 for the 01..18 range, C0.. -> C8..
GLO_TAGS = {
    0x01: 0x21, 0x05: 0x25, 0x06: 0x26, 0x08: 0x28, 0x0C: 0x2C, 0x0D: 0x2D, 0x0E: 0x2E, 0x16: 0x36, 0x18: 0x38,
    0xC0: 0xC8, 0xC1: 0xC9, 0xC2: 0xCA, 0xC3: 0xCB, 0xC4: 0xCC, 0xC5: 0xCD, 0xC7: 0xCF,
}
# ded- = plain + 0x40 for the 01..18 range, C0.. -> D0..; exception-response (D8) has no ciphered form.
DED_TAGS = {
    0x01: 0x41, 0x05: 0x45, 0x06: 0x46, 0x08: 0x48, 0x0C: 0x4C, 0x0D: 0x4D, 0x0E: 0x4E, 0x16: 0x56, 0x18: 0x58,
    0xC0: 0xD0, 0xC1: 0xD1, 0xC2: 0xD2, 0xC3: 0xD3, 0xC4: 0xD4, 0xC5: 0xD5, 0xC7: 0xD7,
}
PLAIN_TAGS = {ciphered: plain for table in (GLO_TAGS, DED_TAGS) for plain, ciphered in table.items()}


class SecurityError(RemoteProtocolError):
    """A protected APDU that fails its tag, has a bad header or a wrong length."""


class SecurityUsageError(LocalProtocolError):
    """Keys, titles, counters or a security control we cannot cipher with."""


class SecurityControl(IntFlag):
    AUTHENTICATION = 0x10
    ENCRYPTION = 0x20
    BROADCAST_KEY = 0x40
    COMPRESSION = 0x80


@dataclass(frozen=True, slots=True, repr=False)
class SecurityContext:
    """Our system title and the keys of one security setup."""

    system_title: bytes
    block_cipher_key: bytes
    authentication_key: bytes

    def __post_init__(self) -> None:
        _check(system_title=self.system_title, block_cipher_key=self.block_cipher_key,
               authentication_key=self.authentication_key, invocation_counter=0)

    def __repr__(self) -> str:
        return f"SecurityContext(system_title={self.system_title.hex()}, keys=<hidden>)"


def _check(*, system_title: bytes, block_cipher_key: bytes, authentication_key: bytes, invocation_counter: int) -> None:
    if len(system_title) != SYSTEM_TITLE_OCTETS:
        raise SecurityUsageError(f"system title of {len(system_title)} octets")
    if len(block_cipher_key) != KEY_OCTETS or len(authentication_key) != KEY_OCTETS:
        raise SecurityUsageError("suite 0 keys are 16 octets")
    if not 0 <= invocation_counter <= _MAX_COUNTER:
        raise SecurityUsageError("invocation counter out of range")


# The AES primitives are imported where they are used: a relaying gateway never deciphers (the HES
# holds the meters' keys), and loading them costs an idle board some 7 MB it would not use.
def _gcm(key: bytes, iv: bytes, *, aad: bytes, data: bytes) -> tuple[bytes, bytes]:
    """(ciphertext, 12-octet tag)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: PLC0415 - see above

    encryptor = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
    encryptor.authenticate_additional_data(aad)
    ciphertext = encryptor.update(data) + encryptor.finalize()
    return ciphertext, encryptor.tag[:TAG_OCTETS]


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    """GCM's keystream without its tag: counter blocks start at IV | 00000002 (NIST SP 800-38D)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: PLC0415

    cipher = Cipher(algorithms.AES(key), modes.CTR(iv + b"\x00\x00\x00\x02")).encryptor()
    return cipher.update(data) + cipher.finalize()


def protect(*, security_control: int, system_title: bytes, invocation_counter: int, block_cipher_key: bytes,
            authentication_key: bytes, plaintext: bytes) -> bytes:
    """SC | IC | ciphertext-or-plaintext | tag, for suite 0."""
    _check(system_title=system_title, block_cipher_key=block_cipher_key, authentication_key=authentication_key,
           invocation_counter=invocation_counter)
    if not 0 <= security_control <= 0xFF or security_control & (SUITE_MASK | SecurityControl.COMPRESSION):
        raise SecurityUsageError(f"security control {security_control:#04x}: only suite 0, no compression")
    header = bytes([security_control]) + invocation_counter.to_bytes(4, "big")
    iv = system_title + header[1:]
    authenticated = bool(security_control & SecurityControl.AUTHENTICATION)
    if security_control & SecurityControl.ENCRYPTION:
        if not authenticated:
            return header + _ctr(block_cipher_key, iv, plaintext)
        ciphertext, tag = _gcm(block_cipher_key, iv, aad=header[:1] + authentication_key, data=plaintext)
        return header + ciphertext + tag
    if not authenticated:
        raise SecurityUsageError("security control asks for neither authentication nor encryption")
    _, tag = _gcm(block_cipher_key, iv, aad=header[:1] + authentication_key + plaintext, data=b"")
    return header + plaintext + tag


def unprotect(*, system_title: bytes, block_cipher_key: bytes, authentication_key: bytes, protected: bytes
              ) -> tuple[int, int, bytes]:
    """(security control, invocation counter, plaintext); SecurityError on a bad tag or header."""
    _check(system_title=system_title, block_cipher_key=block_cipher_key, authentication_key=authentication_key,
           invocation_counter=0)
    if len(protected) < _HEADER_OCTETS:
        raise SecurityError(f"protected content of {len(protected)} octets")
    security_control, counter = protected[0], int.from_bytes(protected[1:5], "big")
    if security_control & (SUITE_MASK | SecurityControl.COMPRESSION):
        raise SecurityError(f"unsupported security control {security_control:#04x}")
    iv, body = system_title + protected[1:5], protected[5:]
    authenticated = bool(security_control & SecurityControl.AUTHENTICATION)
    encrypted = bool(security_control & SecurityControl.ENCRYPTION)
    if not authenticated:
        if not encrypted:
            raise SecurityError("security control asks for neither authentication nor encryption")
        return security_control, counter, _ctr(block_cipher_key, iv, body)
    if len(body) < TAG_OCTETS:
        raise SecurityError("protected content shorter than its tag")
    body, tag = body[:-TAG_OCTETS], body[-TAG_OCTETS:]
    aad = protected[:1] + authentication_key + (b"" if encrypted else body)
    from cryptography.exceptions import InvalidTag  # noqa: PLC0415
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: PLC0415

    decryptor = Cipher(algorithms.AES(block_cipher_key), modes.GCM(iv, tag, min_tag_length=TAG_OCTETS)).decryptor()
    decryptor.authenticate_additional_data(aad)
    try:
        plaintext = decryptor.update(body if encrypted else b"") + decryptor.finalize()
    except InvalidTag:
        raise SecurityError("authentication tag mismatch") from None
    return security_control, counter, plaintext if encrypted else body


def hls_gmac(*, system_title: bytes, invocation_counter: int, block_cipher_key: bytes, authentication_key: bytes,
             challenge: bytes) -> bytes:
    """HLS mechanism 5 f(challenge) = 0x10 | IC | GMAC tag (Green Book 9.2.7.4, pass 3/4)."""
    _check(system_title=system_title, block_cipher_key=block_cipher_key, authentication_key=authentication_key,
           invocation_counter=invocation_counter)
    tag = _gmac_tag(system_title=system_title, invocation_counter=invocation_counter,
                    block_cipher_key=block_cipher_key, authentication_key=authentication_key, challenge=challenge)
    return bytes([SecurityControl.AUTHENTICATION]) + invocation_counter.to_bytes(4, "big") + tag


def _gmac_tag(*, system_title: bytes, invocation_counter: int, block_cipher_key: bytes, authentication_key: bytes,
              challenge: bytes) -> bytes:
    iv = system_title + invocation_counter.to_bytes(4, "big")
    aad = bytes([SecurityControl.AUTHENTICATION]) + authentication_key + challenge
    return _gcm(block_cipher_key, iv, aad=aad, data=b"")[1]


def verify_hls_gmac(*, system_title: bytes, block_cipher_key: bytes, authentication_key: bytes, challenge: bytes,
                    response: bytes) -> int:
    """The peer's invocation counter if ``response`` is f(challenge) under its system title, else SecurityError."""
    _check(system_title=system_title, block_cipher_key=block_cipher_key, authentication_key=authentication_key,
           invocation_counter=0)
    if len(response) != _HEADER_OCTETS + TAG_OCTETS or response[0] != SecurityControl.AUTHENTICATION:
        raise SecurityError("malformed HLS-GMAC response")
    counter = int.from_bytes(response[1:5], "big")
    expected = _gmac_tag(system_title=system_title, invocation_counter=counter, block_cipher_key=block_cipher_key,
                         authentication_key=authentication_key, challenge=challenge)
    if not hmac.compare_digest(expected, response[_HEADER_OCTETS:]):
        raise SecurityError("HLS-GMAC response does not match the challenge")
    return counter


# --- framing of ciphered APDUs ---


def _length_prefixed(buf: bytes, offset: int) -> tuple[bytes, int]:
    try:
        size, offset = axdr.decode_length(buf, offset)
    except axdr.AxdrError as exc:
        raise SecurityError(str(exc)) from exc
    if size > len(buf) - offset:
        raise SecurityError(f"ciphered content of {size} octets, {len(buf) - offset} left")
    return buf[offset : offset + size], offset + size


def encode_ciphered_apdu(*, tag: int, protected: bytes) -> bytes:
    """A glo-/ded- APDU: tag | A-XDR length | protected."""
    if tag not in PLAIN_TAGS:
        raise SecurityUsageError(f"{tag:#04x} is not a glo- or ded- tag")
    return bytes([tag]) + axdr.encode_length(len(protected)) + protected


def decode_ciphered_apdu(apdu: bytes) -> tuple[int, bytes]:
    """(tag, protected) of a glo-/ded- APDU; SecurityError on a bad tag or length."""
    apdu = bytes(apdu)
    if not apdu or apdu[0] not in PLAIN_TAGS:
        raise SecurityError("not a glo- or ded- APDU")
    protected, end = _length_prefixed(apdu, 1)
    if end != len(apdu):
        raise SecurityError(f"{len(apdu) - end} octets after the ciphered APDU")
    return apdu[0], protected


def _encode_general(tag: int, system_title: bytes, protected: bytes) -> bytes:
    if len(system_title) != SYSTEM_TITLE_OCTETS:
        raise SecurityUsageError(f"system title of {len(system_title)} octets")
    return bytes([tag, len(system_title)]) + system_title + axdr.encode_length(len(protected)) + protected


def _decode_general(tag: int, apdu: bytes) -> tuple[bytes, bytes]:
    apdu = bytes(apdu)
    if not apdu or apdu[0] != tag:
        raise SecurityError(f"expected tag {tag:#04x}")
    system_title, offset = _length_prefixed(apdu, 1)
    if len(system_title) != SYSTEM_TITLE_OCTETS:
        raise SecurityError(f"system title of {len(system_title)} octets")
    protected, end = _length_prefixed(apdu, offset)
    if end != len(apdu):
        raise SecurityError(f"{len(apdu) - end} octets after the ciphered APDU")
    return system_title, protected


def encode_general_glo(*, system_title: bytes, protected: bytes) -> bytes:
    """general-glo-ciphering: DB | length | system title | length | protected."""
    return _encode_general(GENERAL_GLO_CIPHERING, system_title, protected)


def decode_general_glo(apdu: bytes) -> tuple[bytes, bytes]:
    """(system title, protected) of a general-glo-ciphering APDU."""
    return _decode_general(GENERAL_GLO_CIPHERING, apdu)


def encode_general_ded(*, system_title: bytes, protected: bytes) -> bytes:
    """general-ded-ciphering: DC | length | system title | length | protected."""
    return _encode_general(GENERAL_DED_CIPHERING, system_title, protected)


def decode_general_ded(apdu: bytes) -> tuple[bytes, bytes]:
    """(system title, protected) of a general-ded-ciphering APDU."""
    return _decode_general(GENERAL_DED_CIPHERING, apdu)
