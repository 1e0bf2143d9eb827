"""Learned link parameters (issue 13): what a meter accepted in its UA is remembered in the registry and proposed
in the next SNRM, after a restart too, within the link's configured cap. The SNRM is read on the line."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.codec.hdlc import FrameKind, HdlcFrame, HdlcParameters, ServerSettings, decode_parameters, encode_frame
from gateway.codec.hdlc.control import u_control
from gateway.codec.hdlc.params import MOST, capped, meter_limit
from gateway.config import LinkConfig
from gateway.core.channel import ApduReceived, Association, ChannelDown, ChannelEvent, DownReason
from gateway.daemon import serial_opener
from gateway.link.line import MeterLine
from gateway.link.medium import SerialMedium
from gateway.registry.database import open_database
from gateway.registry.store import MeterRegistry
from gateway.sim.bus import SimMeter, SimulatedBus
from gateway.sim.pty import open_pty
from tests.link.test_line import EchoDevice

EVENT_WAIT_S = 5.0  # a bound on a broken test, not a measurement
METER = Association(client_sap=16, logical_device=1, meter=17)
SMALL = HdlcParameters(max_info_tx=512, max_info_rx=512, window_tx=3, window_rx=3)  # all the meter accepts


class RecordingBus(SimulatedBus):
    """A simulated bus that keeps every SNRM it hears."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.snrms: list[HdlcFrame] = []

    def hear(self, frame: HdlcFrame, *, now: float) -> list[bytes]:
        if frame.defined_kind is FrameKind.SNRM:
            self.snrms.append(frame)
        return super().hear(frame, now=now)


class ProposalRefusingBus(RecordingBus):
    """Its meters answer DM to an SNRM that proposes parameters, and take one without (the defaults)."""

    def hear(self, frame: HdlcFrame, *, now: float) -> list[bytes]:
        if frame.defined_kind is FrameKind.SNRM and frame.info:
            self.snrms.append(frame)
            return [encode_frame(HdlcFrame(frame.source, frame.destination, u_control(FrameKind.DM, poll=True)))]
        return super().hear(frame, now=now)


async def associate_once(database: Path, *, window: int = 7, max_info: int = 2030,
                         bus_type: type[RecordingBus] = RecordingBus) -> HdlcParameters:
    """One gateway "run": a registry over the file, a line and its medium, one channel to meter 17 and back.

    Returns what the SNRM proposed (read on the line).
    """
    connection = open_database(database)
    registry = MeterRegistry(connection)
    registry.register(link="bus0", physical_address=17, sap=17)
    pty = open_pty()
    bus = bus_type(meters=[SimMeter(physical_address=17, device=EchoDevice(name=b"M0"))],
                       settings=ServerSettings(supported=SMALL))
    bus.attach(pty.master_fd)
    config = LinkConfig(name="bus0", device=pty.slave_path, baudrate=115200, response_timeout_s=0.5, max_retries=2,
                        window=window, max_info=max_info)
    line = MeterLine(config=config, opener=serial_opener(config))
    await line.open()
    events: asyncio.Queue[ChannelEvent] = asyncio.Queue()
    try:
        channel = SerialMedium(line, memory=registry).open(METER, events.put_nowait)
        channel.send_apdu(b"\xc0\x01")
        assert await asyncio.wait_for(events.get(), EVENT_WAIT_S) == ApduReceived(b"M0:\xc0\x01")
        assert channel.close() is False
        assert await asyncio.wait_for(events.get(), EVENT_WAIT_S) == ChannelDown(DownReason.RELEASED)
    finally:
        line.close()
        bus.detach()
        pty.close()
        connection.close()
    *_, snrm = bus.snrms  # the one the meter took
    return decode_parameters(snrm.info)


async def test_the_next_snrm_proposes_what_the_meter_accepted_after_a_restart(tmp_path: Path) -> None:
    database = tmp_path / "registry.db"
    first = await associate_once(database)
    assert first == HdlcParameters(max_info_tx=2030, max_info_rx=2030, window_tx=7, window_rx=7)  # nothing known yet
    learned = MeterRegistry(open_database(database)).get(17)
    assert learned is not None and learned.hdlc is not None and learned.hdlc.accepted == SMALL
    assert await associate_once(database) == SMALL  # a new registry and line over the same file: remembered


async def test_a_lowered_configured_cap_wins_over_what_was_learned(tmp_path: Path) -> None:
    database = tmp_path / "registry.db"
    await associate_once(database)
    lowered = await associate_once(database, window=2, max_info=256)
    assert lowered == HdlcParameters(max_info_tx=256, max_info_rx=256, window_tx=2, window_rx=2)
    # what the meter took under the lower cap is no limit of its own: the cap raised again, the learned limit holds
    assert await associate_once(database) == SMALL


async def test_a_meter_that_refused_the_proposal_is_asked_for_the_defaults_from_then_on(tmp_path: Path) -> None:
    database = tmp_path / "registry.db"
    assert await associate_once(database, bus_type=ProposalRefusingBus) == HdlcParameters()  # DM, then the defaults
    learned = MeterRegistry(open_database(database)).get(17)
    assert learned is not None and learned.hdlc is not None and learned.hdlc.limit == HdlcParameters()
    bus_snrms: list[HdlcFrame] = []

    class Counting(ProposalRefusingBus):
        def __init__(self, **kwargs: object) -> None:
            super().__init__(**kwargs)
            self.snrms = bus_snrms

    assert await associate_once(database, bus_type=Counting) == HdlcParameters()
    assert [snrm.info for snrm in bus_snrms] == [b""]  # remembered: no proposal, no DM round trip


def test_only_a_limit_the_meter_set_is_kept() -> None:
    took_all = HdlcParameters(max_info_tx=256, max_info_rx=256, window_tx=2, window_rx=2)
    assert meter_limit(previous=None, proposed=took_all, accepted=took_all) == MOST  # nothing said about the meter
    assert meter_limit(previous=SMALL, proposed=took_all, accepted=took_all) == SMALL  # within what was known
    lowered_rx = HdlcParameters(max_info_tx=256, max_info_rx=128, window_tx=2, window_rx=1)
    assert meter_limit(previous=None, proposed=took_all, accepted=lowered_rx) == HdlcParameters(
        max_info_tx=2030, max_info_rx=128, window_tx=7, window_rx=1)
    assert meter_limit(previous=SMALL, proposed=MOST, accepted=MOST) == MOST  # it takes more now (new firmware)
    assert capped(SMALL, took_all) == took_all and capped(SMALL, MOST) == SMALL
