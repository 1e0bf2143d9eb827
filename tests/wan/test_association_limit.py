"""max_associations_per_peer: one HES address may hold only so many meter associations at once.

The WAN side gives the router HesConnection.peer_address (the HES's IP, no port); the router counts
open meter sessions per peer_address and answers an AARQ over the limit with a transient rejection,
without touching the meter line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from gateway.codec import acse
from gateway.config import GatewayConfig
from gateway.daemon import Gateway
from tests.integration.conftest import SimLine, gateway_config
from tests.integration.rawhes import PUBLIC_AARQ, RLRQ, RawHes
from tests.integration.test_relay import associate_and_read_name
from tests.wan.support import until


async def connect_from(source: str, address: tuple[str, int]) -> RawHes:
    reader, writer = await asyncio.open_connection(*address, local_addr=(source, 0))
    return RawHes(reader, writer)


async def test_associations_are_limited_per_hes_address(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    config = gateway_config(sim_line.pty.slave_path)
    gateway = gateway_factory(replace(config, wan=replace(config.wan, max_associations_per_peer=2)))
    await gateway.start()
    address = gateway.wan.addresses[0]
    line = gateway.lines["bus0"]
    first = await connect_from("127.0.0.1", address)
    second = await connect_from("127.0.0.1", address)  # same HES address, another connection
    other = await connect_from("127.0.0.2", address)  # another HES address has its own allowance
    try:
        await associate_and_read_name(first, meter_sap=17)
        await associate_and_read_name(first, meter_sap=18)
        frames_before = line.counters.frames_sent
        aare = await second.request(client_sap=16, meter_sap=19, apdu=PUBLIC_AARQ)
        assert acse.decode_aare(aare.apdu).result is acse.AssociationResult.REJECTED_TRANSIENT
        assert line.counters.frames_sent == frames_before  # refused without an SNRM to the meter
        assert (await associate_and_read_name(other, meter_sap=19)).startswith(b"SIM")
        rlre = await first.request(client_sap=16, meter_sap=17, apdu=RLRQ)  # one released: room again
        assert rlre.apdu[0] == 0x63
        await until(lambda: (17, 16) not in gateway.router.sessions)
        assert (await associate_and_read_name(second, meter_sap=20)).startswith(b"SIM")
    finally:
        for hes in (first, second, other):
            await hes.close()
