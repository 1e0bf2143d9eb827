"""The AARE the gateway refuses with is built from any AARQ bytes a HES may send (issue 9, D6)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.codec import acse
from gateway.core.rejections import aare_rejected

ODD_CONTEXT_AARQ = bytes.fromhex("600ba109060760857405080180")


def test_an_unechoable_context_name_falls_back_to_the_ln_context() -> None:
    aare = acse.decode_aare(aare_rejected(aarq=ODD_CONTEXT_AARQ, transient=False))
    assert aare.result is acse.AssociationResult.REJECTED_PERMANENT
    assert aare.application_context == acse.APPLICATION_CONTEXT_LN_NO_CIPHERING


@given(context=st.integers(min_value=0, max_value=0xFF), tail=st.binary(max_size=40), transient=st.booleans())
def test_any_aarq_gets_a_well_formed_rejection(context: int, tail: bytes, transient: bool) -> None:
    body = bytes.fromhex("a1090607608574050801") + bytes([context]) + tail
    for aarq in (bytes([acse.AARQ, len(body)]) + body, bytes([acse.AARQ]) + tail):
        aare = acse.decode_aare(aare_rejected(aarq=aarq, transient=transient))
        assert aare.result is not acse.AssociationResult.ACCEPTED
        assert not acse.association_accepted(aare_rejected(aarq=aarq, transient=transient))
