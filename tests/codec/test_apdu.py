"""APDU tag classification: the relay's only look inside an APDU."""

from __future__ import annotations

import pytest

from gateway.codec.apdu import ApduError, ApduKind, classify, exception_response, is_push


@pytest.mark.parametrize(
    ("tag", "kind"),
    [
        (0x60, ApduKind.AARQ),
        (0x61, ApduKind.AARE),
        (0x62, ApduKind.RLRQ),
        (0x63, ApduKind.RLRE),
        (0xC0, ApduKind.REQUEST),
        (0xC3, ApduKind.REQUEST),
        (0xC4, ApduKind.RESPONSE),
        (0xC7, ApduKind.RESPONSE),
        (0xC2, ApduKind.EVENT_NOTIFICATION),
        (0x0F, ApduKind.DATA_NOTIFICATION),
        (0xD8, ApduKind.EXCEPTION_RESPONSE),
        (0xC8, ApduKind.GLO_CIPHERED),
        (0xCF, ApduKind.GLO_CIPHERED),
        (0xD0, ApduKind.DED_CIPHERED),
        (0xD7, ApduKind.DED_CIPHERED),
        (0xDB, ApduKind.GENERAL_CIPHERED),
        (0xDC, ApduKind.GENERAL_CIPHERED),
        (0xDD, ApduKind.GENERAL_CIPHERED),
        (0xE0, ApduKind.GENERAL_BLOCK_TRANSFER),
    ],
)
def test_classify_by_first_tag(tag: int, kind: ApduKind) -> None:
    assert classify(bytes([tag, 0x00, 0x01])) is kind


@pytest.mark.parametrize("apdu", [b"", b"\x00", b"\xff\x01", b"\x7e"])
def test_unknown_or_empty_is_an_error(apdu: bytes) -> None:
    with pytest.raises(ApduError):
        classify(apdu)


def test_every_tag_byte_classifies_or_raises_apdu_error() -> None:
    known = 0
    for tag in range(256):
        try:
            classify(bytes([tag]))
            known += 1
        except ApduError:
            pass
    # 21 single tags (ACSE 4, xDLMS 6, notifications 2, D8, 0E, general 4, E0, E6/E7),
    # 8 glo (C8-CF), 8 ded (D0-D7), glo-initiate request/response (21, 28)
    assert known == 39


@pytest.mark.parametrize(("tag", "push"), [(0xC2, True), (0x0F, True), (0xCA, True), (0xD2, True),
                                           (0xC4, False), (0xC8, False), (0x61, False)])
def test_push_detection(tag: int, push: bool) -> None:
    assert is_push(bytes([tag, 1])) is push


def test_exception_response_bytes() -> None:
    assert exception_response(state_error=1, service_error=2) == b"\xd8\x01\x02"
