"""A hostile device on the meter line: forged pushes and undefined frames, while a HES reads a meter."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.cli.client import call
from gateway.cli.technician import _render_status
from gateway.codec.hdlc import HdlcAddress, HdlcFrame, encode_frame
from gateway.config import GatewayConfig, RegistryConfig
from gateway.daemon import Gateway
from tests.integration.conftest import SimLine
from tests.integration.rawhes import GET_LDN, PUBLIC_AARQ, RawHes
from tests.integration.test_push import PUSH_CLIENT_SAP, HesListener, data_notification, push_config
from tests.link.test_line import UNDEFINED_FRAMES

UI = 0x13  # IEC 62056-46: UI with the P/F bit set, as meters send pushes


@pytest.fixture
async def listener() -> AsyncIterator[HesListener]:
    hes = HesListener()
    await hes.start()
    yield hes
    if hes.server is not None and hes.server.is_serving():
        await hes.stop()


def pushed_from(physical_address: int | None, n: int, *, logical_device: int = 1) -> bytes:
    """A UI frame carrying a data-notification, with whatever source address a forger likes."""
    source = HdlcAddress(upper=logical_device, lower=None, size=1) if physical_address is None else \
        HdlcAddress.server(logical_device=logical_device, physical_address=physical_address, size=4)
    return encode_frame(HdlcFrame(destination=HdlcAddress.client(PUSH_CLIENT_SAP), source=source, control=UI,
                                  info=b"\xe6\xe7\x00" + data_notification(n)))


async def write_line(fd: int, data: bytes) -> None:
    """Put bytes on the meter line (the pty master), waiting for room when its buffer is full."""
    loop = asyncio.get_running_loop()
    while data:
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            writable = loop.create_future()
            loop.add_writer(fd, writable.set_result, None)
            try:
                await writable
            finally:
                loop.remove_writer(fd)


async def started(factory: Callable[[GatewayConfig], Gateway], config: GatewayConfig) -> Gateway:
    gateway = factory(config)
    await gateway.start()
    return gateway


async def test_forged_pushes_register_a_bounded_number_of_meters_and_the_hes_keeps_the_line(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path, listener: HesListener
) -> None:
    config = push_config(sim_line.pty.slave_path, tmp_path, listener.port)
    gateway = await started(gateway_factory, replace(config, meters=config.meters[:2],
                                                     registry=RegistryConfig(identify=True)))
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    assert (await hes.request(client_sap=16, meter_sap=17, apdu=PUBLIC_AARQ)).apdu[0] == 0x61
    frames_to_nobody = sim_line.bus.frames_ignored
    forged = [pushed_from(address, address) for address in range(100, 250)]  # 150 addresses nobody holds
    reserved = [pushed_from(16383, 1), pushed_from(5, 2), pushed_from(300, 3, logical_device=0),
                pushed_from(None, 4)]  # a 1-byte source: no physical address at all
    genuine = pushed_from(17, 17)
    await write_line(sim_line.pty.master_fd, b"".join(forged + reserved) + genuine)
    for _ in range(30):  # the forged frames were read before the first answer came back
        assert (await hes.request(client_sap=16, meter_sap=17, apdu=GET_LDN)).apdu[0] == 0xC4
    # identity reads yield to the HES: not one frame went to a forged address while it was reading
    assert sim_line.bus.frames_ignored == frames_to_nobody
    by_push = [m for m in gateway.registry.meters() if m.registered_by == "push"]
    assert [m.physical_address for m in by_push] == [100, 101, 102, 103]  # registry.push_registration_burst
    delivered = await listener.take(5)
    assert [p.apdu for p in delivered] == [data_notification(n) for n in (100, 101, 102, 103, 17)]
    assert gateway.pushes_unrouted == 0  # refused pushes are counted as refused registrations, not queued

    status = await asyncio.to_thread(call, gateway.runtime_directory / "control.sock", "status")
    assert status["push_registrations"] == {"registered": 4, "refused": {"address": 4, "rate": 146}}
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        _render_status(status)
    assert "Registered by push: 4; refused: address 4, rate 146" in text.getvalue()
    await hes.close()


async def test_undefined_frames_on_the_line_are_counted_and_stall_nothing(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path, listener: HesListener
) -> None:
    gateway = await started(gateway_factory, push_config(sim_line.pty.slave_path, tmp_path, listener.port))
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    assert (await hes.request(client_sap=16, meter_sap=17, apdu=PUBLIC_AARQ)).apdu[0] == 0x61
    await write_line(sim_line.pty.master_fd, b"".join(UNDEFINED_FRAMES * 50) + pushed_from(18, 7))
    assert (await hes.request(client_sap=16, meter_sap=17, apdu=GET_LDN)).apdu[0] == 0xC4
    (pushed,) = await listener.take(1)  # the push behind 200 undefined frames of the same read
    assert (pushed.source, pushed.apdu) == (18, data_notification(7))
    status = await asyncio.to_thread(call, gateway.runtime_directory / "control.sock", "status")
    (link,) = status["links"]
    assert (link["frames_undefined"], link["frames_failed"]) == (200, 0)
    await hes.close()
