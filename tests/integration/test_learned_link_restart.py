"""The daemon remembers each meter's HDLC parameters across a restart (issue 13): the whole composition, read on the
line. A meter that accepts only window 3 / 512 octets is proposed exactly that after the gateway restarts over the
same state directory, and a lowered [[links]] cap wins."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gateway.codec.hdlc import HdlcParameters, ServerSettings, decode_parameters
from gateway.config import GatewayConfig
from gateway.daemon import Gateway
from gateway.sim.bus import SimMeter
from gateway.sim.meter import build_meter
from gateway.sim.pty import open_pty
from tests.integration.conftest import fixed_clock, gateway_config, meter_settings
from tests.integration.rawhes import GET_LDN, PUBLIC_AARQ, RLRQ, RawHes
from tests.link.test_learned_link import SMALL, RecordingBus

IEC_MOST = HdlcParameters(max_info_tx=2030, max_info_rx=2030, window_tx=7, window_rx=7)


async def one_run(config: GatewayConfig, bus: RecordingBus) -> HdlcParameters:
    """Start the daemon's parts, read the meter's name through them once, stop; return what its SNRM proposed."""
    gateway = Gateway(config)
    await gateway.start()
    try:
        hes = await RawHes.connect(*gateway.wan.addresses[0])
        assert (await hes.request(client_sap=16, meter_sap=17, apdu=PUBLIC_AARQ)).apdu[0] == 0x61
        assert (await hes.request(client_sap=16, meter_sap=17, apdu=GET_LDN)).apdu[0] == 0xC4
        assert (await hes.request(client_sap=16, meter_sap=17, apdu=RLRQ)).apdu[0] == 0x63
        await hes.close()
    finally:
        await gateway.stop()
    return decode_parameters(bus.snrms[-1].info)


async def test_a_restarted_daemon_proposes_what_the_meter_accepted_and_a_lowered_cap_wins(tmp_path: Path) -> None:
    pty = open_pty()
    bus = RecordingBus(meters=[SimMeter(physical_address=17, device=build_meter(meter_settings(1),
                                                                                clock=fixed_clock))],
                       settings=ServerSettings(supported=SMALL))
    bus.attach(pty.master_fd)
    try:
        config = gateway_config(pty.slave_path, meters=1, directory=tmp_path)
        assert await one_run(config, bus) == IEC_MOST  # first contact: the configured cap, 7 / 2030
        assert await one_run(config, bus) == SMALL  # after a restart: what its UA said, from the registry
        (link,) = config.links
        lowered = replace(config, links=(replace(link, window=2, max_info=256),))
        assert await one_run(lowered, bus) == HdlcParameters(max_info_tx=256, max_info_rx=256, window_tx=2,
                                                             window_rx=2)
        assert await one_run(config, bus) == SMALL  # the cap raised again: the meter's own limit still holds
    finally:
        bus.detach()
        pty.close()
