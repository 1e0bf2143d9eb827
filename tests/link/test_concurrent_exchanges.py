"""Concurrent exchanges behind a modem (issue 13): with ``[[links]] concurrent_exchanges`` = N, up to N links to
different meters hold polls at once; on a wire (N = 1) one exchange at a time. Read off the frames the line writes,
answered by hand (pure HDLC server links), so "outstanding at once" is exact, not a matter of timing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.codec.hdlc import (
    ApduFromClient,
    ApduReceived,
    FrameKind,
    HdlcAddress,
    HdlcClientLink,
    HdlcFrame,
    HdlcFrameDecoder,
    HdlcServerLink,
    LinkEvent,
    LinkSettings,
    LinkUp,
    ServerSettings,
)
from gateway.config import LinkConfig
from gateway.link.line import MeterLine


class Wire(asyncio.Transport):
    """The modem's serial side: keeps what the line writes, answers nothing by itself."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        pass


class Rig:
    """A line on a fake modem, meters as pure HDLC server links, and the polls still unanswered."""

    def __init__(self, *, concurrent: int, meters: tuple[int, ...] = (17, 18, 19, 20)) -> None:
        self.wire = Wire()
        config = LinkConfig(name="plc0", device="/dev/null", response_timeout_s=30.0, concurrent_exchanges=concurrent)
        self.line = MeterLine(config=config, opener=self._open)
        self.meters = {address: HdlcServerLink(server_address=HdlcAddress.server(logical_device=1,
                                                                                 physical_address=address),
                                               settings=ServerSettings()) for address in meters}
        self.outstanding: list[HdlcFrame] = []  # polls sent, oldest first, not answered yet
        self.granted: list[int] = []  # the physical address of every poll, in the order the line sent them
        self.frames: list[HdlcFrame] = []  # every frame the line wrote
        self._decoder = HdlcFrameDecoder()

    async def _open(self, factory: Callable[[], asyncio.Protocol]) -> asyncio.Transport:
        factory().connection_made(self.wire)
        return self.wire

    def link(self, address: int, *, client_sap: int = 16, background: bool = False,
             group: str = "") -> tuple[HdlcClientLink, list[LinkEvent]]:
        server = HdlcAddress.server(logical_device=1, physical_address=address)
        link = HdlcClientLink(client_sap=client_sap, server_address=server, settings=LinkSettings())
        events: list[LinkEvent] = []
        self.line.attach(link, events.append, client_sap=client_sap, server_address=server, background=background,
                         group=group)
        return link, events

    def read_wire(self) -> None:
        """Take what the line wrote since the last look: each frame with the P bit is an outstanding poll."""
        for frame in self._decoder.feed(bytes(self.wire.written), now=0.0):
            self.frames.append(frame)
            if frame.poll_final and frame.defined_kind is not FrameKind.UI:
                self.outstanding.append(frame)
                self.granted.append(frame.destination.lower or 0)
        self.wire.written.clear()

    def polled_meters(self) -> list[int]:
        self.read_wire()
        return [frame.destination.lower or 0 for frame in self.outstanding]

    def answer(self, address: int | None = None) -> None:
        """The meter polled first (or the one named) answers its poll; its answer reaches the line."""
        self.read_wire()
        frame = next(f for f in self.outstanding if address is None or f.destination.lower == address)
        self.outstanding.remove(frame)
        meter = self.meters[frame.destination.lower or 0]
        for event in meter.receive(frame, now=0.0):
            if isinstance(event, ApduFromClient):
                meter.send_apdu(client_sap=event.client_sap, apdu=b"ok:" + event.apdu)
        self.line.data_received(b"".join(meter.respond(now=0.0)))
        self.read_wire()


def kinds(events: list[LinkEvent]) -> list[type]:
    return [type(event) for event in events]


async def test_a_modem_line_keeps_polls_to_different_meters_outstanding_at_once() -> None:
    rig = Rig(concurrent=2)
    await rig.line.open()
    (a, a_events), (b, b_events), (c, _) = rig.link(17), rig.link(18), rig.link(19)
    for link in (a, b, c):
        link.connect()
    rig.line.wake()
    assert rig.polled_meters() == [17, 18]  # two SNRMs on the medium before either UA; the third waits
    rig.answer(17)
    assert rig.polled_meters() == [18, 19]  # a slot freed: the next in turn takes it at once
    rig.answer(18)
    rig.answer(19)
    a.send_apdu(b"\xc0\x01")
    b.send_apdu(b"\xc0\x02")
    rig.line.wake()
    assert rig.polled_meters() == [17, 18]  # two requests outstanding at once
    rig.answer(18)
    rig.answer(17)
    assert a_events == [LinkUp(a.parameters), ApduReceived(b"ok:\xc0\x01")]  # type: ignore[arg-type]
    assert b_events == [LinkUp(b.parameters), ApduReceived(b"ok:\xc0\x02")]  # type: ignore[arg-type]
    rig.line.close()


async def test_a_wire_line_carries_one_exchange_at_a_time() -> None:
    rig = Rig(concurrent=1)
    await rig.line.open()
    links = [rig.link(address)[0] for address in (17, 18, 19)]
    for link in links:
        link.connect()
    rig.line.wake()
    for address in (17, 18, 19):
        assert rig.polled_meters() == [address]  # never two polls on the wire
        rig.answer()
    assert rig.polled_meters() == []
    rig.line.close()


