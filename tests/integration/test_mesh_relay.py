"""Meters on an IPv6 mesh relayed like serial meters: one gateway, both media, real sockets on ::1.

The mesh meters are simulated UDP meters behind the mesh emulator (a userspace hop with seeded
delay and loss); the serial meters are on a pty. Everything is registered from the configuration.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pytest

from gateway.cli.client import print_table
from gateway.cli.technician import METER_COLUMNS
from gateway.codec import acse
from gateway.codec import apdu as apdus
from gateway.codec import gateway as gw_pdu
from gateway.codec.apdu import ApduKind
from gateway.codec.wrapper import WrapperPdu, encode
from gateway.config import GatewayConfig, MeshConfig, MeterConfig, PushConfig
from gateway.control.commands import Commands
from gateway.control.discovery import identify
from gateway.control.server import CommandError
from gateway.core.gateway_protocol import GatewayRefusal
from gateway.core.push_registration import PushRefusal
from gateway.daemon import Gateway
from gateway.media.mesh import MeshEndpoint
from gateway.registry.store import MeterState
from gateway.sim.mesh_fleet import MeshFleet, start_mesh_fleet
from gateway.sim.mesh_model import MeshConditions
from gateway.sim.meter import PUBLIC_CLIENT, build_meter
from gateway.sim.tcp_meter import SimTcpMeter
from tests.integration.conftest import SimLine, fixed_clock, gateway_config, meter_settings
from tests.integration.rawhes import GET_LDN, PUBLIC_AARQ, RLRQ, RawHes
from tests.integration.test_push import PUSH_CLIENT_SAP, HesListener, data_notification, listener  # noqa: F401
from tests.media.test_mesh_tcp import wait_closed
from tests.wan.support import until

MESH = "wisun0"
MESH_SAP = 40  # the first mesh meter; the serial meters are 17..20
MESH_NETWORK = 2  # after bus0, the only [[links]]
QUICK = MeshConditions(delay_s=0.003, jitter_s=0.002, loss=0.0)
MESH_TIMEOUT_S = 0.5  # far above the emulated round trip: only a lost datagram times out


@dataclass
class Both:
    gateway: Gateway
    fleet: MeshFleet
    line: SimLine

    @property
    def wan_port(self) -> int:
        return self.gateway.wan.addresses[0][1]

    @property
    def mesh(self) -> MeshEndpoint:
        return self.gateway.meshes[MESH]


def mesh_config(device: str, fleet: MeshFleet, *, push: tuple[PushConfig, ...] = ()) -> GatewayConfig:
    config = gateway_config(device, exchange_timeout_s=5.0)
    meters = tuple(MeterConfig(sap=MESH_SAP + i, link=MESH, address=f"[{host}]:{port}",
                               eui64=f"00000000000000{i + 1:02X}")
                   for i, (host, port) in enumerate(route.front for route in fleet.routes))
    mesh = MeshConfig(name=MESH, source_address="::1", port=0, max_in_flight=4, response_timeout_s=MESH_TIMEOUT_S)
    return replace(config, meshes=(mesh,), meters=config.meters + meters, push=push)


@pytest.fixture
async def both(sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]) -> AsyncIterator[Both]:
    fleet = await start_mesh_fleet(2, conditions=QUICK, seed=4, gateway=None)
    try:
        gateway = gateway_factory(mesh_config(sim_line.pty.slave_path, fleet))
        await gateway.start()
        yield Both(gateway, fleet, sim_line)
    finally:
        fleet.close()


async def read_ldn(hes: RawHes, sap: int) -> bytes:
    """Associate as the public client, read the logical device name, release; the GET answer's APDU."""
    aare = await hes.request(client_sap=PUBLIC_CLIENT, meter_sap=sap, apdu=PUBLIC_AARQ)
    assert apdus.kind_of(aare.apdu) is ApduKind.AARE, aare.apdu.hex()
    answer = await hes.request(client_sap=PUBLIC_CLIENT, meter_sap=sap, apdu=GET_LDN)
    rlre = await hes.request(client_sap=PUBLIC_CLIENT, meter_sap=sap, apdu=RLRQ)
    assert apdus.kind_of(rlre.apdu) is ApduKind.RLRE
    return answer.apdu


