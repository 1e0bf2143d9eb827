"""Answers the gateway gives on a meter's behalf when it cannot relay: never silence."""

from __future__ import annotations

from gateway.codec import acse
from gateway.codec.errors import RemoteProtocolError


def application_context_of(aarq: bytes) -> int:
    """The application context an AARQ asked for (LN, no ciphering when it cannot be read)."""
    try:
        return acse.decode_aarq(aarq).application_context
    except RemoteProtocolError:
        return acse.APPLICATION_CONTEXT_LN_NO_CIPHERING


def aare_rejected(*, aarq: bytes, transient: bool) -> bytes:
    """An AARE refusing ``aarq``: permanent (no such meter) or transient (busy, link failed)."""
    result = acse.AssociationResult.REJECTED_TRANSIENT if transient else acse.AssociationResult.REJECTED_PERMANENT
    return acse.encode_aare(
        acse.Aare(
            application_context=application_context_of(aarq),
            result=result,
            diagnostic=acse.AcseServiceUser.NO_REASON_GIVEN,
        )
    )
