"""A broadcast on a mesh: one IPv6 multicast datagram for every meter, not one per meter (real sockets).

    ns gw:  veth g0 fd00::1/64   the gateway's mesh socket, [fd00::1]:4059, multicast out of g0
              |
    ns mt:  veth m0 fd00::10+i/64  meter i: its own socket, and one bound to ff03::1 that joined it on m0

The head-end's block (an unconfirmed ACTION under the broadcast key) reaches every meter's IC 18
through the gateway's broadcast relay; the gateway sends one datagram and answers with its own
data-notification.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator

import pytest

from gateway.codec import xdlms
from gateway.codec.axdr import Data
from gateway.codec.wrapper import WRAPPER_PORT
from gateway.core.broadcast import BroadcastRelay
from gateway.cosem.image_transfer import BLOCK_TRANSFER, INITIATE
from gateway.cosem.server import LogicalDevice
from gateway.media.ipsocket import MeshBinding
from gateway.media.mesh import MeshEndpoint
from gateway.sim.meter import image_transfer_of
from gateway.sim.udp_meter import SimUdpMeter, multicast_socket
from tests.firmware_hes import BroadcastSender, block_parameters
from tests.media import netns
from tests.sim.firmware_fleet import BROADCAST_KEYS, firmware_meters
from tests.wan.support import until

METERS = 4
GROUP = "ff03::1"  # realm-local all nodes (RFC 7346)
MANAGEMENT_CLIENT = 1

pytestmark = pytest.mark.skipif(netns.unavailable_reason() is not None, reason=netns.unavailable_reason() or "")


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    spaces = netns.Namespaces(prefix=f"gwm{os.getpid()}")
    try:
        gw, mt = spaces.add("gw"), spaces.add("mt")
        spaces.veth(gw, "g0", mt, "m0")
        spaces.address(gw, "g0", "fd00::1/64")
        for index in range(METERS):
            spaces.address(mt, "m0", f"fd00::{0x10 + index:x}/64")
        yield gw, mt
    finally:
        spaces.delete()


async def test_a_broadcast_reaches_every_meter_of_the_mesh_in_one_multicast_datagram(
    namespaces: tuple[str, str],
) -> None:
    gw, mt = namespaces
    endpoint = MeshEndpoint(name="wisun0", broadcast_group=GROUP)
    with netns.inside(gw):  # the interface index of g0 is looked up in the gateway's namespace
        await endpoint.start(MeshBinding(host="fd00::1", interface="g0"),
                             sock=netns.udp_socket(gw, "fd00::1", WRAPPER_PORT))
    meters: list[SimUdpMeter] = []
    devices: list[LogicalDevice] = []
    try:
        for index, simulated in enumerate(firmware_meters(METERS, loss=0.0)):
            assert isinstance(simulated.device, LogicalDevice)
            devices.append(simulated.device)
            meter = SimUdpMeter(devices={1: simulated.device})
            await meter.start(sock=netns.udp_socket(mt, f"fd00::{0x10 + index:x}", WRAPPER_PORT))
            with netns.inside(mt):
                group = multicast_socket(GROUP, interface="m0")
            await meter.join(group)
            meters.append(meter)
        relay = BroadcastRelay(networks={1: endpoint})
        sender = BroadcastSender(BROADCAST_KEYS)
        block = random.Random(3).randbytes(64)
        answers: asyncio.Queue[bytes] = asyncio.Queue()
        initiate = Data.structure(Data.octet_string(b"MESH-FW"), Data.double_long_unsigned(64 * 3))
        for apdu in (sender.action(INITIATE, initiate), sender.action(BLOCK_TRANSFER, block_parameters(1, block))):
            relay.send(network_ids=[1], client_sap=MANAGEMENT_CLIENT, apdu=apdu, answer=answers.put_nowait)
            async with asyncio.timeout(5):
                notification = xdlms.decode_xdlms(await answers.get())
            assert isinstance(notification, xdlms.DataNotification)
            networks, _airtime_ms = notification.body.items
            assert networks.value == 1

        await until(lambda: sum(meter.counters.broadcasts for meter in meters) == 2 * METERS)  # across namespaces
        assert endpoint.network.counters.broadcasts == 2  # one datagram each, for all the meters
        assert endpoint.network.counters.datagrams_sent == 0  # and no unicast at all
        for meter, device in zip(meters, devices, strict=True):
            assert meter.counters.requests == meter.counters.answers == 0  # nobody answered a broadcast
            broadcasts = device.broadcasts
            assert broadcasts is not None and broadcasts.counters.accepted == 2
            assert broadcasts.counters.dropped == {}
            transfer = image_transfer_of(device)
            assert transfer.missing_blocks == [0, 2]  # block 1 arrived by multicast
    finally:
        endpoint.stop()
        for meter in meters:
            meter.stop()


async def test_a_mesh_without_a_group_refuses_to_broadcast() -> None:
    endpoint = MeshEndpoint(name="wisun0")
    await endpoint.start(MeshBinding(host="::1", port=0))
    try:
        relay = BroadcastRelay(networks={1: endpoint})
        answers: list[bytes] = []
        relay.send(network_ids=[1], client_sap=MANAGEMENT_CLIENT, apdu=bytes.fromhex("DB08"), answer=answers.append)
        assert len(answers) == 1 and xdlms.decode_xdlms(answers[0]).__class__ is xdlms.ExceptionResponse
        assert relay.refusals == 1 and endpoint.network.counters.broadcasts == 0
    finally:
        endpoint.stop()