async def test_two_data_links_to_one_meter_never_hold_polls_at_once() -> None:
    rig = Rig(concurrent=4)
    await rig.line.open()
    relay, _ = rig.link(17, client_sap=16)
    own, _ = rig.link(17, client_sap=1, background=True)  # e.g. the legacy poller's link to the same meter
    other, _ = rig.link(18)
    for link in (relay, own, other):
        link.connect()
    rig.line.wake()
    assert rig.polled_meters() == [17, 18]  # the meter's station answers one poll at a time
    rig.answer(17)
    assert sorted(rig.polled_meters()) == [17, 18]  # now the second link to meter 17
    assert rig.outstanding[-1].source.upper == 1
    rig.line.close()


async def test_a_short_get_is_not_starved_by_long_reads_holding_the_slots() -> None:
    rig = Rig(concurrent=2)
    await rig.line.open()
    long_reads = [rig.link(address)[0] for address in (17, 18, 19)]
    short, short_events = rig.link(20)
    for link in (*long_reads, short):
        link.connect()
    rig.line.wake()
    while rig.polled_meters():
        rig.answer()
    for link in long_reads:  # three load-profile reads: a GET-next after every block, forty of them queued
        for block in range(40):
            link.send_apdu(bytes([0xC0, block]))
    rig.line.wake()
    for _ in range(10):
        rig.answer()
    rig.granted.clear()
    short.send_apdu(b"\xc0\x99")  # the HES's short GET arrives while the reads hold both slots
    rig.line.wake()
    while not short_events[1:]:
        rig.answer()
    # round-robin: the short GET gets a slot before any long read has had two more turns
    assert 20 in rig.granted[:len(long_reads) + 1], rig.granted
    assert short_events[1:] == [ApduReceived(b"ok:\xc0\x99")]
    rig.line.close()


async def test_a_prioritized_link_takes_the_next_free_slot() -> None:
    rig = Rig(concurrent=2)
    await rig.line.open()
    links = [rig.link(address)[0] for address in (17, 18, 19, 20)]
    for link in links:
        link.connect()
    rig.line.wake()
    while rig.polled_meters():
        rig.answer()
    for link in links[:3]:
        link.send_apdu(b"\xc0\x01")
    links[3].send_apdu(b"\xc3\x01")  # a disconnect ACTION, asked last
    rig.line.prioritize(links[3])
    rig.line.wake()
    assert rig.polled_meters() == [20, 17]  # it goes first; the round-robin fills the other slot
    rig.line.close()


async def test_a_broadcast_waits_until_the_exchanges_holding_a_modem_line_end() -> None:
    rig = Rig(concurrent=2)
    await rig.line.open()
    for address in (17, 18):
        rig.link(address)[0].connect()
    rig.line.wake()
    assert rig.polled_meters() == [17, 18]
    left: list[float | None] = []
    assert rig.line.broadcast(client_sap=16, apdu=b"\xc3\x01", done=left.append)
    rig.answer(17)
    rig.read_wire()
    assert [frame.defined_kind for frame in rig.frames] == [FrameKind.SNRM, FrameKind.SNRM]  # one poll still out
    rig.answer(18)
    assert [frame.defined_kind for frame in rig.frames] == [FrameKind.SNRM, FrameKind.SNRM, FrameKind.UI]
    rig.line.close()


async def test_head_ends_take_turns_before_their_associations_do() -> None:
    """A HES with three associations and a HES with one: the lone one gets every other turn, not one in four."""
    rig = Rig(concurrent=1, meters=(17, 18, 19, 20))
    await rig.line.open()
    busy = [rig.link(address, group="192.0.2.1")[0] for address in (17, 18, 19)]
    lone, _ = rig.link(20, group="192.0.2.2")
    for link in (*busy, lone):
        link.connect()
    rig.line.wake()
    for _ in range(4):
        rig.answer()
    rig.granted.clear()
    for link in busy:
        for n in range(2):
            link.send_apdu(bytes([0xC0, n]))
    for n in range(3):
        lone.send_apdu(bytes([0xC0, n]))
    rig.line.wake()
    for _ in range(9):
        rig.answer()
    alternating = [address == 20 for address in rig.granted[:6]]
    assert alternating in ([True, False] * 3, [False, True] * 3)  # the head-ends alternate while both have work
    assert rig.granted.count(20) == 3  # one turn in two, not one in four
    assert [address for address in rig.granted if address != 20] == [17, 18, 19, 17, 18, 19]  # fair among its own


async def test_links_of_one_head_end_still_take_turns_among_themselves_and_leaving_keeps_the_order() -> None:
    rig = Rig(concurrent=1, meters=(17, 18, 19))
    await rig.line.open()
    links = [rig.link(address, group="192.0.2.1")[0] for address in (17, 18, 19)]
    for link in links:
        link.connect()
    rig.line.wake()
    for _ in range(3):
        rig.answer()
    rig.granted.clear()
    for link in links:
        link.send_apdu(b"\xc0\x01")
    rig.line.wake()  # 17 polled
    rig.line.detach(links[1])  # 18 leaves (its HES went away) before its turn
    rig.answer()
    rig.answer()
    assert rig.granted == [17, 19]
