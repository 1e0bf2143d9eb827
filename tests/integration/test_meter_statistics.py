"""A bad-FCS frame from a meter during a relayed read is that meter's CRC error in the registry:
the line's decoder names the meter's address (the HCS vouched for it) and the daemon attributes it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from gateway.codec.hdlc import FrameKind, HdlcFrameDecoder
from gateway.codec.hdlc.frame import split_frames
from gateway.config import GatewayConfig
from gateway.daemon import Gateway
from tests.integration.conftest import SimLine, gateway_config
from tests.integration.rawhes import RLRQ, RawHes
from tests.integration.test_relay import associate_and_read_name
from tests.wan.support import until

PUBLIC_CLIENT = 16


def spoil_first_answer(line: SimLine, *, physical_address: int) -> list[bytes]:
    """The meter's first I-frame to the public client leaves with a bad FCS; returns what was spoiled."""
    spoiled: list[bytes] = []
    feed = line.bus.feed

    def spoil(sent: bytes) -> bytes:
        (frame,) = HdlcFrameDecoder().feed(sent, now=0.0)
        if spoiled or frame.kind is not FrameKind.I or frame.source.lower != physical_address \
                or frame.destination.upper != PUBLIC_CLIENT:
            return sent
        spoiled.append(sent)
        return sent[:-3] + bytes([sent[-3] ^ 0xFF]) + sent[-2:]  # the FCS only: the HCS still vouches

    def spoiling(data: bytes) -> bytes:
        return b"".join(spoil(sent) for sent in split_frames(feed(data)))

    line.bus.feed = spoiling  # type: ignore[method-assign]
    return spoiled


async def test_a_bad_fcs_during_a_relayed_read_is_the_meters_crc_error(
        sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]) -> None:
    spoiled = spoil_first_answer(sim_line, physical_address=18)
    config = gateway_config(sim_line.pty.slave_path)
    gateway = gateway_factory(replace(config, registry=replace(config.registry, flush_interval_s=0.05)))
    await gateway.start()
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    assert await associate_and_read_name(hes, meter_sap=18) == b"SIM0000000000002"  # the link sent it again
    assert (await hes.request(client_sap=PUBLIC_CLIENT, meter_sap=18, apdu=RLRQ)).apdu[0] == 0x63
    await hes.close()
    assert len(spoiled) == 1
    meter = gateway.registry.get
    await until(lambda: (m := meter(18)) is not None and m.stats.crc_errors == 1)
    assert [m.stats.crc_errors for m in gateway.registry.meters()] == [0, 1, 0, 0]
    assert gateway.lines["bus0"].decoder.bad_crc == 1
