"""The serial line as a MeterMedium: channels over HDLC links on a real pty, typed endings, pushes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from gateway.codec.hdlc import HdlcAddress, HdlcFrame, encode_frame
from gateway.config import LinkConfig
from gateway.core.channel import (
    ApduReceived,
    Association,
    ChannelDown,
    ChannelError,
    ChannelEvent,
    DownReason,
    UnsolicitedPush,
)
from gateway.daemon import serial_opener
from gateway.link.line import MeterLine
from gateway.link.medium import SerialMedium
from gateway.sim.bus import SimMeter, SimulatedBus
from gateway.sim.pty import PtyPair, open_pty
from tests.core.fakes import PUSH
from tests.link.test_line import EchoDevice

EVENT_WAIT_S = 5.0  # a bound on a broken test, not a measurement


@dataclass
class Rig:
    pty: PtyPair
    bus: SimulatedBus
    line: MeterLine
    medium: SerialMedium
    events: asyncio.Queue[ChannelEvent]

    async def event(self) -> ChannelEvent:
        return await asyncio.wait_for(self.events.get(), EVENT_WAIT_S)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    pty = open_pty()
    bus = SimulatedBus(meters=[SimMeter(physical_address=17, device=EchoDevice(name=b"M0"))])
    bus.attach(pty.master_fd)
    config = LinkConfig(name="bus0", device=pty.slave_path, baudrate=115200, response_timeout_s=0.1, max_retries=2)
    line = MeterLine(config=config, opener=serial_opener(config))
    await line.open()
    yield Rig(pty=pty, bus=bus, line=line, medium=SerialMedium(line), events=asyncio.Queue())
    line.close()
    bus.detach()
    pty.close()


METER = Association(client_sap=16, logical_device=1, meter=17)


async def test_a_channel_carries_apdus_sent_before_the_ua_then_says_goodbye(rig: Rig) -> None:
    released: list[Association] = []
    rig.medium.on_released(released.append)
    channel = rig.medium.open(METER, rig.events.put_nowait)
    channel.send_apdu(b"\xc0\x01")  # queued in the link until the meter's UA
    assert rig.medium.busy(METER)
    assert await rig.event() == ApduReceived(b"M0:\xc0\x01")
    assert channel.close() is False  # a DISC is under way
    assert await rig.event() == ChannelDown(DownReason.RELEASED)
    assert not rig.medium.busy(METER) and released == [METER]


async def test_an_empty_address_ends_the_channel_with_a_timeout(rig: Rig) -> None:
    channel = rig.medium.open(Association(client_sap=16, logical_device=1, meter=40), rig.events.put_nowait,
                              probe=True)
    channel.send_apdu(b"\xc0\x01")
    assert await rig.event() == ChannelDown(DownReason.TIMEOUT)
    assert not rig.medium.busy(channel.association)


async def test_closing_the_line_ends_every_channel_with_medium_lost(rig: Rig) -> None:
    channel = rig.medium.open(METER, rig.events.put_nowait)
    channel.send_apdu(b"\xc0\x01")
    assert isinstance(await rig.event(), ApduReceived)
    rig.line.close()
    assert await rig.event() == ChannelDown(DownReason.MEDIUM_LOST)
    assert not rig.medium.usable() and not rig.medium.busy(METER)


async def test_abort_lets_go_at_once_and_nothing_follows(rig: Rig) -> None:
    channel = rig.medium.open(METER, rig.events.put_nowait)
    channel.abort()
    assert not rig.medium.busy(METER)
    with pytest.raises(ChannelError):
        channel.send_apdu(b"\xc0\x01")
    assert rig.events.empty()


async def test_a_channel_that_never_came_up_closes_at_once(rig: Rig) -> None:
    channel = rig.medium.open(METER, rig.events.put_nowait)
    assert channel.close() is True  # no data link yet: nothing to say goodbye to
    assert not rig.medium.busy(METER)


async def test_associations_the_line_cannot_carry_or_already_carries_are_refused(rig: Rig) -> None:
    rig.medium.open(METER, rig.events.put_nowait)
    for association in (METER, Association(client_sap=200, logical_device=1, meter=17),
                        Association(client_sap=16, logical_device=1, meter="fd00::17")):
        with pytest.raises(ChannelError):
            rig.medium.open(association, rig.events.put_nowait)


async def test_a_push_no_channel_takes_becomes_an_unsolicited_push_with_the_meters_place(rig: Rig) -> None:
    pushes: list[UnsolicitedPush] = []
    rig.medium.on_unsolicited(pushes.append)
    source = HdlcAddress.server(logical_device=3, physical_address=21)
    frame = HdlcFrame(destination=HdlcAddress.client(102), source=source, control=0x13, info=b"\xe6\xe7\x00" + PUSH)
    rig.line.data_received(encode_frame(frame))
    assert pushes == [UnsolicitedPush(network="bus0", meter=21, logical_device=3, client_sap=102, apdu=PUSH)]
