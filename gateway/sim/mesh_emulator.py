"""A userspace mesh hop, like a border router: forwards UDP datagrams with seeded delay, jitter and loss.

This machine's kernel has no netem qdisc, so the mesh is emulated here. Each route pairs a
*front* socket, the address the gateway sends to for one meter, with a *back* socket that talks
to the meter itself:

    gateway --(front address of meter i)--> [emulator: delay, jitter, loss] --(back)--> meter i
    gateway <----------------(front)------- [emulator: delay, jitter, loss] <--(back)-- meter i

Answers and pushes from meter i leave by its front socket, to the address that last sent to
it, or to the configured gateway address before anyone did (a push). On loopback every front
socket is `[::1]:<ephemeral>`; in network namespaces the sockets are made inside them (pass
`front_sock`/`back_sock`) so the emulator is the only path between the gateway and the meters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import structlog

from gateway.sim.mesh_model import MeshConditions, MeshFigures, MeshModel

log = structlog.get_logger(__name__)

SocketAddress = tuple[str, int]


class _Side(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, SocketAddress], None]) -> None:
        self._on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # 3.11's selector transport is no subclass

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._on_datagram(data, (str(addr[0]), int(str(addr[1]))))


@dataclass(frozen=True, slots=True)
class RouteAddresses:
    """Where one route listens: the gateway sends to `front`; the meter answers and pushes to `back`."""

    front: SocketAddress
    back: SocketAddress


@dataclass(slots=True)
class _Route:
    meter: SocketAddress
    front: _Side
    back: _Side
    gateway: SocketAddress | None
    pending: set[asyncio.TimerHandle] = field(default_factory=set)


def _name(sock: socket.socket) -> SocketAddress:
    host, port = sock.getsockname()[:2]
    return str(host), int(port)


def _udp_socket(address: SocketAddress) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setblocking(False)
    return sock


class MeshEmulator:
    """Routes between the gateway side and meters, through a seeded `MeshModel`."""

    def __init__(self, *, conditions: MeshConditions, seed: int, gateway: SocketAddress | None = None) -> None:
        self.model = MeshModel(conditions=conditions, seed=seed)
        self._gateway = gateway
        self._routes: list[_Route] = []
        self.no_route = 0  # a meter pushed before any gateway address was known
        self.delivered_to_meters = 0
        self.delivered_to_gateway = 0

    @property
    def figures(self) -> MeshFigures:
        return self.model.figures()

    async def add_route(
        self,
        *,
        meter: SocketAddress,
        front: SocketAddress = ("::1", 0),
        back: SocketAddress = ("::1", 0),
        front_sock: socket.socket | None = None,
        back_sock: socket.socket | None = None,
    ) -> RouteAddresses:
        """Serve `meter` behind a front address (sockets made here unless given)."""
        loop = asyncio.get_running_loop()
        meter = (str(ipaddress.IPv6Address(meter[0])), meter[1])  # compared with datagram sources, as printed
        route = _Route(meter=meter, front=_Side(lambda *_: None), back=_Side(lambda *_: None), gateway=self._gateway)
        route.front = _Side(lambda data, source: self._from_gateway(route, data, source))
        route.back = _Side(lambda data, source: self._from_meter(route, data, source))
        front_sock = front_sock or _udp_socket(front)
        back_sock = back_sock or _udp_socket(back)
        route.front.transport, _ = await loop.create_datagram_endpoint(lambda: route.front, sock=front_sock)
        route.back.transport, _ = await loop.create_datagram_endpoint(lambda: route.back, sock=back_sock)
        self._routes.append(route)
        return RouteAddresses(front=_name(front_sock), back=_name(back_sock))

    def close(self) -> None:
        """Stop forwarding; datagrams still in the mesh are lost."""
        for route in self._routes:
            for handle in route.pending:
                handle.cancel()
            route.pending.clear()
            for side in (route.front, route.back):
                if side.transport is not None:
                    side.transport.close()
        log.info("mesh_emulator.closed", **dataclasses.asdict(self.figures))

    def _from_gateway(self, route: _Route, data: bytes, source: SocketAddress) -> None:
        route.gateway = source
        self._forward(route, data, via=route.back, to=route.meter, flow=(route.meter, "down"))

    def _from_meter(self, route: _Route, data: bytes, source: SocketAddress) -> None:
        if source != route.meter:
            return  # only the routed meter talks through its back socket
        if route.gateway is None:
            self.no_route += 1
            return
        self._forward(route, data, via=route.front, to=route.gateway, flow=(route.meter, "up"))

    def _forward(self, route: _Route, data: bytes, *, via: _Side, to: SocketAddress, flow: object) -> None:
        loop = asyncio.get_running_loop()
        arrival = self.model.admit(flow=(flow,), now=loop.time())
        if arrival is None:
            return

        def deliver() -> None:
            route.pending.discard(handle)
            if via.transport is not None and not via.transport.is_closing():
                via.transport.sendto(data, to)
                if via is route.back:
                    self.delivered_to_meters += 1
                else:
                    self.delivered_to_gateway += 1

        handle = loop.call_at(arrival, deliver)
        route.pending.add(handle)

