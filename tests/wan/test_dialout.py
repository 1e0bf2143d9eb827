"""Dial-out: the gateway calls its HES, which then reads meters over that connection; lost, it redials."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from gateway.config import DialOutConfig, GatewayConfig
from gateway.daemon import Gateway
from tests.integration.conftest import SimLine, gateway_config
from tests.integration.rawhes import RawHes
from tests.integration.test_relay import associate_and_read_name


async def test_the_hes_reads_through_a_connection_the_gateway_opened_and_redialled(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path
) -> None:
    arrivals: asyncio.Queue[RawHes] = asyncio.Queue()

    async def hes_accepts(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrivals.put_nowait(RawHes(reader, writer))

    hes_server = await asyncio.start_server(hes_accepts, "127.0.0.1", 0)
    port = hes_server.sockets[0].getsockname()[1]
    config = gateway_config(sim_line.pty.slave_path, directory=tmp_path)
    dial = DialOutConfig(host="127.0.0.1", port=port, reconnect_min_s=0.05, reconnect_max_s=0.2)
    gateway = gateway_factory(replace(config, dial_out=(dial,)))
    await gateway.start()

    first = await asyncio.wait_for(arrivals.get(), 5)  # the gateway called us
    assert (await associate_and_read_name(first, meter_sap=17)) == sim_line.meters[0].device.name
    assert gateway.dial_outs[0].connected
    await first.close()  # the path breaks (carrier NAT timeout, HES restart)

    second = await asyncio.wait_for(arrivals.get(), 5)  # redialled by itself
    assert (await associate_and_read_name(second, meter_sap=18)) == sim_line.meters[1].device.name
    assert gateway.dial_outs[0].dials == 2
    await second.close()
    hes_server.close()
    await hes_server.wait_closed()


async def test_a_hes_that_is_not_there_is_dialled_again_with_back_off(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path
) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()  # nothing listens there now
    config = gateway_config(sim_line.pty.slave_path, directory=tmp_path)
    dial = DialOutConfig(host="127.0.0.1", port=port, reconnect_min_s=0.05, reconnect_max_s=0.1)
    gateway = gateway_factory(replace(config, dial_out=(dial,)))
    await gateway.start()
    for _ in range(200):
        if gateway.dial_outs[0].dials >= 4:
            break
        await asyncio.sleep(0.01)
    assert gateway.dial_outs[0].dials >= 4
    assert not gateway.dial_outs[0].connected
    arrivals: asyncio.Queue[RawHes] = asyncio.Queue()

    async def hes_accepts(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrivals.put_nowait(RawHes(reader, writer))

    hes_server = await asyncio.start_server(hes_accepts, "127.0.0.1", port)  # the HES comes up
    hes = await asyncio.wait_for(arrivals.get(), 5)
    assert (await associate_and_read_name(hes, meter_sap=19)).startswith(b"SIM")
    await hes.close()
    hes_server.close()
    await hes_server.wait_closed()
