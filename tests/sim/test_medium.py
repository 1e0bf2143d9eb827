"""The simulated PLC/RF medium: paced, half-duplex, lossy with a seed, and counting its own airtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from gateway.capture.tap import CaptureFilter, FrameTap
from gateway.codec.hdlc import ApduReceived, HdlcAddress, HdlcClientLink, LinkDown, LinkSettings, LinkUp
from gateway.config import LinkConfig
from gateway.daemon import serial_opener
from gateway.link.line import MeterLine
from gateway.sim.bus import SimMeter, SimulatedBus
from gateway.sim.medium import BITS_PER_OCTET, MediumSettings, SimulatedMedium
from gateway.sim.pty import PtyPair, open_pty
from tests.link.test_line import EchoDevice


@dataclass
class Rig:
    pty: PtyPair
    medium: SimulatedMedium
    line: MeterLine
    sent: list[bytes]


async def rig(settings: MediumSettings, *, response_timeout_s: float = 0.5, concurrent: int = 1) -> Rig:
    pty = open_pty()
    bus = SimulatedBus(meters=[SimMeter(physical_address=17 + i, device=EchoDevice(name=f"M{i}".encode()))
                               for i in range(2)])
    medium = SimulatedMedium(bus, settings)
    medium.attach(pty.master_fd)
    config = LinkConfig(name="plc", device=pty.slave_path, baudrate=115200, response_timeout_s=response_timeout_s,
                        max_retries=5, concurrent_exchanges=concurrent)
    line = MeterLine(config=config, opener=serial_opener(config))
    await line.open()
    return Rig(pty=pty, medium=medium, line=line, sent=[])


@pytest.fixture
async def fast() -> AsyncIterator[Rig]:
    made = await rig(MediumSettings(bit_rate=1_000_000))
    yield made
    made.line.close()
    made.medium.detach()
    made.pty.close()


async def exchange(line: MeterLine, link: HdlcClientLink, apdus: list[bytes], *, physical_address: int) -> list[bytes]:
    events: asyncio.Queue[object] = asyncio.Queue()
    line.attach(link, events.put_nowait, client_sap=16,
                server_address=HdlcAddress.server(logical_device=1, physical_address=physical_address))
    link.connect()
    line.wake()
    assert isinstance(await asyncio.wait_for(events.get(), 20), LinkUp)
    answers = []
    for apdu in apdus:
        link.send_apdu(apdu)
        line.wake()
        event = await asyncio.wait_for(events.get(), 20)
        if isinstance(event, LinkDown):
            break
        assert isinstance(event, ApduReceived)
        answers.append(event.apdu)
    line.detach(link)
    return answers


def client(physical_address: int, *, window: int = 1, response_timeout_s: float = 0.5) -> HdlcClientLink:
    from gateway.codec.hdlc import HdlcParameters  # noqa: PLC0415

    return HdlcClientLink(client_sap=16, server_address=HdlcAddress.server(logical_device=1,
                                                                          physical_address=physical_address),
                          settings=LinkSettings(parameters=HdlcParameters(window_tx=window, window_rx=window),
                                                response_timeout_s=response_timeout_s, max_retries=5))


async def test_the_medium_counts_the_airtime_of_every_frame(fast: Rig) -> None:
    tap = FrameTap()
    fast.line.tap = tap
    capture = tap.start(CaptureFilter())  # every frame both ways, as the gateway saw them
    answers = await exchange(fast.line, client(17), [b"\xc0\x01", b"\xc0\x02" * 200], physical_address=17)
    assert answers == [b"M0:\xc0\x01", b"M0:" + b"\xc0\x02" * 200]
    frames = capture.take()
    figures = fast.medium.figures
    assert figures.frames == len(frames) >= 10 and figures.lost == figures.corrupted == 0
    octets = sum(len(unit.data) for unit in frames)
    assert figures.airtime_s == pytest.approx(octets * BITS_PER_OCTET / fast.medium.settings.bit_rate)
    assert 0 < figures.utilisation() <= 1


async def test_lost_and_corrupted_frames_cost_retransmissions_never_a_wrong_answer() -> None:
    lossy = await rig(MediumSettings(bit_rate=1_000_000, frame_loss=0.1, corruption=0.1, seed=3),
                      response_timeout_s=0.05)
    try:
        apdus = [bytes([0xC0, n]) * (1 + 40 * (n % 3)) for n in range(20)]
        answers = await exchange(lossy.line, client(18, window=3, response_timeout_s=0.05), apdus,
                                 physical_address=18)
        assert answers == [b"M1:" + apdu for apdu in apdus[:len(answers)]]  # right, in order, or the link gave up
        assert lossy.medium.figures.lost > 0 and lossy.medium.figures.corrupted > 0
        assert lossy.line.counters.timeouts > 0  # HDLC retransmitted
    finally:
        lossy.line.close()
        lossy.medium.detach()
        lossy.pty.close()


async def test_concurrent_exchanges_on_a_lossy_medium_never_mix_or_corrupt_answers() -> None:
    lossy = await rig(MediumSettings(bit_rate=1_000_000, frame_loss=0.1, corruption=0.1, seed=5),
                      response_timeout_s=0.05, concurrent=2)
    most = 0

    def observe(frame: bytes, to_meters: bool) -> None:  # at each frame carried: exchanges the line holds
        nonlocal most
        most = max(most, lossy.line.outstanding())

    lossy.medium.observer = observe
    try:
        apdus = [bytes([0xC0, n]) * (1 + 40 * (n % 3)) for n in range(20)]
        first, second = await asyncio.gather(
            exchange(lossy.line, client(17, window=3, response_timeout_s=0.05), apdus, physical_address=17),
            exchange(lossy.line, client(18, window=3, response_timeout_s=0.05), apdus, physical_address=18))
        assert first == [b"M0:" + apdu for apdu in apdus[:len(first)]]  # each meter's own, in order, or gave up
        assert second == [b"M1:" + apdu for apdu in apdus[:len(second)]]
        assert lossy.medium.figures.lost > 0 and lossy.medium.figures.corrupted > 0
        assert lossy.line.counters.timeouts > 0
        assert most == 2  # the two meters' exchanges were on the medium at once
    finally:
        lossy.line.close()
        lossy.medium.detach()
        lossy.pty.close()


async def test_the_same_seed_loses_and_corrupts_the_same_frames() -> None:
    frames = [bytes([0x7E, n, 0x7E]) * 4 for n in range(60)]

    async def carried(seed: int) -> tuple[list[bytes], int, int]:
        medium = SimulatedMedium(SimulatedBus(meters=[]), MediumSettings(bit_rate=10_000_000, frame_loss=0.2,
                                                                         corruption=0.2, seed=seed))
        arrived: list[bytes] = []
        all_in = asyncio.Event()

        def deliver(frame: bytes) -> None:
            arrived.append(frame)
            if len(arrived) == len(frames) - medium.figures.lost:
                all_in.set()

        for frame in frames:
            medium._carry(frame, deliver)  # the shared timeline, as for frames read from the pty
        await asyncio.wait_for(all_in.wait(), 10)
        return arrived, medium.figures.lost, medium.figures.corrupted

    first, second, other = await carried(9), await carried(9), await carried(10)
    assert first == second  # replayable: the same frames lost, the same octets changed
    assert 0 < first[1] < len(frames) and first[2] > 0
    assert other != first
    profile = MediumSettings.profile("g3", frame_loss=0.01)
    assert (profile.bit_rate, profile.latency_s, profile.frame_loss) == (20_000, 0.1, 0.01)


async def test_a_time_scale_keeps_the_nominal_airtime_and_the_medium_clock_counts_it_in_full() -> None:
    scaled = await rig(MediumSettings(bit_rate=2_400, latency_s=0.05, turnaround_s=0.01, time_scale=200.0),
                       response_timeout_s=5.0)
    seen: list[tuple[int, float]] = []
    scaled.medium.on_frame = lambda octets, airtime: seen.append((octets, airtime))
    try:
        wall, medium = asyncio.get_running_loop().time(), scaled.medium.now()
        answers = await exchange(scaled.line, client(17, response_timeout_s=5.0), [b"\xc0\x01" * 50],
                                 physical_address=17)
        assert answers == [b"M0:" + b"\xc0\x01" * 50]
        figures = scaled.medium.figures
        assert len(seen) == figures.frames >= 4  # SNRM, UA, the request, its answer
        assert figures.airtime_s == pytest.approx(sum(octets for octets, _ in seen) * BITS_PER_OCTET / 2_400)
        # every frame's airtime and latency passed on the medium's clock, whatever the wall clock did
        medium_elapsed = scaled.medium.now() - medium
        assert medium_elapsed >= figures.airtime_s + 0.05 * figures.frames
        assert medium_elapsed > asyncio.get_running_loop().time() - wall  # the scale skipped medium time
    finally:
        scaled.line.close()
        scaled.medium.detach()
        scaled.pty.close()


def test_a_time_scale_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="time scale"):
        SimulatedMedium(SimulatedBus(meters=[]), MediumSettings(bit_rate=2_400, time_scale=0.5))


async def test_airtime_carried_counts_only_what_has_been_on_the_medium_by_then() -> None:
    now = [100.0]
    medium = SimulatedMedium(SimulatedBus(meters=[]), MediumSettings(bit_rate=1_000), clock=lambda: now[0])
    for _ in range(3):  # three 10-octet frames queued at once: 0.1 s of airtime each, back to back
        medium._carry(b"\x7e" + bytes(8) + b"\x7e", lambda frame: None)
    assert medium.figures.airtime_s == pytest.approx(0.3)
    assert medium.airtime_carried_s(100.0) == pytest.approx(0.0)
    assert medium.airtime_carried_s(100.15) == pytest.approx(0.15)
    assert medium.airtime_carried_s(101.0) == pytest.approx(0.3)
