"""A firmware campaign with the unicast steps through the gateway's relay (HES wrapper -> HDLC on a pty).

The gateway has no broadcast path yet: the test's broadcaster hands each all-station UI frame to
the simulated bus on the event loop's thread, as if the gateway had written it on the line.
"""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import Callable

from gateway.codec.hdlc import HdlcFrame, HdlcFrameDecoder, encode_broadcast
from gateway.config import GatewayConfig
from gateway.daemon import Gateway
from gateway.sim.bus import SimulatedBus
from tests.cosem.client import Keys
from tests.firmware_channels import gateway_campaign, meters_on_a_pty
from tests.firmware_hes import BroadcastSender, FirmwareImage, run_campaign
from tests.integration.conftest import gateway_config
from tests.sim.firmware_fleet import (
    AUTHENTICATION_KEY,
    BROADCAST_KEY,
    BROADCAST_KEYS,
    HES_TITLE,
    firmware_meters,
    unicast_key,
)

IMAGE = FirmwareImage(identifier=b"SIM-FW-3.2.0", data=random.Random(4059).randbytes(2048 + 5))


async def _hear(bus: SimulatedBus, frame: HdlcFrame) -> None:
    assert bus.hear(frame, now=0.0) == []


async def test_a_campaign_through_the_relay(
    gateway_factory: Callable[[GatewayConfig], Gateway], captured_logs: io.StringIO
) -> None:
    meters = firmware_meters(4, loss=0.1)
    with meters_on_a_pty(meters, seed=5) as (pty, bus):
        gateway = gateway_factory(gateway_config(pty.slave_path))
        await gateway.start()
        host, port = gateway.wan.addresses[0]
        campaign = gateway_campaign(host, port, count=len(meters), keys=lambda index: Keys(
            block_cipher_key=unicast_key(index + 1), authentication_key=AUTHENTICATION_KEY, system_title=HES_TITLE))
        loop = asyncio.get_running_loop()

        def broadcaster(apdu: bytes) -> None:
            (frame,) = HdlcFrameDecoder().feed(encode_broadcast(client_sap=1, apdu=apdu), now=0.0)
            asyncio.run_coroutine_threadsafe(_hear(bus, frame), loop).result()

        reports = await asyncio.to_thread(run_campaign, campaign, IMAGE, sender=BroadcastSender(BROADCAST_KEYS),
                                          broadcaster=broadcaster)
        for meter, report in zip(meters, reports, strict=True):
            assert report.error is None, report
            assert report.activated and report.activated_sha256 == IMAGE.sha256
            assert list(report.missed_broadcast) == bus.broadcasts_lost(physical_address=meter.physical_address)
        assert any(report.unicast_blocks for report in reports)  # seed 5: some gaps went through the relay
        logged = captured_logs.getvalue().lower()
        assert "relay" in logged or "session" in logged  # the gateway did log the sessions, at debug level
        for key in (BROADCAST_KEY, AUTHENTICATION_KEY, *(unicast_key(index + 1) for index in range(len(meters)))):
            assert key.hex() not in logged