async def test_a_mesh_meter_and_a_serial_meter_are_read_at_once_through_one_gateway(both: Both) -> None:
    mesh_hes = await RawHes.connect("127.0.0.1", both.wan_port)
    serial_hes = await RawHes.connect("127.0.0.1", both.wan_port)
    try:
        mesh_answer, serial_answer = await asyncio.gather(read_ldn(mesh_hes, MESH_SAP), read_ldn(serial_hes, 17))
    finally:
        await mesh_hes.close()
        await serial_hes.close()
    assert mesh_answer.startswith(b"\xc4") and mesh_answer.endswith(both.fleet.settings[0].logical_device_name)
    assert serial_answer.startswith(b"\xc4") and b"SIM" in serial_answer
    assert both.fleet.meters[0].counters.answers == 3  # AARE, GET, RLRE: one datagram each, nothing resent
    route = both.gateway.route(MESH_SAP)
    assert route is not None and route.network == MESH and str(route.address).startswith("udp://[::1]:")


async def test_a_lost_datagram_gives_the_hes_an_exception_response_never_a_wrong_value(both: Both) -> None:
    hes = await RawHes.connect("127.0.0.1", both.wan_port)
    try:
        aare = await hes.request(client_sap=PUBLIC_CLIENT, meter_sap=MESH_SAP, apdu=PUBLIC_AARQ)
        assert apdus.kind_of(aare.apdu) is ApduKind.AARE
        model = both.fleet.emulator.model
        model.conditions = replace(QUICK, loss=1.0)  # the mesh drops the next datagrams, both ways
        requests_before = both.fleet.meters[0].counters.requests
        lost = await hes.request(client_sap=PUBLIC_CLIENT, meter_sap=MESH_SAP, apdu=GET_LDN)
        assert lost.apdu[:1] == b"\xd8"  # exception-response: the HES knows it has no answer
        assert both.fleet.meters[0].counters.requests == requests_before  # the request itself was lost...
        assert both.mesh.network.counters.datagrams_sent == 2  # ... and never resent by the gateway
        assert both.mesh.network.counters.timeouts == 1
        model.conditions = QUICK
        # The association is gone with its channel; a new one reads the right value.
        assert (await read_ldn(hes, MESH_SAP)).endswith(both.fleet.settings[0].logical_device_name)
    finally:
        await hes.close()


async def test_a_push_from_a_mesh_meter_reaches_the_push_destination(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], listener: HesListener  # noqa: F811
) -> None:
    fleet = await start_mesh_fleet(1, conditions=QUICK, seed=5, gateway=None)
    try:
        push = PushConfig(name="hes", host="127.0.0.1", port=listener.port, deliver_to_subscribed=False,
                          reconnect_min_s=0.05, reconnect_max_s=0.2)
        gateway = gateway_factory(mesh_config(sim_line.pty.slave_path, fleet, push=(push,)))
        await gateway.start()
        hes = await RawHes.connect("127.0.0.1", gateway.wan.addresses[0][1])
        try:
            await read_ldn(hes, MESH_SAP)  # the emulator learns the gateway's address from the read
        finally:
            await hes.close()
        notification = data_notification(7)
        fleet.meters[0].push(to=fleet.routes[0].back, client_sap=PUSH_CLIENT_SAP, apdu=notification)
        (received,) = await listener.take(1)
        assert received == WrapperPdu(source=MESH_SAP, destination=PUSH_CLIENT_SAP, apdu=notification)
        # The same push from an address no meter is registered at: counted and dropped, never forwarded.
        stranger = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            stranger.sendto(encode(WrapperPdu(source=1, destination=PUSH_CLIENT_SAP, apdu=notification)),
                            gateway.meshes[MESH].local_address)
            await until(lambda: gateway.push_registrations.refused[PushRefusal.UNREGISTERED] == 1)
        finally:
            stranger.close()
        assert listener.received.empty()  # refused where it came in: nothing was queued for the destination
    finally:
        fleet.close()


def e6(address: bytes, apdu: bytes) -> bytes:
    return gw_pdu.encode(gw_pdu.GatewayPdu(network_id=MESH_NETWORK, physical_address=address, apdu=apdu))


async def read_ldn_by_gateway_request(hes: RawHes, address: bytes) -> bytes:
    """The same read as `read_ldn`, each APDU in a gateway-request naming the meter by `address`."""
    answers = []
    for apdu in (PUBLIC_AARQ, GET_LDN, RLRQ):
        pdu = await hes.request(client_sap=PUBLIC_CLIENT, meter_sap=1, apdu=e6(address, apdu))
        answer = gw_pdu.decode(pdu.apdu)
        assert (answer.network_id, answer.physical_address) == (MESH_NETWORK, address)
        answers.append(answer.apdu)
    assert [apdus.kind_of(a) for a in (answers[0], answers[2])] == [ApduKind.AARE, ApduKind.RLRE]
    return answers[1]


