"""Firmware campaigns on a simulated bus, no gateway: broadcast once, fill gaps by unicast, verify, activate."""

from __future__ import annotations

import random

from structlog.testing import capture_logs

from gateway.codec.hdlc import encode_broadcast
from gateway.cosem.broadcast import BroadcastRejection
from gateway.cosem.image_transfer import BLOCK_TRANSFER
from gateway.cosem.server import LogicalDevice
from gateway.sim.bus import SimMeter
from gateway.sim.meter import image_transfer_of
from tests.firmware_channels import BusBroadcaster, CorruptingBroadcaster
from tests.firmware_hes import BroadcastSender, FirmwareImage, block_parameters, run_campaign
from tests.sim.firmware_fleet import (
    AUTHENTICATION_KEY,
    BROADCAST_KEY,
    BROADCAST_KEYS,
    campaign_meters,
    firmware_meters,
    on_bus,
    unicast_key,
)

IMAGE = FirmwareImage(identifier=b"SIM-FW-3.1.0", data=random.Random(14).randbytes(16 * 1024 + 17))
BLOCKS = len(IMAGE.blocks(64))  # 257: the last one holds 17 octets


def _device(meter: SimMeter) -> LogicalDevice:
    assert isinstance(meter.device, LogicalDevice)
    return meter.device


def test_twenty_meters_with_two_percent_loss_all_end_activated_with_the_right_hash() -> None:
    meters = firmware_meters(20, loss=0.02, expected_image_sha256=IMAGE.sha256)
    bus = on_bus(meters, seed=2026)
    broadcaster = BusBroadcaster(bus)
    campaign = campaign_meters(bus, meters)
    with capture_logs() as logs:
        reports = run_campaign(campaign, IMAGE, sender=BroadcastSender(BROADCAST_KEYS), broadcaster=broadcaster)
    assert broadcaster.frames == BLOCKS  # every block went out once
    lost = {meter.physical_address: bus.broadcasts_lost(physical_address=meter.physical_address) for meter in meters}
    assert sum(map(len, lost.values())) > 0  # seed 2026: the gap filling has work to do
    for meter, report in zip(meters, reports, strict=True):
        assert report.error is None, report
        assert report.verified and report.activated and report.activated_sha256 == IMAGE.sha256
        assert list(report.missed_broadcast) == lost[meter.physical_address]
        assert report.unicast_blocks == len(report.missed_broadcast)
        activated = image_transfer_of(_device(meter)).activated
        assert activated is not None and (activated.identifier, activated.sha256) == (IMAGE.identifier, IMAGE.sha256)
    text = repr(logs) + repr(reports) + repr(BROADCAST_KEYS)
    for key in (BROADCAST_KEY, AUTHENTICATION_KEY, *(unicast_key(serial) for serial in range(1, 21))):
        assert key.hex() not in text.lower() and repr(key) not in text


def test_a_block_corrupted_on_the_medium_is_refused_by_every_meter_and_refilled_by_unicast() -> None:
    meters = firmware_meters(4, loss=0.0)
    bus = on_bus(meters)
    reports = run_campaign(campaign_meters(bus, meters), IMAGE, sender=BroadcastSender(BROADCAST_KEYS),
                           broadcaster=CorruptingBroadcaster(bus, corrupt={3, 200}))
    for meter, report in zip(meters, reports, strict=True):
        assert report.missed_broadcast == (3, 200) and report.unicast_blocks == 2
        assert report.activated and report.activated_sha256 == IMAGE.sha256
        broadcasts = _device(meter).broadcasts
        assert broadcasts is not None and broadcasts.counters.dropped == {BroadcastRejection.DECIPHERING: 2}


def test_meters_that_differ_get_what_they_need_and_a_wrong_image_is_reported() -> None:
    meters = firmware_meters(3, loss=0.0)
    meters[1].device = firmware_meters(2, loss=0.0, image_block_size=32)[1].device  # another block size
    meters[2].device = firmware_meters(3, loss=0.0, expected_image_sha256=bytes(32))[2].device  # expects another
    bus = on_bus(meters)
    reports = run_campaign(campaign_meters(bus, meters), IMAGE, sender=BroadcastSender(BROADCAST_KEYS),
                           broadcaster=BusBroadcaster(bus))
    assert reports[0].activated and reports[0].unicast_blocks == 0
    assert reports[1].block_size == 32 and reports[1].unicast_blocks == len(IMAGE.blocks(32))
    assert reports[1].activated and reports[1].activated_sha256 == IMAGE.sha256
    assert not reports[2].verified and not reports[2].activated
    assert reports[2].error == "finish: method 3: other_reason"
    assert image_transfer_of(_device(meters[2])).activated is None


def test_a_full_broadcast_block_fits_one_default_ui_frame() -> None:
    apdu = BroadcastSender(BROADCAST_KEYS).action(BLOCK_TRANSFER, block_parameters(0, bytes(64)))
    encode_broadcast(client_sap=1, apdu=apdu)  # raises beyond the 128-octet default information field
