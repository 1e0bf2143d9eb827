"""Firmware campaigns in broadcast rounds on a simulated bus (no gateway): repair by rebroadcast, activate at a time."""

from __future__ import annotations

import datetime as dt
import random

from structlog.testing import capture_logs

from gateway.cosem.broadcast import BroadcastRejection
from gateway.cosem.server import LogicalDevice
from gateway.sim.bus import SimMeter, SimulatedBus
from gateway.sim.meter import image_transfer_of
from tests.firmware_channels import BusBroadcaster, CorruptingBroadcaster
from tests.firmware_hes import BroadcastSender, FirmwareImage
from tests.firmware_rounds import ACTIVATION_COPIES, INITIATE_COPIES, RoundsPlan, run_broadcast_campaign
from tests.sim.firmware_fleet import (
    AUTHENTICATION_KEY,
    BROADCAST_KEY,
    BROADCAST_KEYS,
    NOW,
    FleetClock,
    campaign_meters,
    firmware_meters,
    on_bus,
    unicast_key,
)

IMAGE = FirmwareImage(identifier=b"SIM-FW-4.0.0", data=random.Random(41).randbytes(16 * 1024 + 17))
BLOCKS = len(IMAGE.blocks(64))  # 257
ACTIVATE_AT = NOW + dt.timedelta(hours=2)


def _device(meter: SimMeter) -> LogicalDevice:
    assert isinstance(meter.device, LogicalDevice)
    return meter.device


def _activated_everywhere(meters: list[SimMeter]) -> bool:
    for meter in meters:
        activated = image_transfer_of(_device(meter)).activated
        if activated is None or (activated.identifier, activated.sha256) != (IMAGE.identifier, IMAGE.sha256):
            return False
    return True


class _CountingBroadcaster(BusBroadcaster):
    """Records what the meters' clock said when each broadcast went out."""

    def __init__(self, bus: SimulatedBus, clock: FleetClock) -> None:
        super().__init__(bus)
        self.clock = clock
        self.times: list[dt.datetime] = []

    def __call__(self, apdu: bytes) -> None:
        self.times.append(self.clock.now)
        super().__call__(apdu)


def test_independent_losses_are_repaired_by_rebroadcast_and_every_meter_activates_at_the_set_time() -> None:
    clock = FleetClock()
    meters = firmware_meters(40, loss=0.02, clock=clock, expected_image_sha256=IMAGE.sha256)
    bus = on_bus(meters, seed=2026)
    broadcaster = _CountingBroadcaster(bus, clock)
    waited: list[dt.datetime] = []

    def wait_until(moment: dt.datetime) -> None:
        assert not any(image_transfer_of(_device(meter)).activated for meter in meters)  # nobody before the time
        waited.append(moment)
        clock.wait_until(moment)

    with capture_logs() as logs:
        reports, summary = run_broadcast_campaign(
            campaign_meters(bus, meters), IMAGE, sender=BroadcastSender(BROADCAST_KEYS), broadcaster=broadcaster,
            plan=RoundsPlan(activate_at=ACTIVATE_AT, wait_until=wait_until))
    assert waited == [ACTIVATE_AT]
    for report in reports:
        assert report.error is None, report
        assert report.activated and report.activated_sha256 == IMAGE.sha256
    assert _activated_everywhere(meters)
    # 40 meters at 2 %: most blocks are missed by someone, so the repair is a second full pass
    assert summary.rounds[0].startswith("rebroadcast all")
    assert summary.broadcast_blocks == 2 * BLOCKS
    assert broadcaster.frames == INITIATE_COPIES + 2 * BLOCKS + ACTIVATION_COPIES
    # after two passes few (meter, block) pairs are left: what the meters missed twice went by unicast
    twice = sum(1 for meter in meters for number in range(BLOCKS)
                if {number, number + BLOCKS} <= {n - INITIATE_COPIES
                                                 for n in bus.broadcasts_lost(physical_address=meter.physical_address)})
    assert sum(report.unicast_blocks for report in reports) == twice
    # one association per meter (the confirmation), plus the sampled ones' status reads and the probe
    assert summary.sessions == 40 + 5 + 1
    text = repr(logs) + repr(reports) + repr(summary)
    for key in (BROADCAST_KEY, AUTHENTICATION_KEY, *(unicast_key(serial) for serial in range(1, 41))):
        assert key.hex() not in text.lower()


def test_without_loss_the_broadcast_activation_time_alone_activates_every_meter() -> None:
    clock = FleetClock()
    meters = firmware_meters(6, loss=0.0, clock=clock)
    bus = on_bus(meters)
    reports, summary = run_broadcast_campaign(
        campaign_meters(bus, meters), IMAGE, sender=BroadcastSender(BROADCAST_KEYS), broadcaster=BusBroadcaster(bus),
        plan=RoundsPlan(activate_at=ACTIVATE_AT, wait_until=clock.wait_until))
    assert summary.broadcast_blocks == BLOCKS and summary.rounds == ["missed only: 0 blocks (q=0.0000, 0 missed)"]
    for report in reports:
        assert report.activated and report.activated_sha256 == IMAGE.sha256
        assert report.unicast_blocks == 0 and not report.unicast_activate  # the schedule did it, at the set time
    assert _activated_everywhere(meters)


def test_without_the_wait_nobody_activates_and_the_confirmation_activates_each_by_unicast() -> None:
    clock = FleetClock()
    meters = firmware_meters(3, loss=0.0, clock=clock)
    bus = on_bus(meters)
    reports, _ = run_broadcast_campaign(
        campaign_meters(bus, meters), IMAGE, sender=BroadcastSender(BROADCAST_KEYS), broadcaster=BusBroadcaster(bus),
        plan=RoundsPlan(activate_at=ACTIVATE_AT, wait_until=lambda _moment: None))  # the clock never gets there
    assert all(report.activated and report.unicast_activate for report in reports)
    for meter in meters:
        assert image_transfer_of(_device(meter)).activate_at == ACTIVATE_AT  # still set: the meter waits for it


def test_a_corrupted_broadcast_block_is_refused_by_every_meter_and_repaired_by_one_rebroadcast() -> None:
    clock = FleetClock()
    meters = firmware_meters(12, loss=0.0, clock=clock)
    bus = on_bus(meters)
    corrupt = {INITIATE_COPIES + 3, INITIATE_COPIES + 200}  # blocks 3 and 200 of the first pass
    reports, summary = run_broadcast_campaign(
        campaign_meters(bus, meters), IMAGE, sender=BroadcastSender(BROADCAST_KEYS),
        broadcaster=CorruptingBroadcaster(bus, corrupt=corrupt),
        plan=RoundsPlan(activate_at=ACTIVATE_AT, wait_until=clock.wait_until))
    # every sampled meter missed the same two: a loss shared by all, repaired by broadcasting those two again
    assert summary.rounds[0] == "missed only: 2 blocks (q=0.0000, 2 missed)"
    assert summary.broadcast_blocks == BLOCKS + 2
    for meter, report in zip(meters, reports, strict=True):
        assert report.activated and report.activated_sha256 == IMAGE.sha256 and report.unicast_blocks == 0
        broadcasts = _device(meter).broadcasts
        assert broadcasts is not None and broadcasts.counters.dropped == {BroadcastRejection.DECIPHERING: 2}
    assert _activated_everywhere(meters)
