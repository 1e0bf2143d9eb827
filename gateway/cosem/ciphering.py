"""Ciphering of xDLMS APDUs for one logical device, security suite 0 (Green Book 9.2.7).

Two rules of AES-GCM hygiene live here: our own invocation counter goes up for every APDU
we protect and is never reused within a run; a client's counter must strictly increase for
as long as we run (it is kept per client SAP across associations, as the key outlives them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from gateway.codec.errors import LocalProtocolError
from gateway.codec.security import SecurityContext, SecurityError, protect, unprotect

SUITE_MASK = 0x0F  # Green Book 9.2.7.2.2: security suite id in the low nibble of the security control
AUTHENTICATION = 0x10
ENCRYPTION = 0x20
# Green Book 9.2.7.2.2: bit 7 (compression) we do not support; bit 6 (broadcast key) belongs to
# broadcasts only (gateway.cosem.broadcast), never to an association.
_UNSUPPORTED_BITS = 0xC0
MAX_INVOCATION_COUNTER = 0xFFFF_FFFF  # Green Book 9.2.7.2.4: the invocation counter is 4 octets
_GLO_REQUEST_TO_RESPONSE = {0xC8: 0xCC, 0xC9: 0xCD, 0xCB: 0xCF}  # glo-get/set/action request -> response
GLO_PLAIN_TAG = {0xC8: 0xC0, 0xC9: 0xC1, 0xCB: 0xC3, 0x21: 0x01}  # glo tag -> the plain tag inside


def glo_response_tag(request_tag: int) -> int:
    """The glo- tag of the answer to a glo- request."""
    return _GLO_REQUEST_TO_RESPONSE[request_tag]


class CipherRejection(Enum):
    """Why a protected APDU was refused."""

    DECIPHERING = "deciphering"  # bad tag, bad header, unsupported security control
    REPLAYED = "replayed"  # invocation counter not above the last one accepted


class CipherRejectedError(Exception):
    """A protected APDU we refuse; carries the reason for counting and answering."""

    def __init__(self, reason: CipherRejection) -> None:
        super().__init__(reason.value)
        self.reason = reason


class InvocationCounterExhaustedError(LocalProtocolError):
    """Our invocation counter reached 2**32 - 1: the key must be changed before we cipher again."""


@dataclass(slots=True)
class CipherState:
    """Our invocation counter and the last counter accepted from each client."""

    invocation_counter: int = 0  # the last one used
    client_counters: dict[int, int] = field(default_factory=dict)

    def next_counter(self) -> int:
        if self.invocation_counter >= MAX_INVOCATION_COUNTER:
            raise InvocationCounterExhaustedError("invocation counter exhausted")
        self.invocation_counter += 1
        return self.invocation_counter

    def expected_client_counter(self, client_sap: int) -> int:
        """The lowest counter the client may use next."""
        return self.client_counters.get(client_sap, -1) + 1

    def seal(self, *, security: SecurityContext, security_control: int, plaintext: bytes) -> bytes:
        """SC || IC || ciphertext || tag, under our system title and the next counter."""
        return protect(
            security_control=security_control,
            system_title=security.system_title,
            invocation_counter=self.next_counter(),
            block_cipher_key=security.block_cipher_key,
            authentication_key=security.authentication_key,
            plaintext=plaintext,
        )

    def open(
        self, *, security: SecurityContext, client_sap: int, client_system_title: bytes, protected: bytes
    ) -> tuple[int, bytes]:
        """Verify and decipher a client's protected content; return (security control, plaintext)."""
        if not protected or protected[0] & (_UNSUPPORTED_BITS | SUITE_MASK) or not protected[0] & AUTHENTICATION:
            # Without the authentication bit there is no tag: anyone could forge or replay it.
            raise CipherRejectedError(CipherRejection.DECIPHERING)
        try:
            security_control, counter, plaintext = unprotect(
                system_title=client_system_title,
                block_cipher_key=security.block_cipher_key,
                authentication_key=security.authentication_key,
                protected=protected,
            )
        except SecurityError:
            raise CipherRejectedError(CipherRejection.DECIPHERING) from None
        if counter < self.expected_client_counter(client_sap):
            raise CipherRejectedError(CipherRejection.REPLAYED)
        self.client_counters[client_sap] = counter
        return security_control, plaintext
