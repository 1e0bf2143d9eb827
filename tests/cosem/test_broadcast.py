"""Broadcast APDUs on a simulated meter: only an unconfirmed ACTION under the broadcast key runs."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec import security, xdlms
from gateway.codec.acse import Mechanism
from gateway.codec.axdr import Data
from gateway.cosem.broadcast import BroadcastRejection
from gateway.cosem.image_transfer import IMAGE_TRANSFER
from gateway.cosem.server import LogicalDevice
from gateway.sim.meter import build_meter, image_transfer_of
from tests.cosem.client import TestClient
from tests.cosem.conftest import AUTHENTICATION_KEY, BLOCK_CIPHER_KEY, SETTINGS, fixed_clock
from tests.cosem.conftest import KEYS as UNICAST_KEYS
from tests.cosem.test_fuzz import mutated
from tests.firmware_hes import BroadcastKeys, BroadcastSender, block_parameters

BROADCAST_KEY = bytes.fromhex("6A1F0B9C2D3E4F5061728394A5B6C7D8")
HES_TITLE = b"UTILHES1"
KEYS = BroadcastKeys(system_title=HES_TITLE, broadcast_key=BROADCAST_KEY, authentication_key=AUTHENTICATION_KEY)
BLOCK = bytes(range(64))


def _initiated_meter() -> LogicalDevice:
    device = build_meter(replace(SETTINGS, broadcast_key=BROADCAST_KEY), clock=fixed_clock)
    management = TestClient(device, client_sap=1, keys=UNICAST_KEYS)
    management.hls(management.associate(mechanism=Mechanism.HLS_GMAC))
    initiate = Data.structure(Data.octet_string(b"fw"), Data.double_long_unsigned(4 * 64))
    assert management.action(18, IMAGE_TRANSFER, 1, initiate).result is xdlms.ActionResult.SUCCESS
    return device


@pytest.fixture
def meter() -> LogicalDevice:
    return _initiated_meter()


def _block_apdu(*, number: int = 0, counter: int = 1, keys: BroadcastKeys = KEYS, control: int | None = None,
                confirmed: bool = False) -> bytes:
    invoke = xdlms.invoke_id_and_priority(1, confirmed=confirmed)
    method = xdlms.MethodDescriptor(18, IMAGE_TRANSFER, 2)
    plain = xdlms.encode_xdlms(xdlms.ActionRequestNormal(invoke, method, block_parameters(number, BLOCK)))
    protected = security.protect(
        security_control=0x70 if control is None else control, system_title=keys.system_title,
        invocation_counter=counter, block_cipher_key=keys.broadcast_key, authentication_key=keys.authentication_key,
        plaintext=plain,
    )
    return security.encode_general_glo(system_title=keys.system_title, protected=protected)


def test_an_unconfirmed_block_under_the_broadcast_key_is_stored_and_not_answered(meter: LogicalDevice) -> None:
    apdu = BroadcastSender(KEYS).action(2, block_parameters(2, BLOCK))
    assert apdu == _block_apdu(number=2)  # the tool builds exactly this: SC 0x70, general-glo-ciphering
    assert meter.handle_broadcast(client_sap=1, apdu=apdu) is None
    assert image_transfer_of(meter).missing_blocks == [0, 1, 3]
    assert meter.broadcasts is not None and meter.broadcasts.counters.accepted == 1


def test_a_block_with_a_bad_tag_is_refused_and_not_stored(meter: LogicalDevice) -> None:
    apdu = bytearray(_block_apdu())
    apdu[-20] ^= 0x01  # one bit of the ciphertext flipped (the HDLC FCS would be recomputed by a forger)
    assert meter.handle_broadcast(client_sap=1, apdu=bytes(apdu)) is BroadcastRejection.DECIPHERING
    assert image_transfer_of(meter).missing_blocks == [0, 1, 2, 3]
    assert meter.handle_broadcast(client_sap=1, apdu=_block_apdu(counter=2)) is None  # the next good one runs


@pytest.mark.parametrize(
    ("apdu", "reason"),
    [
        (_block_apdu(keys=replace(KEYS, broadcast_key=BLOCK_CIPHER_KEY)), BroadcastRejection.DECIPHERING),
        (_block_apdu(control=0x30), BroadcastRejection.NOT_PROTECTED),  # the unicast key set
        (_block_apdu(control=0x60), BroadcastRejection.NOT_PROTECTED),  # encrypted without a tag
        (_block_apdu(confirmed=True), BroadcastRejection.NOT_UNCONFIRMED_ACTION),
        (security.encode_ciphered_apdu(tag=0xCB, protected=security.decode_general_glo(_block_apdu())[1]),
         BroadcastRejection.NOT_PROTECTED),  # glo-action-request: no system title for the IV
        (b"\xc3\x01\x01" + bytes(9), BroadcastRejection.NOT_PROTECTED),  # plain
    ],
)
def test_other_broadcasts_are_dropped(meter: LogicalDevice, apdu: bytes, reason: BroadcastRejection) -> None:
    assert meter.handle_broadcast(client_sap=1, apdu=apdu) is reason
    assert image_transfer_of(meter).missing_blocks == [0, 1, 2, 3]


def test_a_replayed_counter_is_refused(meter: LogicalDevice) -> None:
    assert meter.handle_broadcast(client_sap=1, apdu=_block_apdu(counter=7)) is None
    assert meter.handle_broadcast(client_sap=1, apdu=_block_apdu(number=1, counter=7)) is BroadcastRejection.REPLAYED
    assert image_transfer_of(meter).missing_blocks == [1, 2, 3]


def test_only_the_broadcast_client_and_a_keyed_meter_take_broadcasts(meter: LogicalDevice) -> None:
    assert meter.handle_broadcast(client_sap=16, apdu=_block_apdu()) is BroadcastRejection.CLIENT
    keyless = build_meter(SETTINGS, clock=fixed_clock)
    assert keyless.handle_broadcast(client_sap=1, apdu=_block_apdu()) is BroadcastRejection.CLIENT


def test_a_refused_action_is_counted(meter: LogicalDevice) -> None:
    assert meter.handle_broadcast(client_sap=1, apdu=_block_apdu(number=9)) is BroadcastRejection.REFUSED
    assert meter.broadcasts is not None
    assert meter.broadcasts.counters.dropped == {BroadcastRejection.REFUSED: 1}


def test_keys_stay_out_of_reprs() -> None:
    text = repr(KEYS) + repr(replace(SETTINGS, broadcast_key=BROADCAST_KEY))
    for key in (BROADCAST_KEY, AUTHENTICATION_KEY, BLOCK_CIPHER_KEY):
        assert key.hex() not in text.lower()


def test_the_broadcast_key_set_is_refused_in_unicast() -> None:
    meter = build_meter(replace(SETTINGS, broadcast_key=BROADCAST_KEY), clock=fixed_clock)
    management = TestClient(meter, client_sap=1, keys=UNICAST_KEYS)
    management.hls(management.associate(mechanism=Mechanism.HLS_GMAC))
    plain = xdlms.encode_xdlms(xdlms.GetRequestNormal(0xC1, xdlms.AttributeDescriptor(18, IMAGE_TRANSFER, 6)))
    protected = security.protect(security_control=0x70, system_title=UNICAST_KEYS.system_title,
                                 invocation_counter=management.next_counter(),
                                 block_cipher_key=BLOCK_CIPHER_KEY, authentication_key=AUTHENTICATION_KEY,
                                 plaintext=plain)
    answer = management.send(security.encode_ciphered_apdu(tag=0xC8, protected=protected))
    assert answer == bytes.fromhex("D80105")  # exception-response: service-not-allowed, deciphering-error


_PLAIN_SEEDS = [
    xdlms.encode_xdlms(xdlms.ActionRequestNormal(0x81, xdlms.MethodDescriptor(18, IMAGE_TRANSFER, method), parameters))
    for method, parameters in (
        (2, block_parameters(1, BLOCK)),
        (1, Data.structure(Data.octet_string(b"fw"), Data.double_long_unsigned(256))),
        (3, Data.integer(0)),
        (4, Data.integer(0)),
    )
]


@settings(max_examples=200, deadline=None)
@given(plain=mutated(_PLAIN_SEEDS), outer=st.sampled_from([None, *range(0, 40, 3)]))
def test_any_broadcast_runs_or_is_dropped_and_never_raises(plain: bytes, outer: int | None) -> None:
    """Mutated plaintext under valid protection (reaches the object), or a mutated protected APDU."""
    device = _initiated_meter()
    protected = security.protect(security_control=0x70, system_title=HES_TITLE, invocation_counter=1,
                                 block_cipher_key=BROADCAST_KEY, authentication_key=AUTHENTICATION_KEY,
                                 plaintext=plain)
    apdu = security.encode_general_glo(system_title=HES_TITLE, protected=protected)
    if outer is not None and outer < len(apdu):
        apdu = apdu[:outer] + bytes([apdu[outer] ^ 0x5A]) + apdu[outer + 1 :]
    result = device.handle_broadcast(client_sap=1, apdu=apdu)
    assert result is None or isinstance(result, BroadcastRejection)
