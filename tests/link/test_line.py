"""The meter line: a real pty opened through pyserial, HDLC links scheduled fairly on it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from gateway.codec.hdlc import (
    ApduReceived,
    HdlcAddress,
    HdlcClientLink,
    HdlcFrame,
    LinkDown,
    LinkEvent,
    LinkSettings,
    LinkUp,
    encode_frame,
)
from gateway.config import LinkConfig
from gateway.daemon import serial_opener
from gateway.link.line import MeterLine
from gateway.link.medium import push_apdu
from gateway.sim.bus import SimMeter, SimulatedBus
from gateway.sim.pty import PtyPair, open_pty


@dataclass
class EchoDevice:
    """A logical device that answers every APDU with its own name and the APDU."""

    name: bytes
    seen: list[bytes] = field(default_factory=list)
    released: int = 0
    line_log: list[bytes] = field(default_factory=list)  # shared by every device on the line

    def handle(self, *, client_sap: int, apdu: bytes) -> bytes:
        self.seen.append(apdu)
        self.line_log.append(self.name)
        return self.name + b":" + apdu

    def release(self, *, client_sap: int) -> None:
        self.released += 1


@dataclass
class Harness:
    pty: PtyPair
    bus: SimulatedBus
    line: MeterLine
    devices: list[EchoDevice]


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    pty = open_pty()
    shared: list[bytes] = []
    devices = [EchoDevice(name=f"M{i}".encode(), line_log=shared) for i in range(4)]
    bus = SimulatedBus(meters=[SimMeter(physical_address=17 + i, device=d) for i, d in enumerate(devices)])
    bus.attach(pty.master_fd)
    config = LinkConfig(name="bus0", device=pty.slave_path, baudrate=115200, response_timeout_s=0.1, max_retries=2)
    line = MeterLine(config=config, opener=serial_opener(config))
    await line.open()
    yield Harness(pty=pty, bus=bus, line=line, devices=devices)
    line.close()
    bus.detach()
    pty.close()


class Client:
    """One link on the line, with its events collected."""

    def __init__(self, line: MeterLine, *, physical_address: int, client_sap: int = 16) -> None:
        self.line = line
        self.server = HdlcAddress.server(logical_device=1, physical_address=physical_address)
        self.link = HdlcClientLink(client_sap=client_sap, server_address=self.server,
                                   settings=LinkSettings(response_timeout_s=0.1, max_retries=2))
        self.events: asyncio.Queue[LinkEvent] = asyncio.Queue()
        line.attach(self.link, self.events.put_nowait, client_sap=client_sap, server_address=self.server)

    async def next_event(self) -> LinkEvent:
        return await asyncio.wait_for(self.events.get(), 5)

    async def connect(self) -> LinkEvent:
        self.link.connect()
        self.line.wake()
        return await self.next_event()

    async def request(self, apdu: bytes) -> bytes:
        self.link.send_apdu(apdu)
        self.line.wake()
        event = await self.next_event()
        assert isinstance(event, ApduReceived), event
        return event.apdu


async def test_exchanges_through_a_real_pty(harness: Harness) -> None:
    client = Client(harness.line, physical_address=18)
    assert isinstance(await client.connect(), LinkUp)
    assert await client.request(b"\xc0\x01") == b"M1:\xc0\x01"
    big = bytes(range(256)) * 20  # 5120 bytes: segmented both ways at 128-byte info fields
    assert await client.request(big) == b"M1:" + big
    assert harness.devices[1].seen == [b"\xc0\x01", big]
    assert harness.line.counters.frames_sent > 40


async def test_sessions_to_different_meters_interleave_fairly(harness: Harness) -> None:
    clients = [Client(harness.line, physical_address=17 + i) for i in range(4)]
    for client in clients:
        assert isinstance(await client.connect(), LinkUp)
    order: list[int] = []

    async def run(index: int, client: Client) -> None:
        for n in range(10):
            answer = await client.request(bytes([0xC0, n]))
            assert answer == f"M{index}:".encode() + bytes([0xC0, n])
            order.append(index)

    await asyncio.gather(*(run(i, c) for i, c in enumerate(clients)))
    # round-robin: in every window of 4 consecutive completions each session appears once
    for start in range(0, 36, 4):
        assert sorted(order[start : start + 4]) == [0, 1, 2, 3], order


async def test_silent_address_times_out_after_retries_and_others_go_on(harness: Harness) -> None:
    ghost = Client(harness.line, physical_address=60)
    live = Client(harness.line, physical_address=17)
    ghost.link.connect()
    harness.line.wake()
    assert isinstance(await live.connect(), LinkUp)
    assert await live.request(b"\xc0\x07") == b"M0:\xc0\x07"
    event = await ghost.next_event()
    assert isinstance(event, LinkDown)
    assert harness.line.counters.timeouts == 3  # the SNRM and 2 retries
    assert await live.request(b"\xc0\x08") == b"M0:\xc0\x08"


async def test_losing_the_device_fails_every_link(harness: Harness) -> None:
    client = Client(harness.line, physical_address=17)
    assert isinstance(await client.connect(), LinkUp)
    harness.line.close()
    event = await client.next_event()
    assert isinstance(event, LinkDown)
    assert not harness.line.is_open


async def test_background_links_only_get_an_idle_medium(harness: Harness) -> None:
    relay = Client(harness.line, physical_address=17)
    poll_server = HdlcAddress.server(logical_device=1, physical_address=18)
    poll = HdlcClientLink(client_sap=1, server_address=poll_server, settings=LinkSettings())
    poll_events: asyncio.Queue[LinkEvent] = asyncio.Queue()
    harness.line.attach(poll, poll_events.put_nowait, client_sap=1, server_address=poll_server, background=True)
    assert isinstance(await relay.connect(), LinkUp)
    poll.connect()
    harness.line.wake()
    assert isinstance(await asyncio.wait_for(poll_events.get(), 5), LinkUp)
    # both want the medium at once, five times: the relay's exchange goes first every time
    harness.devices[0].line_log.clear()
    for n in range(5):
        poll.send_apdu(bytes([0xC0, n]))
        relay.link.send_apdu(bytes([0xC0, n]))
        harness.line.wake()
        answers = await asyncio.wait_for(asyncio.gather(relay.next_event(), poll_events.get()), 5)
        assert all(isinstance(e, ApduReceived) for e in answers)
    assert harness.devices[0].line_log == [b"M0", b"M1"] * 5


UNDEFINED_FRAMES = [  # control fields DLMS does not define, from address 1/40 to client 16
    bytes.fromhex("7ea00821025109d35c7e"),  # REJ (0x09), as seen in the attack
    *(encode_frame(HdlcFrame(destination=HdlcAddress.client(16),
                             source=HdlcAddress.server(logical_device=1, physical_address=40), control=control))
      for control in (0x0D, 0x2F, 0x1D)),  # SREJ, SABM, 0x1D
]


async def test_undefined_frames_are_dropped_counted_and_the_rest_of_the_read_goes_on(harness: Harness) -> None:
    pushes: list[bytes | None] = []
    harness.line.on_unsolicited(lambda frame: pushes.append(push_apdu(frame)))
    notification = b"\x0f\x00\x00\x00\x01\x00\x09\x01\x2a"
    push = encode_frame(HdlcFrame(destination=HdlcAddress.client(0x66),
                                  source=HdlcAddress.server(logical_device=1, physical_address=40),
                                  control=0x13, info=b"\xe6\xe7\x00" + notification))
    client = Client(harness.line, physical_address=17)
    assert isinstance(await client.connect(), LinkUp)
    os.write(harness.pty.master_fd, b"".join(UNDEFINED_FRAMES) + push)  # one read: garbage, then a push
    assert await client.request(b"\xc0\x01") == b"M0:\xc0\x01"  # the line still grants the medium
    assert pushes == [notification]
    assert harness.line.counters.frames_undefined == len(UNDEFINED_FRAMES)
    assert harness.line.counters.frames_failed == 0


async def test_a_prioritized_link_is_served_before_the_round_robin_turn_of_the_others(harness: Harness) -> None:
    clients = [Client(harness.line, physical_address=17 + i) for i in range(4)]
    for client in clients:
        assert isinstance(await client.connect(), LinkUp)
    harness.devices[0].line_log.clear()
    for index in (0, 1, 2):  # three requests waiting for the medium, in this order...
        clients[index].link.send_apdu(bytes([0xC0, index]))
    clients[3].link.send_apdu(b"\xc3\x01")
    harness.line.prioritize(clients[3].link)  # ...and a disconnect command that goes first
    harness.line.wake()
    for client in clients:
        event = await client.next_event()
        assert isinstance(event, ApduReceived)
    served = harness.devices[0].line_log[:4]
    assert served[0] == b"M3"  # the prioritized one, though it asked last
    assert sorted(served[1:]) == [b"M0", b"M1", b"M2"]


async def test_the_serial_medium_is_congested_once_as_many_links_wait_as_configured(harness: Harness) -> None:
    from dataclasses import replace  # noqa: PLC0415

    from gateway.link.medium import SerialMedium  # noqa: PLC0415

    harness.line.config = replace(harness.line.config, max_waiting=2)
    medium = SerialMedium(harness.line)
    clients = [Client(harness.line, physical_address=17 + i) for i in range(3)]
    assert not medium.congested()
    clients[0].link.connect()
    clients[1].link.connect()  # two links want the line (no wake yet: nothing has been granted)
    assert medium.congested()
    harness.line.wake()
    for client in clients[:2]:
        assert isinstance(await client.next_event(), LinkUp)
    assert not medium.congested()  # both served: the queue drained


async def test_many_links_of_which_few_wait_do_not_congest_the_line_and_links_are_counted_per_meter(
        harness: Harness) -> None:
    clients = [Client(harness.line, physical_address=17 + i % 20, client_sap=16 + i // 20) for i in range(60)]
    assert not harness.line.congested(max_waiting=1024, max_wait_s=10.0)  # none waits
    assert harness.line.congested(max_waiting=60, max_wait_s=10.0) is False  # 60 attached, none waits
    clients[0].link.connect()
    clients[1].link.connect()
    assert harness.line.congested(max_waiting=2, max_wait_s=10.0)  # two wait: the count is taken
    assert not harness.line.congested(max_waiting=3, max_wait_s=10.0)
    # three links to meter 17 (client SAPs 16, 17, 18): the meter keeps a data link while any is on the line
    to_17 = [client for client in clients if client.server.lower == 17]
    assert len(to_17) == 3 and harness.line.has_link_to(17)
    for client in to_17:
        assert harness.line.has_link_to(17)
        harness.line.detach(client.link)
    assert not harness.line.has_link_to(17) and harness.line.has_link_to(18)


async def test_the_serial_medium_is_congested_once_the_queue_would_wait_longer_than_configured(
        harness: Harness) -> None:
    from dataclasses import replace  # noqa: PLC0415

    from gateway.link.medium import SerialMedium  # noqa: PLC0415

    medium = SerialMedium(harness.line)
    first, second = Client(harness.line, physical_address=17), Client(harness.line, physical_address=18)
    assert harness.line.exchange_s() == 0.0
    first.link.connect()
    harness.line.wake()
    assert isinstance(await first.next_event(), LinkUp)
    taken = harness.line.exchange_s()
    assert taken > 0  # the line has learnt how long an exchange holds it
    second.link.connect()  # one link waits: its wait is about one exchange
    harness.line.config = replace(harness.line.config, max_wait_s=taken * 10)
    assert not medium.congested()
    harness.line.config = replace(harness.line.config, max_wait_s=taken / 10)  # a slow line: refuse what waits
    assert medium.congested()
    harness.line.wake()
    assert isinstance(await second.next_event(), LinkUp)
    assert not medium.congested()  # nothing waits any more
