"""The Wi-SUN border router's node list (wsbrd over D-Bus), keyed on EUI-64.

`wsbrd` publishes on the system bus, name and interface `com.silabs.Wisun.BorderRouter`, object
`/com/silabs/Wisun/BorderRouter`, the property `Nodes` of type `a(aya{sv})`: per node its EUI-64
and properties, among them `ipv6` (`aay`, 16-octet addresses). It emits
`org.freedesktop.DBus.Properties.PropertiesChanged` when the routing graph changes. The watcher
reads `Nodes` at start, on each such signal and when wsbrd (re)appears on the bus, coalescing
bursts, and hands the whole list to a callback. A meter is its EUI-64: `diff_nodes` tells which
nodes came, went, or only changed address (prefix renumbering, rejoin), so a meter keeps its SAP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

log = structlog.get_logger(__name__)

WSBRD_NAME = "com.silabs.Wisun.BorderRouter"
WSBRD_PATH = "/com/silabs/Wisun/BorderRouter"
WSBRD_INTERFACE = "com.silabs.Wisun.BorderRouter"
NODES = "Nodes"
_PROPERTIES = "org.freedesktop.DBus.Properties"
_BUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")
_MATCH_CHANGED = (f"type='signal',interface='{_PROPERTIES}',member='PropertiesChanged',"
                  f"path='{WSBRD_PATH}',arg0='{WSBRD_INTERFACE}'")
_MATCH_OWNER = f"type='signal',sender='{_BUS[0]}',member='NameOwnerChanged',arg0='{WSBRD_NAME}'"


@dataclass(frozen=True, slots=True)
class WisunNode:
    """One node of the Wi-SUN network: its identity and its current addresses."""

    eui64: bytes
    ipv6: tuple[ipaddress.IPv6Address, ...]


@dataclass(frozen=True, slots=True)
class NodeChanges:
    """What changed between two node lists, by EUI-64."""

    added: tuple[WisunNode, ...]
    readdressed: tuple[WisunNode, ...]  # same EUI-64, new addresses: the same meter
    removed: tuple[bytes, ...]


NodeListener = Callable[[list[WisunNode]], None]


def parse_nodes(value: Any) -> list[WisunNode]:
    """The nodes of a `Nodes` value (`a(aya{sv})`); malformed entries are skipped, not fatal."""
    nodes: list[WisunNode] = []
    for entry in value if isinstance(value, list) else []:
        try:
            eui64, properties = entry
            addresses = properties.get("ipv6")
            raw = addresses.value if isinstance(addresses, Variant) else []
            ipv6 = tuple(ipaddress.IPv6Address(bytes(item)) for item in raw)
        except (TypeError, ValueError, AttributeError):
            log.warning("wisun.node_malformed")
            continue
        if isinstance(eui64, bytes) and len(eui64) == 8:
            nodes.append(WisunNode(eui64=eui64, ipv6=ipv6))
    return nodes


def diff_nodes(old: Mapping[bytes, WisunNode], new: Sequence[WisunNode]) -> NodeChanges:
    """Compare the known nodes with a new list, keyed on EUI-64."""
    current = {node.eui64: node for node in new}
    return NodeChanges(
        added=tuple(node for eui, node in current.items() if eui not in old),
        readdressed=tuple(node for eui, node in current.items() if eui in old and old[eui].ipv6 != node.ipv6),
        removed=tuple(eui for eui in old if eui not in current),
    )


class BorderRouterWatcher:
    """Follows wsbrd's `Nodes` and calls `on_nodes` with every new list."""

    def __init__(self, *, on_nodes: NodeListener, bus_address: str | None = None) -> None:
        self._on_nodes = on_nodes
        self._bus_address = bus_address  # None: the system bus
        self._bus: MessageBus | None = None
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.nodes: list[WisunNode] | None = None  # the last list read, None before any

    async def start(self) -> None:
        """Connect, subscribe, and read the list once (later reads follow the signals). Raises OSError."""
        bus = MessageBus(bus_address=self._bus_address, bus_type=BusType.SYSTEM)
        await bus.connect()
        self._bus = bus
        bus.add_message_handler(self._on_message)
        for rule in (_MATCH_CHANGED, _MATCH_OWNER):
            await self._call(Message(destination=_BUS[0], path=_BUS[1], interface=_BUS[2], member="AddMatch",
                                     signature="s", body=[rule]))
        self._dirty.set()
        self._task = asyncio.create_task(self._follow(), name="wisun.watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._bus is not None:
            self._bus.disconnect()
            with contextlib.suppress(Exception):  # the bus reports how it went away: not our concern now
                await self._bus.wait_for_disconnect()  # type: ignore[no-untyped-call]  # dbus-fast leaves it unannotated
            self._bus = None

    async def read_nodes(self) -> list[WisunNode] | None:
        """Read `Nodes` now; None when wsbrd is not on the bus (or refuses)."""
        reply = await self._call(Message(destination=WSBRD_NAME, path=WSBRD_PATH, interface=_PROPERTIES,
                                         member="Get", signature="ss", body=[WSBRD_INTERFACE, NODES]))
        if reply.message_type is not MessageType.METHOD_RETURN:
            log.info("wisun.nodes_unavailable", error=reply.error_name)
            return None
        variant = reply.body[0]
        return parse_nodes(variant.value if isinstance(variant, Variant) else None)

    async def _call(self, message: Message) -> Message:
        assert self._bus is not None, "not started"
        return await self._bus.call(message)

    def _on_message(self, message: Message) -> None:
        if message.message_type is not MessageType.SIGNAL:
            return
        if message.member == "PropertiesChanged" and message.path == WSBRD_PATH:
            interface, changed, invalidated = message.body
            if interface == WSBRD_INTERFACE and (NODES in changed or NODES in invalidated):
                self._dirty.set()
        elif message.member == "NameOwnerChanged" and message.body[:1] == [WSBRD_NAME] and message.body[2]:
            self._dirty.set()  # wsbrd (re)started: its list starts anew

    async def _follow(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()  # signals during the read mark it dirty again: nothing is missed
            nodes = await self.read_nodes()
            if nodes is None or nodes == self.nodes:
                continue
            self.nodes = nodes
            log.info("wisun.nodes", count=len(nodes))
            self._on_nodes(nodes)
