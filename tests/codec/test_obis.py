"""OBIS text <-> logical-name octets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec.errors import LocalProtocolError
from gateway.codec.obis import ObisError, obis, obis_text


@pytest.mark.parametrize(
    ("text", "octets"),
    [
        ("1.0.1.8.0.255", "0100010800ff"),
        ("1-0:1.8.0*255", "0100010800ff"),
        ("1-0:1.8.0.255", "0100010800ff"),
        ("1-0:1.8.0", "0100010800ff"),
        ("0.0.41.0.0.255", "0000290000ff"),  # SAP assignment
        ("0-0:42.0.0*255", "00002a0000ff"),  # logical device name
        (" 0.0.1.0.0.255 ", "0000010000ff"),
    ],
)
def test_text_to_octets(text: str, octets: str) -> None:
    assert obis(text) == bytes.fromhex(octets)


def test_octets_to_text() -> None:
    assert obis_text(bytes.fromhex("0100010800ff")) == "1.0.1.8.0.255"


@pytest.mark.parametrize(
    "text",
    ["", "1.0.1.8.0", "1.0.1.8.0.256", "1-0:1.8", "1.0.1.8.0.255.1", "a.b.c.d.e.f", "1-0:1.8.0*",
     "\u0661.0.1.8.0.255"],  # an Arabic-Indic digit is not an OBIS digit
)
def test_bad_text_raises(text: str) -> None:
    with pytest.raises(ObisError) as info:
        obis(text)
    assert isinstance(info.value, LocalProtocolError)


@pytest.mark.parametrize("octets", [b"", bytes(5), bytes(7)])
def test_wrong_length_raises(octets: bytes) -> None:
    with pytest.raises(ObisError):
        obis_text(octets)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=6, max_size=6))
def test_round_trip(octets: bytes) -> None:
    assert obis(obis_text(octets)) == octets
    a, b, c, d, e, f = octets
    assert obis(f"{a}-{b}:{c}.{d}.{e}*{f}") == octets
