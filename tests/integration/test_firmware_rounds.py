"""A firmware campaign in broadcast rounds through the gateway: repair by rebroadcast, activation at a set time.

The head-end (tests/firmware_rounds.py) reaches a hundred simulated meters only through the
gateway: its broadcasts to the all-station wPort, one association per meter to confirm.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import random
from collections.abc import Callable
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.cosem.server import LogicalDevice
from gateway.daemon import Gateway
from gateway.sim.meter import image_transfer_of
from tests.cosem.client import Keys
from tests.firmware_channels import GatewayBroadcaster, gateway_campaign, meters_on_a_pty
from tests.firmware_hes import BroadcastSender, FirmwareImage
from tests.firmware_rounds import ACTIVATION_COPIES, INITIATE_COPIES, RoundsPlan, run_broadcast_campaign
from tests.integration.conftest import gateway_config
from tests.sim.firmware_fleet import (
    AUTHENTICATION_KEY,
    BROADCAST_KEY,
    BROADCAST_KEYS,
    HES_TITLE,
    NOW,
    FleetClock,
    firmware_meters,
    unicast_key,
)

IMAGE = FirmwareImage(identifier=b"SIM-FW-100R", data=random.Random(101).randbytes(1500))  # 24 blocks
ACTIVATE_AT = NOW + dt.timedelta(minutes=30)


def meter_keys(index: int) -> Keys:
    return Keys(block_cipher_key=unicast_key(index + 1), authentication_key=AUTHENTICATION_KEY, system_title=HES_TITLE)


def _everything_under(directory: Path) -> bytes:
    """The gateway's state: registry, push store, its own keys file."""
    return b"".join(path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file())


async def test_a_hundred_meters_in_broadcast_rounds_all_activate_the_right_image_at_the_set_time(
    gateway_factory: Callable[[GatewayConfig], Gateway], captured_logs: io.StringIO, tmp_path: Path
) -> None:
    clock = FleetClock()
    meters = firmware_meters(100, loss=0.02, clock=clock, expected_image_sha256=IMAGE.sha256)
    with meters_on_a_pty(meters, seed=100) as (pty, _bus):
        config = gateway_config(pty.slave_path, meters=len(meters), directory=tmp_path)
        gateway = gateway_factory(config)
        await gateway.start()
        host, port = gateway.wan.addresses[0]
        broadcaster = GatewayBroadcaster(host, port)
        reports, summary = await asyncio.to_thread(
            run_broadcast_campaign, gateway_campaign(host, port, count=len(meters), keys=meter_keys), IMAGE,
            sender=BroadcastSender(BROADCAST_KEYS), broadcaster=broadcaster,
            plan=RoundsPlan(activate_at=ACTIVATE_AT, wait_until=clock.wait_until))
        broadcaster.channel.close()
        assert [report.error for report in reports] == [None] * 100
        assert all(report.activated and report.activated_sha256 == IMAGE.sha256 for report in reports)
        for meter in meters:
            device = meter.device
            assert isinstance(device, LogicalDevice)
            activated = image_transfer_of(device).activated
            assert activated is not None and activated.sha256 == IMAGE.sha256
        # everything broadcast went out once on the line, for all hundred meters
        sent = INITIATE_COPIES + summary.broadcast_blocks + ACTIVATION_COPIES
        assert gateway.lines["bus0"].counters.broadcasts == len(broadcaster.notifications) == sent
        assert summary.rounds[0].startswith("rebroadcast all")  # 2 % per meter: nearly every block missed somewhere
        # at most one association per meter per round: the confirmation, plus the sampled statuses and the probe
        assert summary.sessions == 100 + 5 + 1
        # most meters activated at the set time by the broadcast schedule, not by a unicast ACTION
        assert sum(report.unicast_activate for report in reports) < 10
        await gateway.stop()
    secrets = [BROADCAST_KEY, AUTHENTICATION_KEY, *(unicast_key(index + 1) for index in range(len(meters)))]
    logged = captured_logs.getvalue().lower()
    stored = _everything_under(tmp_path)
    for key in secrets:
        assert key.hex() not in logged and key.hex() not in repr(config).lower()
        assert key not in stored and key.hex().encode() not in stored.lower()
