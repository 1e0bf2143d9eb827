"""SNRM/UA parameter fields and the negotiation, read from both stations' points of view."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec.errors import LocalProtocolError
from gateway.codec.hdlc import HdlcError, HdlcParameters, decode_parameters, encode_parameters, negotiate
from tests.codec.hdlc.vectors import DEFAULT_PARAMETERS


def test_defaults_encode_like_a_real_meter() -> None:
    assert encode_parameters(HdlcParameters()) == DEFAULT_PARAMETERS


def test_large_values_take_two_bytes() -> None:
    encoded = encode_parameters(HdlcParameters(max_info_tx=2030, max_info_rx=512, window_tx=7, window_rx=3))
    assert encoded == bytes.fromhex("81 80 14 05 02 07 EE 06 02 02 00 07 04 00 00 00 07 08 04 00 00 00 03")


def test_empty_field_means_defaults() -> None:
    assert decode_parameters(b"") == HdlcParameters()


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("81 80 14 05 02 00 80 06 02 00 80 07 04 00 00 00 01 08 04 00 00 00 01", HdlcParameters()),
        ("81 80 06 05 04 00 00 07 EE", HdlcParameters(max_info_tx=2030)),  # 4-byte value, others default
        ("81 80 06 08 01 07 06 01 40", HdlcParameters(window_rx=7, max_info_rx=64)),  # any order, 1-byte
        ("81 80 06 09 01 05 07 01 02", HdlcParameters(window_tx=2)),  # unknown parameter 09 skipped
        ("81 80 00", HdlcParameters()),
    ],
)
def test_tolerant_decoding(field: str, expected: HdlcParameters) -> None:
    assert decode_parameters(bytes.fromhex(field)) == expected


@pytest.mark.parametrize(
    "field",
    [
        "80 80 03 05 01 80",  # wrong format identifier
        "81 81 03 05 01 80",  # wrong group identifier
        "81 80 04 05 01 80",  # group length says more than there is
        "81 80 03 05 03 80",  # value runs past the end
        "81 80 03 05 00 80",  # zero-length value
        "81 80 03 05 01 10",  # max info 16: below 32
        "81 80 06 07 04 00 00 00 08",  # window 8
        "81",
    ],
)
def test_malformed_fields_raise_hdlc_error(field: str) -> None:
    with pytest.raises(HdlcError):
        decode_parameters(bytes.fromhex(field))


def test_out_of_range_parameters_are_refused_locally() -> None:
    with pytest.raises(LocalProtocolError):
        HdlcParameters(max_info_tx=2031)
    with pytest.raises(LocalProtocolError):
        HdlcParameters(window_rx=0)


def test_negotiation_crosses_tx_and_rx() -> None:
    client_proposal = HdlcParameters(max_info_tx=2030, max_info_rx=200, window_tx=7, window_rx=2)
    server_supports = HdlcParameters(max_info_tx=1000, max_info_rx=500, window_tx=7, window_rx=3)
    ua = negotiate(proposed=client_proposal, supported=server_supports)
    # the server sends at most what the client can receive, and receives at most what it supports
    assert ua == HdlcParameters(max_info_tx=200, max_info_rx=500, window_tx=2, window_rx=3)
    # the client reads the UA the same way, capped by its own proposal: its tx is the server's rx
    assert negotiate(proposed=ua, supported=client_proposal) == ua.swapped()


parameters = st.builds(
    HdlcParameters,
    max_info_tx=st.integers(32, 2030),
    max_info_rx=st.integers(32, 2030),
    window_tx=st.integers(1, 7),
    window_rx=st.integers(1, 7),
)


@given(parameters)
@settings(max_examples=200, deadline=None)
def test_round_trip(p: HdlcParameters) -> None:
    assert decode_parameters(encode_parameters(p)) == p


@given(client=parameters, server=parameters)
@settings(max_examples=200, deadline=None)
def test_negotiated_link_never_exceeds_either_side(client: HdlcParameters, server: HdlcParameters) -> None:
    ua = negotiate(proposed=client, supported=server)
    seen_by_client = negotiate(proposed=ua, supported=client)
    assert seen_by_client == ua.swapped()
    assert seen_by_client.max_info_tx <= min(client.max_info_tx, server.max_info_rx)
    assert ua.max_info_tx <= min(server.max_info_tx, client.max_info_rx)
    assert seen_by_client.window_tx <= min(client.window_tx, server.window_rx)
    assert ua.window_tx <= min(server.window_tx, client.window_rx)
