"""The wsbrd node-list watcher against a real dbus-daemon and a stand-in wsbrd built with dbus-fast."""

# No `from __future__ import annotations` here: dbus-fast reads D-Bus signatures from the annotations.

import asyncio
import ipaddress
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from dbus_fast import Variant
from dbus_fast.aio import MessageBus
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property

from gateway.media.wisun import (
    WSBRD_INTERFACE,
    WSBRD_NAME,
    WSBRD_PATH,
    BorderRouterWatcher,
    WisunNode,
    diff_nodes,
    parse_nodes,
)

DBUS_DAEMON = shutil.which("dbus-daemon")
pytestmark = pytest.mark.skipif(DBUS_DAEMON is None, reason="no dbus-daemon (apt-get install dbus)")

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""
METER_A = bytes.fromhex("0011223344556677")
METER_B = bytes.fromhex("8899aabbccddeeff")


def node_entry(eui64: bytes, *addresses: str) -> list[object]:
    """One `(aya{sv})` entry as wsbrd publishes it (with a property we do not use)."""
    packed = [ipaddress.IPv6Address(address).packed for address in addresses]
    return [eui64, {"ipv6": Variant("aay", packed), "is_border_router": Variant("b", False)}]


class StandInWsbrd(ServiceInterface):
    """What wsbrd publishes: the Nodes property and its PropertiesChanged signal."""

    def __init__(self) -> None:
        super().__init__(WSBRD_INTERFACE)
        self._nodes: list[list[object]] = []

    @dbus_property(access=PropertyAccess.READ)
    def Nodes(self) -> "a(aya{sv})":  # noqa: F722 - a D-Bus signature, not a Python type
        return self._nodes

    def set_nodes(self, nodes: list[list[object]]) -> None:
        self._nodes = nodes
        self.emit_properties_changed({"Nodes": nodes})


@pytest.fixture
def bus_address(tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=tmp_path / "bus"))
    assert DBUS_DAEMON is not None
    daemon = subprocess.Popen([DBUS_DAEMON, f"--config-file={config}", "--nofork", "--print-address"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None
        yield daemon.stdout.readline().strip()  # printed once the daemon listens
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
        if daemon.stdout is not None:
            daemon.stdout.close()


@pytest.fixture
async def wsbrd(bus_address: str) -> AsyncIterator[StandInWsbrd]:
    bus = await MessageBus(bus_address=bus_address).connect()
    service = StandInWsbrd()
    bus.export(WSBRD_PATH, service)
    await bus.request_name(WSBRD_NAME)
    yield service
    bus.disconnect()
    await bus.wait_for_disconnect()


async def next_list(lists: asyncio.Queue[list[WisunNode]]) -> list[WisunNode]:
    async with asyncio.timeout(10):
        return await lists.get()


async def test_reads_the_list_at_start_and_on_each_change(bus_address: str, wsbrd: StandInWsbrd) -> None:
    wsbrd.set_nodes([node_entry(METER_A, "fd00::a")])
    lists: asyncio.Queue[list[WisunNode]] = asyncio.Queue()
    watcher = BorderRouterWatcher(on_nodes=lists.put_nowait, bus_address=bus_address)
    await watcher.start()
    try:
        first = await next_list(lists)
        assert first == [WisunNode(METER_A, (ipaddress.IPv6Address("fd00::a"),))]

        wsbrd.set_nodes([node_entry(METER_A, "fd00::a"), node_entry(METER_B, "fd00::b", "fe80::b")])
        second = await next_list(lists)
        assert [node.eui64 for node in second] == [METER_A, METER_B]
        assert second[1].ipv6 == (ipaddress.IPv6Address("fd00::b"), ipaddress.IPv6Address("fe80::b"))

        # Prefix renumbering: meter A gets a new address and keeps its identity; meter B leaves.
        wsbrd.set_nodes([node_entry(METER_A, "fd01::a")])
        third = await next_list(lists)
        changes = diff_nodes({node.eui64: node for node in second}, third)
        assert changes.added == () and changes.removed == (METER_B,)
        assert changes.readdressed == (WisunNode(METER_A, (ipaddress.IPv6Address("fd01::a"),)),)
    finally:
        await watcher.stop()


async def test_no_border_router_on_the_bus_reports_nothing_until_it_appears(bus_address: str) -> None:
    lists: asyncio.Queue[list[WisunNode]] = asyncio.Queue()
    watcher = BorderRouterWatcher(on_nodes=lists.put_nowait, bus_address=bus_address)
    await watcher.start()
    try:
        assert await watcher.read_nodes() is None
        bus = await MessageBus(bus_address=bus_address).connect()
        service = StandInWsbrd()
        service._nodes = [node_entry(METER_B, "fd00::b")]
        bus.export(WSBRD_PATH, service)
        await bus.request_name(WSBRD_NAME)  # wsbrd starts: NameOwnerChanged makes the watcher read
        assert [node.eui64 for node in await next_list(lists)] == [METER_B]
        bus.disconnect()
        await bus.wait_for_disconnect()
    finally:
        await watcher.stop()


def test_malformed_entries_are_skipped() -> None:
    good = node_entry(METER_A, "fd00::a")
    value = [good, [b"short", {}], [METER_B, {"ipv6": Variant("aay", [b"\x00" * 4])}], "junk"]
    assert parse_nodes(value) == [WisunNode(METER_A, (ipaddress.IPv6Address("fd00::a"),))]
    assert parse_nodes(None) == []
    assert parse_nodes([[METER_B, {}]]) == [WisunNode(METER_B, ())]
