"""A HES AARQ that meets a busy data link waits for it (up to the exchange timeout) instead of failing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from gateway.codec import acse
from gateway.config import GatewayConfig
from gateway.core.channel import Association
from gateway.core.channel_client import ChannelClient
from gateway.daemon import Gateway
from gateway.sim.bus import SimMeter, SimulatedBus
from gateway.sim.meter import build_meter
from gateway.sim.pty import open_pty
from tests.integration.conftest import SimLine, fixed_clock, gateway_config, meter_settings
from tests.integration.rawhes import GET_LDN, PUBLIC_AARQ, RLRQ, RawHes
from tests.integration.test_relay import associate_and_read_name, ldn_of


async def hold_public_link(gateway: Gateway, *, address: int, release: asyncio.Event, held: asyncio.Event) -> None:
    """The gateway's own short association (as an identity read or a ping makes) on client 16."""
    association = Association(client_sap=16, logical_device=1, meter=address)
    async with ChannelClient(gateway.media["bus0"], association) as client:
        await client.request(PUBLIC_AARQ)
        held.set()
        await release.wait()


async def test_an_aarq_waits_for_the_gateways_own_link_and_keeps_its_order(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    gateway = gateway_factory(gateway_config(sim_line.pty.slave_path))
    await gateway.start()
    release, held = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold_public_link(gateway, address=17, release=release, held=held))
    await held.wait()
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    hes.send(client_sap=16, meter_sap=17, apdu=PUBLIC_AARQ)
    hes.send(client_sap=16, meter_sap=17, apdu=GET_LDN)  # pipelined behind the waiting AARQ
    try:
        early = await hes.receive(timeout=0.3)
    except TimeoutError:
        early = None
    assert early is None  # nothing answered while the link is held: the AARQ waits
    release.set()
    await holder
    aare = await hes.receive()
    assert acse.decode_aare(aare.apdu).result is acse.AssociationResult.ACCEPTED
    assert ldn_of((await hes.receive()).apdu) == sim_line.meters[0].device.name
    await hes.close()


async def test_a_link_held_past_the_exchange_timeout_gets_a_transient_rejection(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    gateway = gateway_factory(gateway_config(sim_line.pty.slave_path, exchange_timeout_s=0.3))
    await gateway.start()
    release, held = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold_public_link(gateway, address=18, release=release, held=held))
    await held.wait()
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    aare = await hes.request(client_sap=16, meter_sap=18, apdu=PUBLIC_AARQ, timeout=2)
    assert acse.decode_aare(aare.apdu).result is acse.AssociationResult.REJECTED_TRANSIENT
    release.set()
    await holder
    assert (await associate_and_read_name(hes, meter_sap=18)).startswith(b"SIM")  # and then it works
    await hes.close()


async def test_release_then_associate_again_at_once(
    gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path
) -> None:
    # a 9600 bit/s line: the DISC after the RLRE takes ~20 ms, the HES's next AARQ arrives well before
    pty = open_pty()
    meter = SimMeter(physical_address=17, device=build_meter(meter_settings(1), clock=fixed_clock))
    bus = SimulatedBus(meters=[meter], bit_rate=9600)
    bus.attach(pty.master_fd)
    try:
        gateway = gateway_factory(gateway_config(pty.slave_path, meters=1, directory=tmp_path))
        await gateway.start()
        hes = await RawHes.connect(*gateway.wan.addresses[0])
        for _ in range(3):
            await associate_and_read_name(hes, meter_sap=17)
            assert (await hes.request(client_sap=16, meter_sap=17, apdu=RLRQ)).apdu[0] == 0x63
            # at once: the old data link is still closing
        answer = await hes.request(client_sap=16, meter_sap=17, apdu=PUBLIC_AARQ)
        assert acse.decode_aare(answer.apdu).result is acse.AssociationResult.ACCEPTED
        await hes.close()
    finally:
        bus.detach()
        pty.close()
