"""An IPv6 meter network over the UDP wrapper: one socket, the sans-IO `MeshNetwork`, its timer.

`MeshEndpoint` is the `MeterMedium` of one mesh (Wi-SUN FAN, G3-PLC): it binds one UDP socket
(a source address, optionally an interface, port 4059), feeds every datagram and every timer
expiry to the `MeshNetwork` and carries out the actions it returns. All protocol and scheduling
rules are in `mesh_core`; this module only moves bytes and keeps one timer armed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import structlog

from gateway.codec.wrapper import WRAPPER_PORT
from gateway.media.channel import (
    Association,
    ChannelDown,
    ChannelError,
    ChannelEvent,
    ChannelListener,
    DownReason,
    IpMeter,
    PushListener,
    UnsolicitedPush,
)
from gateway.media.mesh_core import Deliver, MeshAction, MeshNetwork, MeshSettings, Transmit

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class MeshBinding:
    """Where the gateway's socket on a meter network lives."""

    host: str = "::"  # the source address meters see and push to
    port: int = WRAPPER_PORT
    interface: str | None = None  # SO_BINDTODEVICE, and the scope of a link-local source address


def bound_socket(binding: MeshBinding) -> socket.socket:
    """A non-blocking IPv6 UDP socket bound as `binding` says. Raises OSError."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        scope = 0
        if binding.interface is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, binding.interface.encode())
            scope = socket.if_nametoindex(binding.interface)
        sock.bind((binding.host, binding.port, 0, scope))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class MeshChannel:
    """One association's channel on a mesh."""

    def __init__(self, endpoint: MeshEndpoint, association: Association) -> None:
        self._endpoint = endpoint
        self._association = association

    @property
    def association(self) -> Association:
        return self._association

    def send_apdu(self, apdu: bytes) -> None:
        self._endpoint.send_apdu(self._association, apdu)

    def close(self) -> None:
        self._endpoint.close_channel(self._association)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: MeshEndpoint) -> None:
        self._endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._endpoint.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("mesh.socket_error", error=str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        self._endpoint.connection_lost(exc)


class MeshEndpoint:
    """The `MeterMedium` of one IPv6 meter network."""

    def __init__(self, *, name: str, settings: MeshSettings | None = None) -> None:
        self._name = name
        self.network = MeshNetwork(settings)
        self._listeners: dict[Association, ChannelListener] = {}
        self._unsolicited: PushListener | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._log = log.bind(mesh=name)

    @property
    def name(self) -> str:
        return self._name

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound (host, port): meters push here."""
        if self._transport is None:
            raise ChannelError(f"mesh {self._name} is not started")
        host, port = self._transport.get_extra_info("sockname")[:2]
        return host, port

    async def start(self, binding: MeshBinding | None = None, *, sock: socket.socket | None = None) -> None:
        """Bind the socket (or take `sock`, e.g. one made inside a network namespace). Raises OSError."""
        self._loop = asyncio.get_running_loop()
        sock = sock if sock is not None else bound_socket(binding or MeshBinding())
        transport, _ = await self._loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        self._transport = transport
        self._log.info("mesh.started", local=str(sock.getsockname()[:2]))

    def stop(self) -> None:
        """Close the socket; every open channel goes down with MEDIUM_LOST."""
        if self._transport is not None:
            self._transport.close()

    def usable(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def on_unsolicited(self, listener: PushListener) -> None:
        self._unsolicited = listener

    def open(self, association: Association, listener: ChannelListener) -> MeshChannel:
        if not self.usable():
            raise ChannelError(f"mesh {self._name} is not usable")
        self.network.open(association, now=self._now())
        self._listeners[association] = listener
        return MeshChannel(self, association)

    def send_apdu(self, association: Association, apdu: bytes) -> None:
        """Queue an APDU on an open channel. Raises ChannelError."""
        if association not in self._listeners:
            raise ChannelError(f"channel {association} is closed")
        self._run(self.network.send_apdu(association, apdu, now=self._now()), deferred=True)

    def close_channel(self, association: Association) -> None:
        """Close a channel; no event follows."""
        if self._listeners.pop(association, None) is not None:
            self._run(self.network.close(association, now=self._now()), deferred=True)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        try:
            source = IpMeter(ipaddress.IPv6Address(str(addr[0])), int(str(addr[1])))
        except ValueError:  # an IPv4 peer on a dual-stack socket: not a mesh meter
            self.network.counters.malformed += 1
            return
        self._run(self.network.receive(data, source=source, now=self._now()), deferred=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._cancel_timer()
        listeners, self._listeners = self._listeners, {}
        for association, listener in listeners.items():
            self.network.close(association, now=self._now())
            listener(ChannelDown(DownReason.MEDIUM_LOST))
        self._log.info("mesh.stopped", error=str(exc) if exc else None)

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _run(self, actions: list[MeshAction], *, deferred: bool) -> None:
        """Carry out actions; events for a caller inside open/send/close wait for the next loop turn."""
        for action in actions:
            if isinstance(action, Transmit):
                if self._transport is not None:
                    self._transport.sendto(action.datagram, (str(action.meter.host), action.meter.port))
            elif isinstance(action, Deliver):
                self._deliver(action.association, action.event, deferred=deferred)
            elif self._unsolicited is not None:
                self._hand_push(action, deferred=deferred)
        self._arm_timer()

    def _deliver(self, association: Association, event: ChannelEvent, *, deferred: bool) -> None:
        listener = self._listeners.get(association)
        if listener is None:
            return
        if isinstance(event, ChannelDown):
            del self._listeners[association]
            self._log.info("mesh.channel_down", meter=str(association.meter), reason=event.reason.value)
        if deferred:
            assert self._loop is not None
            self._loop.call_soon(listener, event)
        else:
            listener(event)

    def _hand_push(self, push: UnsolicitedPush, *, deferred: bool) -> None:
        assert self._unsolicited is not None
        if deferred:
            assert self._loop is not None
            self._loop.call_soon(self._unsolicited, push)
        else:
            self._unsolicited(push)

    def _arm_timer(self) -> None:
        deadline = self.network.deadline
        if deadline == self._timer_at:
            return
        self._cancel_timer()
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._expired)
            self._timer_at = deadline

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, None

    def _expired(self) -> None:
        self._timer, self._timer_at = None, None
        self._run(self.network.expire(now=self._now()), deferred=False)

