"""A fleet of simulated meters for demos, tests and benchmarks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from gateway.sim.bus import SimMeter
from gateway.sim.meter import SimMeterSettings, build_meter

FIRST_PHYSICAL_ADDRESS = 17  # IEC 62056-46: 0x10..0x3FFD are device addresses
FIRST_SAP = 17


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def sim_fleet(count: int, *, clock: Callable[[], dt.datetime] = utc_now, first_serial: int = 1) -> list[SimMeter]:
    """``count`` meters at physical addresses 17, 18, ... with serial numbers from ``first_serial``."""
    meters = []
    for index in range(count):
        serial = first_serial + index
        settings = SimMeterSettings.demo(serial_number=serial)
        device = build_meter(settings, clock=clock)
        meters.append(SimMeter(physical_address=FIRST_PHYSICAL_ADDRESS + index, device=device))
    return meters
