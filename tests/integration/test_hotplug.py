"""The modem goes away and comes back: in-flight exchanges fail fast, the link reopens by itself."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from gateway.codec import acse
from gateway.config import GatewayConfig
from gateway.daemon import Gateway
from tests.integration.conftest import gateway_config, make_sim_line
from tests.integration.rawhes import GET_LDN, PUBLIC_AARQ, RawHes


def stable_path(tmp_path: Path, target: str) -> Path:
    """What udev gives a modem: a symlink with a stable name (here pointing at a pty)."""
    link = tmp_path / "dlms-modem-0"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(target)
    return link


async def wait_until(condition: Callable[[], bool], timeout: float) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not condition():
        if loop.time() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.01)
    return loop.time() - started


async def unplug_and_replug(tmp_path: Path, gateway_factory: Callable[[GatewayConfig], Gateway], *,
                            use_udev_events: bool) -> None:
    sim = make_sim_line(2)
    modem = stable_path(tmp_path, sim.pty.slave_path)
    config = gateway_config(str(modem), meters=2, directory=tmp_path)
    # with udev events, the 1 s retry is slowed to 30 s so that only the event can explain a fast reopen
    link = replace(config.links[0], reopen_interval_s=30.0 if use_udev_events else 1.0)
    gateway = gateway_factory(replace(config, links=(link,)))
    await gateway.start()
    line = gateway.lines["bus0"]
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    assert (await hes.request(client_sap=16, meter_sap=17, apdu=PUBLIC_AARQ)).apdu[0] == 0x61

    # the meter stops answering, a GET is in flight, then the modem disappears
    sim.bus.detach()
    loop = asyncio.get_running_loop()
    hes.send(client_sap=16, meter_sap=17, apdu=GET_LDN)
    await asyncio.sleep(0.05)
    unplugged = loop.time()
    if use_udev_events:
        gateway.hotplug("remove", frozenset({str(modem), sim.pty.slave_path}))
    sim.pty.close()
    answer = await hes.receive(timeout=2)
    assert answer.apdu[0] == 0xD8  # exception-response, not silence
    assert loop.time() - unplugged < 1.0
    await wait_until(lambda: not line.is_open, 1.0)
    refused = await hes.request(client_sap=16, meter_sap=18, apdu=PUBLIC_AARQ)
    assert acse.decode_aare(refused.apdu).result is acse.AssociationResult.REJECTED_TRANSIENT

    # the modem comes back on the same stable path
    back = make_sim_line(2)
    stable_path(tmp_path, back.pty.slave_path)
    replugged = loop.time()
    if use_udev_events:
        gateway.hotplug("add", frozenset({str(modem), back.pty.slave_path}))
    await wait_until(lambda: line.is_open, 2.0)
    assert loop.time() - replugged < 2.0
    aare = await hes.request(client_sap=16, meter_sap=18, apdu=PUBLIC_AARQ)
    assert acse.decode_aare(aare.apdu).result is acse.AssociationResult.ACCEPTED
    await hes.close()
    back.bus.detach()
    back.pty.close()
    os.unlink(modem)


async def test_modem_unplugged_and_replugged_without_udev(
    tmp_path: Path, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    await unplug_and_replug(tmp_path, gateway_factory, use_udev_events=False)


async def test_modem_unplugged_and_replugged_with_udev_events(
    tmp_path: Path, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    await unplug_and_replug(tmp_path, gateway_factory, use_udev_events=True)
