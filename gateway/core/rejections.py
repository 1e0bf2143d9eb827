"""Answers the gateway gives on a meter's behalf when it cannot relay: never silence."""

from __future__ import annotations

from dataclasses import replace

from gateway.codec import acse
from gateway.codec.errors import RemoteProtocolError


def application_context_of(aarq: bytes) -> int:
    """The application context an AARQ asked for (LN, no ciphering when it cannot be read)."""
    try:
        return acse.decode_aarq(aarq).application_context
    except RemoteProtocolError:
        return acse.APPLICATION_CONTEXT_LN_NO_CIPHERING


def aare_rejected(*, aarq: bytes, transient: bool) -> bytes:
    """An AARE refusing ``aarq`` (any bytes): permanent (no such meter) or transient (busy, link failed)."""
    result = acse.AssociationResult.REJECTED_TRANSIENT if transient else acse.AssociationResult.REJECTED_PERMANENT
    refusal = acse.Aare(
        application_context=application_context_of(aarq),
        result=result,
        diagnostic=acse.AcseServiceUser.NO_REASON_GIVEN,
    )
    try:
        return acse.encode_aare(refusal)
    except acse.AcseEncodeError:  # a context name we cannot echo (an arc >= 0x80): answer in the standard one
        return acse.encode_aare(replace(refusal, application_context=acse.APPLICATION_CONTEXT_LN_NO_CIPHERING))
