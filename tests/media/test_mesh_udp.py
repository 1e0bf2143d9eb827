"""The mesh endpoint over real UDP sockets on ::1: simulated meters behind the mesh emulator."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from gateway.codec import xdlms
from gateway.codec.wrapper import WrapperPdu, encode
from gateway.media.channel import (
    ApduReceived,
    Association,
    ChannelDown,
    ChannelError,
    ChannelEvent,
    DownReason,
    IpMeter,
    UnsolicitedPush,
)
from gateway.media.mesh import MeshBinding, MeshEndpoint
from gateway.media.mesh_core import MeshSettings
from gateway.sim.mesh_emulator import MeshEmulator, RouteAddresses
from gateway.sim.mesh_fleet import start_mesh_fleet
from gateway.sim.mesh_model import MeshConditions
from gateway.sim.meter import MANAGEMENT_CLIENT, PUBLIC_CLIENT, SimMeterSettings
from gateway.sim.udp_meter import SimUdpMeter
from tests.media.reads import EVENT_WAIT_S, MeshReader, expected_value, get_request, public_aarq, sim_udp_meter

LOOPBACK = ipaddress.IPv6Address("::1")
DATA_NOTIFICATION = bytes.fromhex("0F00000001" + "00" + "0906" + "000102030405")
# A few milliseconds each way, far below the response timeout: every timeout is a lost datagram.
LOSSY = MeshConditions(delay_s=0.004, jitter_s=0.003, loss=0.06)


@dataclass
class Mesh:
    endpoint: MeshEndpoint
    emulator: MeshEmulator
    meters: list[tuple[SimUdpMeter, SimMeterSettings, RouteAddresses]]

    def association(self, index: int, *, client_sap: int = PUBLIC_CLIENT) -> Association:
        _, port = self.meters[index][2].front
        return Association(client_sap=client_sap, logical_device=1, meter=IpMeter(LOOPBACK, port))


async def build_mesh(count: int, conditions: MeshConditions, *, seed: int, settings: MeshSettings) -> Mesh:
    endpoint = MeshEndpoint(name="mesh-test", settings=settings)
    await endpoint.start(MeshBinding(host="::1", port=0))
    fleet = await start_mesh_fleet(count, conditions=conditions, seed=seed, gateway=endpoint.local_address)
    return Mesh(endpoint, fleet.emulator, list(zip(fleet.meters, fleet.settings, fleet.routes, strict=True)))


@pytest.fixture
async def lossy_mesh() -> AsyncIterator[Mesh]:
    mesh = await build_mesh(4, LOSSY, seed=10, settings=MeshSettings(max_in_flight=2, response_timeout_s=0.4))
    yield mesh
    close_mesh(mesh)


def close_mesh(mesh: Mesh) -> None:
    mesh.emulator.close()
    mesh.endpoint.stop()
    for meter, _, _ in mesh.meters:
        meter.stop()


async def test_lost_datagrams_are_timeouts_never_wrong_values_nor_retransmissions(lossy_mesh: Mesh) -> None:
    readers = [MeshReader(lossy_mesh.endpoint, lossy_mesh.association(i)) for i in range(len(lossy_mesh.meters))]

    async def session(reader: MeshReader, settings: SimMeterSettings) -> int:
        await reader.associate()
        return await reader.read_checked(settings, count=20)

    answered = await asyncio.gather(*(session(r, m[1]) for r, m in zip(readers, lossy_mesh.meters, strict=True)))
    figures = lossy_mesh.emulator.figures
    counters = lossy_mesh.endpoint.network.counters
    timeouts = sum(reader.timeouts for reader in readers)
    assert figures.dropped > 0 and sum(answered) > 0
    # Each lost datagram is one timeout; an answer only later than the timeout (a stalled machine) is one
    # more, and is dropped as unexpected, never taken for another request's answer.
    assert timeouts == counters.timeouts == figures.dropped + counters.unexpected
    assert counters.datagrams_sent == sum(reader.sent for reader in readers)  # one datagram per APDU, never resent
    emulator = lossy_mesh.emulator
    meter_answers = sum(meter.counters.answers for meter, _, _ in lossy_mesh.meters)
    assert sum(meter.counters.requests for meter, _, _ in lossy_mesh.meters) == emulator.delivered_to_meters
    assert counters.datagrams_received == emulator.delivered_to_gateway
    assert counters.datagrams_sent + meter_answers == figures.forwarded + figures.dropped


async def test_pushes_reach_their_channel_or_push_intake() -> None:
    mesh = await build_mesh(2, MeshConditions(delay_s=0.002, jitter_s=0.001, loss=0.0), seed=1,
                            settings=MeshSettings())
    try:
        unsolicited: asyncio.Queue[UnsolicitedPush] = asyncio.Queue()
        mesh.endpoint.on_unsolicited(unsolicited.put_nowait)
        reader = MeshReader(mesh.endpoint, mesh.association(0))
        await reader.associate()
        first, _, first_route = mesh.meters[0]
        second, _, second_route = mesh.meters[1]
        # On the open channel (meter 0 -> public client) a push is a Push event, not an answer.
        first.push(to=first_route.back, client_sap=PUBLIC_CLIENT, apdu=DATA_NOTIFICATION)
        # From meter 1, which has no channel: push intake gets it, with the meter's address and wPorts.
        second.push(to=second_route.back, client_sap=MANAGEMENT_CLIENT, apdu=DATA_NOTIFICATION)
        async with asyncio.timeout(5):
            push = await unsolicited.get()
        assert push == UnsolicitedPush(network="mesh-test", meter=mesh.association(1).meter, logical_device=1,
                                       client_sap=MANAGEMENT_CLIENT, apdu=DATA_NOTIFICATION)
        assert await reader.read_checked(mesh.meters[0][1], count=2) == 2  # answers come after the push
        assert reader.pushes == [DATA_NOTIFICATION]
        # A burst: jitter makes datagrams overtake each other; every push still arrives, once.
        burst = [DATA_NOTIFICATION[:-1] + bytes([number]) for number in range(20)]
        for apdu in burst:
            first.push(to=first_route.back, client_sap=PUBLIC_CLIENT, apdu=apdu)
        assert sorted((await reader.wait_for_pushes(1 + len(burst)))[1:]) == burst
        assert mesh.emulator.figures.reordered > 0
        assert reader.pushes[1:] != burst
    finally:
        close_mesh(mesh)


async def test_stray_datagrams_are_dropped_and_counted() -> None:
    mesh = await build_mesh(1, MeshConditions(delay_s=0.002, jitter_s=0.001, loss=0.0), seed=3,
                            settings=MeshSettings())
    loop = asyncio.get_running_loop()
    stranger, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("::1", 0))
    try:
        reader = MeshReader(mesh.endpoint, mesh.association(0))
        await reader.associate()
        reader.channel.send_apdu(get_request(3, 2))  # in flight from here on
        forged = encode(WrapperPdu(source=1, destination=PUBLIC_CLIENT, apdu=b"\xc4\x01\xc3\x00\x09\x01\x66"))
        stranger.sendto(forged, mesh.endpoint.local_address)  # right wPorts, wrong source: lands first
        stranger.sendto(b"\x00\x01\x00", mesh.endpoint.local_address)  # not even a header
        async with asyncio.timeout(EVENT_WAIT_S):
            event = await reader.events.get()
        # The channel got the meter's own answer; the forged one was counted and dropped.
        assert isinstance(event, ApduReceived)
        assert xdlms.decode_xdlms(event.apdu) == xdlms.GetResponseNormal(0xC3, expected_value(mesh.meters[0][1], 2))
        counters = mesh.endpoint.network.counters
        assert (counters.unexpected, counters.malformed, counters.answers) == (1, 1, 2)
    finally:
        stranger.close()
        close_mesh(mesh)


async def test_a_stopped_endpoint_is_not_usable_and_its_channels_go_down() -> None:
    endpoint = MeshEndpoint(name="mesh-stop")
    await endpoint.start(MeshBinding(host="::1", port=0))
    events: asyncio.Queue[ChannelEvent] = asyncio.Queue()
    endpoint.open(Association(client_sap=16, logical_device=1, meter=IpMeter(LOOPBACK, 9)), events.put_nowait)
    assert endpoint.usable()
    endpoint.stop()
    async with asyncio.timeout(5):
        down = await events.get()
    assert down == ChannelDown(DownReason.MEDIUM_LOST)
    assert not endpoint.usable()
    with pytest.raises(ChannelError):
        endpoint.open(Association(client_sap=16, logical_device=1, meter=IpMeter(LOOPBACK, 9)), events.put_nowait)


async def test_a_mesh_channel_is_busy_until_closed_and_its_release_is_heard() -> None:
    endpoint = MeshEndpoint(name="mesh-close", settings=MeshSettings(max_apdu=512))
    await endpoint.start(MeshBinding(host="::1", port=0))
    released: list[Association] = []
    endpoint.on_released(released.append)
    association = Association(client_sap=16, logical_device=1, meter=IpMeter(LOOPBACK, 9))
    try:
        channel = endpoint.open(association, lambda event: None, probe=True, background=True)
        assert endpoint.busy(association) and channel.max_apdu == 512
        assert endpoint.idle_timeout_s == float("inf")
        assert channel.close() is True  # no data-link goodbye on a wrapper network
        assert not endpoint.busy(association) and released == [association]
        with pytest.raises(ChannelError):
            channel.send_apdu(b"\xc0\x01")
        channel.abort()  # twice: nothing more happens
        assert released == [association]
    finally:
        endpoint.stop()


async def test_a_stopped_endpoint_started_again_carries_exchanges_and_hears_the_meter() -> None:
    meter, settings = sim_udp_meter(9)
    await meter.start("::1", 0)
    endpoint = MeshEndpoint(name="mesh-restart")
    try:
        await endpoint.start(MeshBinding(host="::1", port=0))
        endpoint.stop()  # a demotion to standby...
        await endpoint.start(MeshBinding(host="::1", port=0))  # ... and a promotion, before the old socket's goodbye
        assert endpoint.usable()  # the old socket's goodbye comes during the exchanges below: it must not matter
        events: asyncio.Queue[ChannelEvent] = asyncio.Queue()
        channel = endpoint.open(Association(client_sap=PUBLIC_CLIENT, logical_device=1,
                                            meter=IpMeter(LOOPBACK, meter.address[1])), events.put_nowait)
        assert channel.last_heard is None
        channel.send_apdu(public_aarq())
        async with asyncio.timeout(EVENT_WAIT_S):
            aare = await events.get()
        assert isinstance(aare, ApduReceived) and aare.apdu[:1] == b"\x61"
        assert channel.last_heard is not None and channel.last_heard <= asyncio.get_running_loop().time()
        channel.send_apdu(get_request(1, 2))
        async with asyncio.timeout(EVENT_WAIT_S):
            answer = await events.get()
        assert isinstance(answer, ApduReceived)
        assert xdlms.decode_xdlms(answer.apdu) == xdlms.GetResponseNormal(0xC1, expected_value(settings, 2))
        assert endpoint.usable()
    finally:
        endpoint.stop()
        meter.stop()
