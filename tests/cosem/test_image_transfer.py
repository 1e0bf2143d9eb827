"""IC 18 Image transfer on a simulated meter, through the management client (HLS-GMAC, ciphered)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from gateway.codec.acse import Mechanism
from gateway.codec.axdr import Data, flags_of
from gateway.codec.xdlms import ActionResult, DataAccessResult
from gateway.cosem.image_transfer import IMAGE_TRANSFER, ImageTransferStatus
from gateway.cosem.server import LogicalDevice
from gateway.sim.meter import build_meter, image_transfer_of
from tests.cosem.client import TestClient
from tests.cosem.conftest import KEYS, SETTINGS, fixed_clock

CLASS = 18
BLOCK = SETTINGS.image_block_size
IMAGE = bytes(range(256)) * 2 + b"tail"  # 516 octets: 8 whole blocks of 64 and a last one of 4
BLOCKS = [IMAGE[start : start + BLOCK] for start in range(0, len(IMAGE), BLOCK)]
IDENTIFIER = b"SIM-FW-2.0.1"


def _associated(meter: LogicalDevice) -> TestClient:
    client = TestClient(meter, client_sap=1, keys=KEYS)
    client.hls(client.associate(mechanism=Mechanism.HLS_GMAC))
    return client


@pytest.fixture
def client(meter: LogicalDevice) -> TestClient:
    return _associated(meter)


def _initiate(client: TestClient, identifier: bytes = IDENTIFIER, size: int = len(IMAGE)) -> ActionResult:
    parameters = Data.structure(Data.octet_string(identifier), Data.double_long_unsigned(size))
    return client.action(CLASS, IMAGE_TRANSFER, 1, parameters).result


def _block(client: TestClient, number: int, value: bytes) -> ActionResult:
    parameters = Data.structure(Data.double_long_unsigned(number), Data.octet_string(value))
    return client.action(CLASS, IMAGE_TRANSFER, 2, parameters).result


def _call(client: TestClient, method_id: int) -> ActionResult:
    return client.action(CLASS, IMAGE_TRANSFER, method_id, Data.integer(0)).result


def _read(client: TestClient, attribute_id: int) -> Data:
    result = client.get(CLASS, IMAGE_TRANSFER, attribute_id)
    assert isinstance(result, Data), result
    return result


def _status(client: TestClient) -> ImageTransferStatus:
    value = _read(client, 6).value
    assert isinstance(value, int)
    return ImageTransferStatus(value)


def test_initiate_blocks_verify_activate(client: TestClient, meter: LogicalDevice) -> None:
    assert _status(client) is ImageTransferStatus.NOT_INITIATED
    assert _read(client, 2) == Data.double_long_unsigned(BLOCK)
    assert _read(client, 5) == Data.boolean(True)
    assert _initiate(client) is ActionResult.SUCCESS
    assert _status(client) is ImageTransferStatus.INITIATED
    assert flags_of(_read(client, 3)) == [False] * len(BLOCKS)
    for number in (3, 0, 8, 1):
        assert _block(client, number, BLOCKS[number]) is ActionResult.SUCCESS
    assert flags_of(_read(client, 3)) == [n in (0, 1, 3, 8) for n in range(len(BLOCKS))]
    assert _read(client, 4) == Data.double_long_unsigned(2)
    for number in (2, 4, 5, 6, 7):
        assert _block(client, number, BLOCKS[number]) is ActionResult.SUCCESS
    assert _read(client, 4) == Data.double_long_unsigned(len(BLOCKS))
    assert _read(client, 7) == Data.array()
    assert _call(client, 3) is ActionResult.SUCCESS
    assert _status(client) is ImageTransferStatus.VERIFICATION_SUCCESSFUL
    digest = hashlib.sha256(IMAGE).digest()
    assert _read(client, 7) == Data.array(
        Data.structure(Data.double_long_unsigned(len(IMAGE)), Data.octet_string(IDENTIFIER), Data.octet_string(digest))
    )
    assert _call(client, 4) is ActionResult.SUCCESS
    assert _status(client) is ImageTransferStatus.ACTIVATION_SUCCESSFUL
    activated = image_transfer_of(meter).activated
    assert activated is not None and (activated.identifier, activated.sha256) == (IDENTIFIER, digest)
    assert _call(client, 4) is ActionResult.SUCCESS  # a repeated activation (lost answer) succeeds again


def test_verify_fails_while_blocks_are_missing_then_succeeds_after_the_gap_is_filled(client: TestClient) -> None:
    _initiate(client)
    for number, value in enumerate(BLOCKS):
        if number != 5:
            _block(client, number, value)
    assert _call(client, 3) is ActionResult.OTHER_REASON
    assert _status(client) is ImageTransferStatus.VERIFICATION_FAILED
    assert _call(client, 4) is ActionResult.OTHER_REASON  # nothing verified: nothing to activate
    assert _block(client, 5, BLOCKS[5]) is ActionResult.SUCCESS
    assert _status(client) is ImageTransferStatus.INITIATED
    assert _call(client, 3) is ActionResult.SUCCESS


@pytest.mark.parametrize("expected", [hashlib.sha256(IMAGE).digest(), hashlib.sha256(b"another image").digest()])
def test_verify_checks_the_expected_sha256(expected: bytes) -> None:
    meter = build_meter(replace(SETTINGS, expected_image_sha256=expected), clock=fixed_clock)
    client = _associated(meter)
    _initiate(client)
    for number, value in enumerate(BLOCKS):
        _block(client, number, value)
    good = expected == hashlib.sha256(IMAGE).digest()
    assert _call(client, 3) is (ActionResult.SUCCESS if good else ActionResult.OTHER_REASON)
    assert _status(client) is (
        ImageTransferStatus.VERIFICATION_SUCCESSFUL if good else ImageTransferStatus.VERIFICATION_FAILED
    )
    assert _call(client, 4) is (ActionResult.SUCCESS if good else ActionResult.OTHER_REASON)
    assert (image_transfer_of(meter).activated is not None) is good


def test_activate_verifies_an_unverified_image_first(client: TestClient, meter: LogicalDevice) -> None:
    _initiate(client)
    for number, value in enumerate(BLOCKS):
        _block(client, number, value)
    assert _call(client, 4) is ActionResult.SUCCESS
    assert _status(client) is ImageTransferStatus.ACTIVATION_SUCCESSFUL


@pytest.mark.parametrize(
    ("number", "value", "result"),
    [
        (len(BLOCKS), BLOCKS[0], ActionResult.DATA_BLOCK_UNAVAILABLE),  # past the last block
        (0x7FFF_FFFF, BLOCKS[0], ActionResult.DATA_BLOCK_UNAVAILABLE),
        (0, BLOCKS[0][:-1], ActionResult.TYPE_UNMATCHED),  # a whole block one octet short
        (0, BLOCKS[0] + b"x", ActionResult.TYPE_UNMATCHED),
        (len(BLOCKS) - 1, BLOCKS[-1] + b"x", ActionResult.TYPE_UNMATCHED),  # the last block is exactly the rest
        (len(BLOCKS) - 1, BLOCKS[0], ActionResult.TYPE_UNMATCHED),
    ],
)
def test_a_wrong_block_is_refused_and_not_stored(
    client: TestClient, number: int, value: bytes, result: ActionResult
) -> None:
    _initiate(client)
    assert _block(client, number, value) is result
    assert flags_of(_read(client, 3)) == [False] * len(BLOCKS)


@pytest.mark.parametrize(
    "parameters",
    [
        Data.structure(Data.long_unsigned(0), Data.octet_string(BLOCKS[0])),  # number not double-long-unsigned
        Data.structure(Data.double_long_unsigned(0), Data.visible_string("x" * BLOCK)),
        Data.structure(Data.double_long_unsigned(0)),
        Data.octet_string(BLOCKS[0]),
    ],
)
def test_block_parameters_of_the_wrong_type_are_type_unmatched(client: TestClient, parameters: Data) -> None:
    _initiate(client)
    assert client.action(CLASS, IMAGE_TRANSFER, 2, parameters).result is ActionResult.TYPE_UNMATCHED


def test_out_of_order_calls_are_refused(client: TestClient) -> None:
    assert _block(client, 0, BLOCKS[0]) is ActionResult.OTHER_REASON  # nothing initiated
    assert _call(client, 3) is ActionResult.OTHER_REASON
    assert _call(client, 4) is ActionResult.OTHER_REASON
    assert _initiate(client, size=0) is ActionResult.OTHER_REASON
    assert _initiate(client, size=(1 << 20) + 1) is ActionResult.OTHER_REASON
    assert client.action(CLASS, IMAGE_TRANSFER, 1, Data.integer(0)).result is ActionResult.TYPE_UNMATCHED
    assert _status(client) is ImageTransferStatus.NOT_INITIATED


def test_initiating_the_same_image_resumes_another_restarts(client: TestClient) -> None:
    _initiate(client)
    _block(client, 0, BLOCKS[0])
    assert _initiate(client) is ActionResult.SUCCESS
    assert flags_of(_read(client, 3))[0] is True
    assert _initiate(client, identifier=b"SIM-FW-2.0.2") is ActionResult.SUCCESS
    assert flags_of(_read(client, 3)) == [False] * len(BLOCKS)


def test_attributes_and_transfer_enabled(client: TestClient) -> None:
    assert client.set(CLASS, IMAGE_TRANSFER, 2, Data.double_long_unsigned(32)) is DataAccessResult.READ_WRITE_DENIED
    assert client.set(CLASS, IMAGE_TRANSFER, 6, Data.enum(6)) is DataAccessResult.READ_WRITE_DENIED
    assert client.set(CLASS, IMAGE_TRANSFER, 5, Data.unsigned(0)) is DataAccessResult.TYPE_UNMATCHED
    assert client.set(CLASS, IMAGE_TRANSFER, 5, Data.boolean(False)) is DataAccessResult.SUCCESS
    assert _initiate(client) is ActionResult.TEMPORARY_FAILURE
    assert client.set(CLASS, IMAGE_TRANSFER, 5, Data.boolean(True)) is DataAccessResult.SUCCESS
    assert _initiate(client) is ActionResult.SUCCESS


def test_the_public_client_does_not_see_the_image_transfer(public: TestClient) -> None:
    public.associate()
    assert public.get(CLASS, IMAGE_TRANSFER, 2) is DataAccessResult.OBJECT_UNDEFINED
