"""A slow line (issue 13): an answer still arriving is not a silent meter; a link given up on is closed cleanly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from gateway.codec import apdu as apdus
from gateway.config import GatewayConfig
from gateway.daemon import Gateway
from gateway.sim.bus import SimMeter, SimulatedBus
from gateway.sim.medium import MediumSettings, SimulatedMedium
from gateway.sim.pty import open_pty
from tests.integration.conftest import gateway_config
from tests.integration.rawhes import RawHes
from tests.link.test_line import EchoDevice

EXCHANGE_TIMEOUT_S = 1.0
BIG = bytes([0xC0]) + bytes(range(256)) * 8  # 2 KB each way: 16 segments of 128 octets, ~2.5 s at 19,200 bit/s


async def test_a_long_answer_on_a_slow_line_outlasts_the_exchange_timeout_and_arrives_whole(
    gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    pty = open_pty()
    medium = SimulatedMedium(SimulatedBus(meters=[SimMeter(physical_address=17, device=EchoDevice(name=b"M0"))]),
                             MediumSettings(bit_rate=19_200, latency_s=0.01))
    medium.attach(pty.master_fd)
    try:
        config = gateway_config(pty.slave_path, meters=1, exchange_timeout_s=EXCHANGE_TIMEOUT_S,
                                response_timeout_s=1.0)
        gateway = gateway_factory(config)
        await gateway.start()
        hes = await RawHes.connect(*gateway.wan.addresses[0])
        await hes.request(client_sap=16, meter_sap=17, apdu=bytes.fromhex("601DA1090607608574050801"))  # opens it
        answer = await hes.request(client_sap=16, meter_sap=17, apdu=BIG, timeout=30.0)
        assert answer.apdu == b"M0:" + BIG  # not an exception-response after 1 s: the meter was never silent
        assert medium.figures.airtime_s > 2 * EXCHANGE_TIMEOUT_S  # it really took longer than the timeout
        await hes.close()
    finally:
        medium.detach()
        pty.close()


async def test_a_meter_gone_silent_gets_its_link_closed_with_a_disc_and_the_next_association_works(
    gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    pty = open_pty()
    device = EchoDevice(name=b"M0")
    bus = SimulatedBus(meters=[SimMeter(physical_address=17, device=device)])
    medium = SimulatedMedium(bus, MediumSettings(bit_rate=1_000_000))
    medium.attach(pty.master_fd)
    try:
        config = gateway_config(pty.slave_path, meters=1, exchange_timeout_s=0.5, response_timeout_s=0.2)
        gateway = gateway_factory(replace(config))
        await gateway.start()
        hes = await RawHes.connect(*gateway.wan.addresses[0])
        await hes.request(client_sap=16, meter_sap=17, apdu=bytes.fromhex("601DA1090607608574050801"))
        frames_before = bus.frames_in
        medium.settings = replace(medium.settings, frame_loss=1.0)  # the meter hears nothing any more
        silent = await hes.request(client_sap=16, meter_sap=17, apdu=b"\xc0\x01", timeout=10.0)
        assert apdus.kind_of(silent.apdu) is apdus.ApduKind.EXCEPTION_RESPONSE
        medium.settings = replace(medium.settings, frame_loss=0.0)  # it comes back
        again = await hes.request(client_sap=16, meter_sap=17, apdu=bytes.fromhex("601DA1090607608574050801"),
                                  timeout=10.0)
        assert again.apdu.startswith(b"M0:")  # a fresh data link: no "N(S) out of sequence", no refusal
        assert bus.frames_in > frames_before
        await hes.close()
    finally:
        medium.detach()
        pty.close()