async def test_a_gateway_request_names_a_mesh_meter_by_its_ipv6_address(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    fleet = await start_mesh_fleet(1, conditions=QUICK, seed=6, gateway=None)  # alone on ::1: its address names it
    try:
        gateway = gateway_factory(mesh_config(sim_line.pty.slave_path, fleet))
        await gateway.start()
        host = ipaddress.IPv6Address(fleet.routes[0].front[0])
        hes = await RawHes.connect("127.0.0.1", gateway.wan.addresses[0][1])
        try:
            answer = await read_ldn_by_gateway_request(hes, host.packed)
            unknown = await hes.request(client_sap=PUBLIC_CLIENT, meter_sap=1,
                                        apdu=e6(ipaddress.IPv6Address("fd00::99").packed, PUBLIC_AARQ))
        finally:
            await hes.close()
        assert answer.endswith(fleet.settings[0].logical_device_name)
        refusal = gw_pdu.decode(unknown.apdu).apdu
        assert apdus.kind_of(refusal) is ApduKind.AARE and not acse.association_accepted(refusal)
        assert fleet.meters[0].counters.requests == 3
    finally:
        fleet.close()


async def test_a_gateway_request_names_a_mesh_meter_by_its_eui64_and_never_guesses(both: Both) -> None:
    second = both.gateway.registry.get(MESH_SAP + 1)
    assert second is not None and second.eui64 is not None
    hes = await RawHes.connect("127.0.0.1", both.wan_port)
    try:
        answer = await read_ldn_by_gateway_request(hes, second.eui64)
    finally:
        await hes.close()
    assert answer.endswith(both.fleet.settings[1].logical_device_name)
    # Both meters sit on ::1 (other ports): the address alone names neither, so it names none.
    shared = ipaddress.IPv6Address(both.fleet.routes[0].front[0]).packed
    assert both.gateway.gateway_route(MESH_NETWORK, shared, 1) is GatewayRefusal.UNKNOWN_METER


async def test_the_cli_shows_each_meter_and_session_with_its_medium_and_address(both: Both) -> None:
    commands = Commands(both.gateway)
    hes = await RawHes.connect("127.0.0.1", both.wan_port)
    try:
        for sap in (MESH_SAP, 17):  # one association held open on each medium
            aare = await hes.request(client_sap=PUBLIC_CLIENT, meter_sap=sap, apdu=PUBLIC_AARQ)
            assert acse.association_accepted(aare.apdu)
        sessions = await commands.sessions({}, ignore_progress)
        meters = await commands.meters({}, ignore_progress)
        detail = await commands.meter({"meter": MESH_SAP}, ignore_progress)
        status = await commands.status({}, ignore_progress)
    finally:
        await hes.close()
    front_host, front_port = both.fleet.routes[0].front
    endpoint = f"[{front_host}]:{front_port}"
    by_sap = {row["meter_sap"]: row for row in sessions}
    assert (by_sap[MESH_SAP]["medium"], by_sap[MESH_SAP]["line"]) == ("mesh", MESH)
    assert by_sap[MESH_SAP]["address"] == f"udp://{endpoint}"
    assert (by_sap[17]["medium"], by_sap[17]["address"]) == ("serial", "17")
    rows = {row["sap"]: row for row in meters}
    assert (rows[MESH_SAP]["medium"], rows[MESH_SAP]["address"], rows[MESH_SAP]["eui64"]) == (
        "mesh", endpoint, "0000000000000001")
    assert (rows[17]["medium"], rows[17]["address"]) == ("serial", 17)
    assert (detail["network_id"], detail["gateway_address"]) == (MESH_NETWORK, "0" * 31 + "1")  # ::1, 16 bytes
    assert detail["transport"] == "udp"
    (mesh,) = status["meshes"]
    assert mesh["name"] == MESH and mesh["usable"] and mesh["answers"] >= 1
    table = io.StringIO()
    print_table(list[Mapping[str, Any]](meters), METER_COLUMNS, out=table)
    (mesh_line,) = [line for line in table.getvalue().splitlines() if line.startswith(str(MESH_SAP))]
    assert f" {MESH} " in mesh_line and " mesh " in mesh_line and f" {endpoint} " in mesh_line


def ignore_progress(update: Mapping[str, Any]) -> None:
    """Commands report progress on long work; these answer at once."""


async def test_meters_add_registers_a_mesh_meter_by_its_ipv6_address(both: Both) -> None:
    commands = Commands(both.gateway)
    added = await commands.add({"link": MESH, "address": "FD00::0042", "sap": 60}, ignore_progress)
    assert (added["sap"], added["medium"], added["address"]) == (60, "mesh", "fd00::42")
    serial = await commands.add({"link": "bus0", "address": 44}, ignore_progress)
    assert (serial["medium"], serial["address"]) == ("serial", 44)
    with pytest.raises(CommandError, match="must be a string"):  # the CLI sends digits as a number
        await commands.add({"link": MESH, "address": 44}, ignore_progress)
    with pytest.raises(CommandError, match="whole number"):
        await commands.add({"link": "bus0", "address": "fd00::44"}, ignore_progress)


async def test_an_answer_later_than_the_timeout_is_never_taken_for_the_next_requests(both: Both) -> None:
    hes = await RawHes.connect("127.0.0.1", both.wan_port)
    try:
        assert acse.association_accepted((await hes.request(client_sap=PUBLIC_CLIENT, meter_sap=MESH_SAP,
                                                            apdu=PUBLIC_AARQ)).apdu)
        model = both.fleet.emulator.model
        model.conditions = replace(QUICK, delay_s=MESH_TIMEOUT_S * 1.6)  # this GET reaches the meter too late
        late = await hes.request(client_sap=PUBLIC_CLIENT, meter_sap=MESH_SAP, apdu=GET_LDN)
        model.conditions = QUICK  # its answer comes back at once, after the timeout answered the HES
        assert late.apdu[:1] == b"\xd8"
        # At once a new association on the same wPorts: the late GET answer must not be taken for its AARE.
        assert acse.association_accepted((await hes.request(client_sap=PUBLIC_CLIENT, meter_sap=MESH_SAP,
                                                            apdu=PUBLIC_AARQ)).apdu)
        answer = await hes.request(client_sap=PUBLIC_CLIENT, meter_sap=MESH_SAP, apdu=GET_LDN)
        assert answer.apdu.endswith(both.fleet.settings[0].logical_device_name)
        assert both.fleet.meters[0].counters.answers == 4  # AARE, the late GET's answer, AARE, GET
        assert both.mesh.network.counters.unexpected == 1  # the late answer: counted and dropped
    finally:
        await hes.close()


async def test_the_gateway_reads_a_mesh_meters_identity_and_it_survives_readdressing(both: Both) -> None:
    identified = await identify(both.gateway, MESH_SAP)
    assert identified.logical_device_name == both.fleet.settings[0].logical_device_name
    online = both.gateway.registry.get(MESH_SAP)
    assert online is not None and online.state is MeterState.ONLINE and online.stats.last_rtt_ms is not None
    # The meter rejoins at another address (here: the second route's): its EUI-64 keeps its SAP and name.
    second_host, second_port = both.fleet.routes[1].front
    moved = both.gateway.registry.register_ip(link=MESH, address=f"[{second_host}]:{second_port}",
                                              eui64=identified.eui64)
    assert (moved.sap, moved.logical_device_name) == (MESH_SAP, identified.logical_device_name)
    assert both.gateway.registry.get(MESH_SAP + 1) is None  # the meter registered at that address has left it


async def test_a_mesh_meter_that_listens_only_on_tcp_is_read_over_one_connection_per_association(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    settings = meter_settings(7)
    tcp_meter = SimTcpMeter(devices={1: build_meter(settings, clock=fixed_clock)})
    await tcp_meter.start("::1", 0)
    try:
        host, port = tcp_meter.address
        config = gateway_config(sim_line.pty.slave_path)
        config = replace(config, meshes=(MeshConfig(name=MESH, source_address="::1", port=0),), meters=(
            *config.meters, MeterConfig(sap=MESH_SAP, link=MESH, address=f"[{host}]:{port}", transport="tcp")))
        gateway = gateway_factory(config)
        await gateway.start()
        hes = await RawHes.connect("127.0.0.1", gateway.wan.addresses[0][1])
        try:
            first = await read_ldn(hes, MESH_SAP)
            await wait_closed(tcp_meter)  # the release closed the association's connection
            second = await read_ldn(hes, MESH_SAP)
            await wait_closed(tcp_meter)
        finally:
            await hes.close()
    finally:
        await tcp_meter.stop()
    assert first == second and first.endswith(settings.logical_device_name)
    route = gateway.route(MESH_SAP)
    assert route is not None and str(route.address) == f"tcp://[{host}]:{port}"
    assert gateway.meshes[MESH].network.counters.answers == 6
