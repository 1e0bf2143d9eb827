"""Simulated meters for firmware campaigns: own unicast keys, one broadcast group (GBEK and AK shared)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import replace

from gateway.cosem.server import LogicalDevice
from gateway.sim.bus import SimMeter, SimulatedBus
from gateway.sim.fleet import FIRST_PHYSICAL_ADDRESS
from gateway.sim.meter import SimMeterSettings, build_meter
from tests.cosem.client import Keys
from tests.firmware_channels import HdlcBusChannel
from tests.firmware_hes import BroadcastKeys, CampaignMeter, MeterClient

# Not the Green Book demo keys: a test that forgot one must fail.
BROADCAST_KEY = bytes.fromhex("6A1F0B9C2D3E4F5061728394A5B6C7D8")
AUTHENTICATION_KEY = bytes.fromhex("3C4D5E6F708192A3B4C5D6E7F8091A2B")
HES_TITLE = b"UTILHES1"
BROADCAST_KEYS = BroadcastKeys(system_title=HES_TITLE, broadcast_key=BROADCAST_KEY,
                               authentication_key=AUTHENTICATION_KEY)
NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def unicast_key(serial_number: int) -> bytes:
    """Each meter's own global unicast encryption key."""
    return hashlib.sha256(b"GUEK" + serial_number.to_bytes(8, "big")).digest()[:16]


def firmware_settings(serial_number: int, **changes: object) -> SimMeterSettings:
    settings = replace(SimMeterSettings.demo(serial_number=serial_number), block_cipher_key=unicast_key(serial_number),
                       authentication_key=AUTHENTICATION_KEY, broadcast_key=BROADCAST_KEY)
    return replace(settings, **changes)  # type: ignore[arg-type]


def fixed_clock() -> dt.datetime:
    return NOW


class FleetClock:
    """The meters' clock: still until the head-end's wait moves it (an activation at a set time)."""

    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def wait_until(self, moment: dt.datetime) -> None:
        self.now = max(self.now, moment)


def firmware_meters(count: int, *, loss: float, clock: Callable[[], dt.datetime] = fixed_clock,
                    **changes: object) -> list[SimMeter]:
    """``count`` meters at 17, 18, ... (serial numbers 1, 2, ...), each missing a broadcast with ``loss``."""
    return [
        SimMeter(physical_address=FIRST_PHYSICAL_ADDRESS + index,
                 device=build_meter(firmware_settings(index + 1, **changes), clock=clock), broadcast_loss=loss)
        for index in range(count)
    ]


def on_bus(meters: list[SimMeter], *, seed: int = 0) -> SimulatedBus:
    return SimulatedBus(meters=meters, clock=lambda: 0.0, seed=seed)


def client_for(bus: SimulatedBus, meter: SimMeter) -> MeterClient:
    """The management client of one meter, straight over the bus."""
    device = meter.device
    assert isinstance(device, LogicalDevice)
    serial = int(device.name[3:])
    keys = Keys(block_cipher_key=unicast_key(serial), authentication_key=AUTHENTICATION_KEY, system_title=HES_TITLE)
    channel = HdlcBusChannel(bus, physical_address=meter.physical_address, logical_device=meter.logical_device)
    return MeterClient.over(channel, keys)


def campaign_meters(bus: SimulatedBus, meters: list[SimMeter]) -> list[CampaignMeter]:
    return [CampaignMeter(f"meter-{meter.physical_address}", client_for(bus, meter)) for meter in meters]
