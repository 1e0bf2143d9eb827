"""Meters on their own IPv6 addresses in a network namespace, the mesh emulator as the only hop to them.

    ns gw:  veth g0 fd00::1/64  (the gateway's mesh socket, [fd00::1]:4059)
               |
    ns br:  veth b0 fd00::2/64, fd00::100+i/64 (front: one per meter, port 4059)   <- mesh emulator
            veth b1 fd00:0:0:1::1/64 (back)
               |
    ns mt:  veth m0 fd00:0:0:1::10+i/64 (meter i, port 4059)

Nothing forwards between the namespaces but the emulator: the gateway cannot reach a meter's
own address, only its front address. Mesh conditions as in the issue: 150 ms +- 50 ms, 2 % loss;
the seed loses two datagrams of this run (a timeout each, and a reopened channel).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
from collections.abc import Iterator

import pytest

from gateway.codec.wrapper import WRAPPER_PORT
from gateway.media.channel import Association, IpMeter, UnsolicitedPush
from gateway.media.mesh import MeshEndpoint
from gateway.media.mesh_core import MeshSettings
from gateway.sim.mesh_emulator import MeshEmulator
from gateway.sim.mesh_model import MeshConditions
from gateway.sim.meter import PUBLIC_CLIENT
from tests.media import netns
from tests.media.reads import MeshReader, sim_udp_meter

METERS = 3
MESH = MeshConditions(delay_s=0.150, jitter_s=0.050, loss=0.02)
DATA_NOTIFICATION = bytes.fromhex("0F0000000100" + "0904" + "01020304")

pytestmark = pytest.mark.skipif(netns.unavailable_reason() is not None, reason=netns.unavailable_reason() or "")


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str, str]]:
    spaces = netns.Namespaces(prefix=f"gwt{os.getpid()}")
    try:
        gw, br, mt = spaces.add("gw"), spaces.add("br"), spaces.add("mt")
        spaces.veth(gw, "g0", br, "b0")
        spaces.veth(br, "b1", mt, "m0")
        spaces.address(gw, "g0", "fd00::1/64")
        spaces.address(br, "b0", "fd00::2/64")
        spaces.address(br, "b1", "fd00:0:0:1::1/64")
        for index in range(METERS):
            spaces.address(br, "b0", f"fd00::{0x100 + index:x}/64")
            spaces.address(mt, "m0", f"fd00:0:0:1::{0x10 + index:x}/64")
        yield gw, br, mt
    finally:
        spaces.delete()


async def test_reads_and_a_push_through_the_emulated_mesh(namespaces: tuple[str, str, str]) -> None:
    gw, br, mt = namespaces
    endpoint = MeshEndpoint(name="wisun0", settings=MeshSettings(max_in_flight=8, response_timeout_s=1.0))
    await endpoint.start(sock=netns.udp_socket(gw, "fd00::1", WRAPPER_PORT))
    emulator = MeshEmulator(conditions=MESH, seed=6, gateway=("fd00::1", WRAPPER_PORT))
    meters, backs = [], []
    try:
        for index in range(METERS):
            meter, settings = sim_udp_meter(index + 1)
            own = f"fd00:0:0:1::{0x10 + index:x}"
            await meter.start(sock=netns.udp_socket(mt, own, WRAPPER_PORT))
            route = await emulator.add_route(
                meter=(own, WRAPPER_PORT),
                front_sock=netns.udp_socket(br, f"fd00::{0x100 + index:x}", WRAPPER_PORT),
                back_sock=netns.udp_socket(br, "fd00:0:0:1::1", 0),
            )
            meters.append((meter, settings))
            backs.append(route.back)
        # The emulator is the only way in: from the gateway's namespace a meter's own address is unreachable.
        probe = netns.udp_socket(gw, "fd00::1", 0)
        with probe, pytest.raises(OSError) as unreachable:
            probe.sendto(b"x", ("fd00:0:0:1::10", WRAPPER_PORT))
        assert unreachable.value.errno == errno.ENETUNREACH

        unsolicited: asyncio.Queue[UnsolicitedPush] = asyncio.Queue()
        endpoint.on_unsolicited(unsolicited.put_nowait)
        readers = [
            MeshReader(endpoint, Association(client_sap=PUBLIC_CLIENT, logical_device=1,
                                             meter=IpMeter(ipaddress.IPv6Address(f"fd00::{0x100 + i:x}"))))
            for i in range(METERS)
        ]

        async def session(reader: MeshReader, index: int) -> int:
            await reader.associate()
            return await reader.read_checked(meters[index][1], count=6)

        answered = await asyncio.gather(*(session(reader, i) for i, reader in enumerate(readers)))
        meters[2][0].push(to=backs[2], client_sap=1, apdu=DATA_NOTIFICATION)  # to the management client: no channel
        async with asyncio.timeout(10):
            push = await unsolicited.get()
        assert push.meter == IpMeter(ipaddress.IPv6Address("fd00::102")) and push.apdu == DATA_NOTIFICATION

        counters = endpoint.network.counters
        figures = emulator.figures
        assert sum(answered) > 0
        assert sum(r.timeouts for r in readers) == counters.timeouts == figures.dropped + counters.unexpected
        assert counters.datagrams_sent == sum(r.sent for r in readers)  # one datagram per APDU, never resent
        print(f"mesh emulator figures: {figures}")  # the report reads these with -s
    finally:
        emulator.close()
        endpoint.stop()
        for meter, _ in meters:
            meter.stop()
