"""The daemon follows wsbrd's node list (a stand-in on a real dbus-daemon): meters by EUI-64 keep their SAP."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import replace

from gateway.config import GatewayConfig, MeshConfig
from gateway.daemon import Gateway
from tests.integration.conftest import SimLine, gateway_config
from tests.media.test_wisun import METER_A, METER_B, StandInWsbrd, bus_address, node_entry, pytestmark, wsbrd  # noqa: F401
from tests.wan.support import until


async def test_wsbrd_nodes_become_mesh_meters_that_keep_their_sap_through_renumbering(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], bus_address: str,  # noqa: F811
    wsbrd: StandInWsbrd,  # noqa: F811
) -> None:
    wsbrd.set_nodes([node_entry(METER_A, "fe80::a", "fd00::a")])
    mesh = MeshConfig(name="wisun0", source_address="::1", port=0, wisun_bus=bus_address)
    gateway = gateway_factory(replace(gateway_config(sim_line.pty.slave_path), meshes=(mesh,)))
    await gateway.start()
    registry = gateway.registry
    await until(lambda: registry.by_eui64(METER_A) is not None)
    first = registry.by_eui64(METER_A)
    assert first is not None and (first.link, first.ip_address, first.registered_by) == ("wisun0", "fd00::a",
                                                                                          "discovery")
    route = gateway.route(first.sap)
    assert route is not None and route.network == "wisun0"
    assert str(route.address) == "fd00::a"  # the routable address, not the link-local one

    # Prefix renumbering, and a second meter joins: A keeps its SAP at its new address.
    wsbrd.set_nodes([node_entry(METER_A, "fd01::a"), node_entry(METER_B, "fd01::b")])
    await until(lambda: registry.by_eui64(METER_B) is not None)
    moved = registry.by_eui64(METER_A)
    assert moved is not None and (moved.sap, moved.ip_address) == (first.sap, "fd01::a")
    assert registry.by_ip(link="wisun0", address=ipaddress.IPv6Address("fd00::a")) is None
    assert gateway.gateway_route(2, ipaddress.IPv6Address("fd01::a").packed, 1) == first.sap
