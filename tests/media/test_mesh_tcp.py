"""Meters that listen only on TCP, on the same network as UDP meters: one wrapper connection per association."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator

import pytest

from gateway.media.channel import (
    ApduReceived,
    Association,
    ChannelDown,
    ChannelEvent,
    DownReason,
    IpMeter,
    IpTransport,
)
from gateway.media.mesh import MeshBinding, MeshEndpoint
from gateway.media.mesh_core import MeshSettings
from gateway.sim.meter import PUBLIC_CLIENT, SimMeterSettings, build_meter
from gateway.sim.tcp_meter import SimTcpMeter
from tests.media.reads import EVENT_WAIT_S, MeshReader, get_request, public_aarq, sim_udp_meter, utc_now

LOOPBACK = ipaddress.IPv6Address("::1")


def tcp_association(port: int) -> Association:
    return Association(client_sap=PUBLIC_CLIENT, logical_device=1,
                       meter=IpMeter(LOOPBACK, port, transport=IpTransport.TCP))


@pytest.fixture
async def endpoint() -> AsyncIterator[MeshEndpoint]:
    mesh = MeshEndpoint(name="mesh-tcp", settings=MeshSettings(max_in_flight=1, response_timeout_s=0.5))
    await mesh.start(MeshBinding(host="::1", port=0))
    yield mesh
    mesh.stop()


@pytest.fixture
async def tcp_meter() -> AsyncIterator[tuple[SimTcpMeter, SimMeterSettings]]:
    settings = SimMeterSettings.demo(serial_number=42)
    meter = SimTcpMeter(devices={1: build_meter(settings, clock=utc_now)})
    await meter.start("::1", 0)
    yield meter, settings
    await meter.stop()


async def wait_closed(meter: SimTcpMeter) -> None:
    async with asyncio.timeout(EVENT_WAIT_S):
        while meter.connections:
            meter.closed.clear()
            await meter.closed.wait()


async def test_reads_over_a_tcp_wrapper_connection(endpoint: MeshEndpoint,
                                                   tcp_meter: tuple[SimTcpMeter, SimMeterSettings]) -> None:
    meter, settings = tcp_meter
    reader = MeshReader(endpoint, tcp_association(meter.address[1]))
    await reader.associate()  # queued before the connection is up, sent once it is
    assert await reader.read_checked(settings, count=5) == 5
    assert meter.connections == 1
    reader.channel.close()
    await wait_closed(meter)  # closing the channel closes its connection: the meter releases the association


async def test_a_refused_connection_ends_the_channel(endpoint: MeshEndpoint) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
        probe.bind(("::1", 0))
        closed_port = probe.getsockname()[1]  # nothing listens here once the probe is closed
    events: asyncio.Queue[ChannelEvent] = asyncio.Queue()
    channel = endpoint.open(tcp_association(closed_port), events.put_nowait)
    channel.send_apdu(get_request(1, 2))
    async with asyncio.timeout(EVENT_WAIT_S):
        assert await events.get() == ChannelDown(DownReason.REFUSED)
    assert endpoint.network.counters.datagrams_sent == 0


async def test_a_silent_tcp_meter_times_out_once_and_its_connection_closes(
    endpoint: MeshEndpoint, tcp_meter: tuple[SimTcpMeter, SimMeterSettings]
) -> None:
    meter, _ = tcp_meter
    meter.silent = True
    events: asyncio.Queue[ChannelEvent] = asyncio.Queue()
    endpoint.open(tcp_association(meter.address[1]), events.put_nowait).send_apdu(get_request(1, 2))
    async with asyncio.timeout(EVENT_WAIT_S):
        assert await events.get() == ChannelDown(DownReason.TIMEOUT)
    await wait_closed(meter)
    assert meter.requests == 1  # never resent


async def test_tcp_and_udp_meters_share_the_networks_in_flight_limit(
    endpoint: MeshEndpoint, tcp_meter: tuple[SimTcpMeter, SimMeterSettings]
) -> None:
    meter, _ = tcp_meter
    udp_meter, _ = sim_udp_meter(7)
    await udp_meter.start("::1", 0)
    try:
        order: list[tuple[str, ChannelEvent]] = []
        done = asyncio.Event()

        def on_udp(event: ChannelEvent) -> None:
            order.append(("udp", event))
            done.set()

        tcp = MeshReader(endpoint, tcp_association(meter.address[1]))
        await tcp.associate()  # the connection is up: a request now takes the slot at once
        meter.silent = True
        tcp.channel.send_apdu(get_request(1, 2))
        udp = Association(client_sap=PUBLIC_CLIENT, logical_device=1, meter=IpMeter(LOOPBACK, udp_meter.address[1]))
        endpoint.open(udp, on_udp).send_apdu(public_aarq())
        async with asyncio.timeout(EVENT_WAIT_S):
            order.append(("tcp", await tcp.events.get()))
        async with asyncio.timeout(EVENT_WAIT_S):
            await done.wait()
        # The one slot was the TCP exchange's until it timed out: only then did the UDP request go.
        assert [side for side, _ in order] == ["tcp", "udp"]
        assert order[0][1] == ChannelDown(DownReason.TIMEOUT) and isinstance(order[1][1], ApduReceived)
    finally:
        udp_meter.stop()

