"""An IPv6 meter network over the wrapper: one UDP socket, the sans-IO `MeshNetwork`, its timer.

`MeshEndpoint` is the `MeterMedium` of one mesh (Wi-SUN FAN, G3-PLC): it binds one UDP socket
(a source address, optionally an interface, port 4059), feeds every datagram, TCP wrapper PDU
(meters that listen only on TCP, `mesh_tcp`) and timer expiry to the `MeshNetwork`, and carries
out the actions it returns. All exchange rules are in `mesh_core`; this module moves bytes and
keeps one timer armed.

Broadcasts (a head-end's firmware blocks, `broadcast`): with a multicast group configured (e.g.
ff03::1, realm-local all nodes), one wrapper datagram from the HES's client SAP to the
all-station wPort 0x7F goes to the group on the mesh interface, once for every meter that joined
it, instead of one datagram per meter. Nobody answers it; its airtime is the border router's
business and is reported as 0.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from gateway.codec.errors import LocalProtocolError
from gateway.codec.wrapper import ALL_STATION_WPORT, WRAPPER_PORT, WrapperPdu, encode
from gateway.log import debug_enabled
from gateway.media.channel import (
    Association,
    ChannelDown,
    ChannelError,
    ChannelEvent,
    ChannelListener,
    DownReason,
    IpMeter,
    IpTransport,
    MeterChannel,
    MeterMedium,
    PushListener,
    UnsolicitedPush,
)
from gateway.media.ipsocket import MeshBinding, bound_socket
from gateway.media.mesh_core import Deliver, MeshAction, MeshNetwork, MeshSettings, Transmit
from gateway.media.mesh_tcp import TcpWrapperLinks

__all__ = ["MeshBinding", "MeshChannel", "MeshEndpoint"]

log = structlog.get_logger(__name__)

MULTICAST_HOPS = 16  # ours: enough for a realm-local group to cross a mesh's hops; the realm bounds it anyway


class MeshChannel:
    """One association's channel on a mesh."""

    def __init__(self, endpoint: MeshEndpoint, association: Association) -> None:
        self._endpoint = endpoint
        self._association = association

    @property
    def association(self) -> Association:
        return self._association

    @property
    def max_apdu(self) -> int:
        return self._endpoint.network.settings.max_apdu

    @property
    def last_heard(self) -> float | None:
        """When the meter's last datagram for this channel came (one datagram is one whole answer)."""
        return self._endpoint.last_heard(self._association)

    def send_apdu(self, apdu: bytes) -> None:
        self._endpoint.send_apdu(self._association, apdu)

    def prioritize(self) -> None:
        self._endpoint.prioritize(self._association)

    def close(self) -> bool:
        """Gone at once: a wrapper association has no data-link goodbye (the RLRQ/RLRE was the goodbye)."""
        self.abort()
        return True

    def abort(self) -> None:
        self._endpoint.close_channel(self._association)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: MeshEndpoint) -> None:
        self._endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._endpoint.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("mesh.socket_error", error=str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        self._endpoint.connection_lost(exc, protocol=self)


class MeshEndpoint:
    """The `MeterMedium` of one IPv6 meter network."""

    def __init__(self, *, name: str, settings: MeshSettings | None = None, broadcast_group: str | None = None,
                 broadcast_port: int = WRAPPER_PORT) -> None:
        self._name = name
        self._broadcast_group = broadcast_group
        self._broadcast_port = broadcast_port
        self._broadcast_to: tuple[str, int, int, int] | None = None  # (group, port, flow, scope) once started
        self.network = MeshNetwork(settings, name=name)
        self._listeners: dict[Association, ChannelListener] = {}
        self._heard: dict[Association, float] = {}  # open channels: when their meter last sent something
        self._unsolicited: list[PushListener] = []
        self._released: list[Callable[[Association], None]] = []
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _Protocol | None = None  # of the current socket: a stopped one's late goodbye is ignored
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tcp: TcpWrapperLinks | None = None
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
        binding = binding or MeshBinding()
        sock = sock if sock is not None else bound_socket(binding)
        if self._broadcast_group is not None:
            scope = socket.if_nametoindex(binding.interface) if binding.interface else 0
            if scope:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, scope)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, MULTICAST_HOPS)
            self._broadcast_to = (self._broadcast_group, self._broadcast_port, 0, scope)
        settings = self.network.settings
        self._tcp = TcpWrapperLinks(
            binding=MeshBinding(host=str(sock.getsockname()[0]), interface=binding.interface),
            connect_timeout_s=settings.response_timeout_s, max_apdu=settings.max_apdu,
            on_connected=lambda association: self._run(self.network.connected(association, now=self._now())),
            on_pdu=self._pdu_received,
            on_failed=lambda association, reason: self._run(self.network.fail(association, reason, now=self._now())),
        )
        protocol = _Protocol(self)
        transport, _ = await self._loop.create_datagram_endpoint(lambda: protocol, sock=sock)
        self._transport, self._protocol = transport, protocol
        self._log.info("mesh.started", local=str(sock.getsockname()[:2]))

    def broadcast(self, *, client_sap: int, apdu: bytes, done: Callable[[float | None], None]) -> bool:
        """One datagram to the mesh's multicast group; False when none is configured or the socket is down."""
        if self._broadcast_to is None or self._transport is None or self._transport.is_closing():
            return False
        if len(apdu) > self.network.settings.max_apdu:
            raise LocalProtocolError(f"a broadcast APDU of {len(apdu)} octets is longer than this mesh carries")
        datagram = encode(WrapperPdu(source=client_sap, destination=ALL_STATION_WPORT, apdu=apdu))
        self._transport.sendto(datagram, self._broadcast_to)
        self.network.counters.broadcasts += 1
        self._log.debug("mesh.broadcast", group=self._broadcast_to[0], octets=len(datagram))
        asyncio.get_running_loop().call_soon(done, 0.0)
        return True

    def stop(self) -> None:
        """Close the socket; every open channel goes down with MEDIUM_LOST."""
        if self._transport is not None:
            self._transport.close()

    @property
    def idle_timeout_s(self) -> float:
        return math.inf  # a wrapper meter keeps no data link that could time out; the relay's own limit applies

    def usable(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def congested(self) -> bool:
        return self.network.queued >= self.network.settings.max_queued

    def busy(self, association: Association) -> bool:
        return association in self._listeners

    def on_unsolicited(self, listener: PushListener) -> None:
        self._unsolicited.append(listener)

    def on_released(self, listener: Callable[[Association], None]) -> None:
        self._released.append(listener)

    def open(self, association: Association, listener: ChannelListener, *, probe: bool = False,
             background: bool = False, group: str = "") -> MeshChannel:
        """Open a channel. `probe`, `background` and `group` change nothing here: every exchange on a mesh has
        the same response timeout and competes for the same in-flight slots, round-robin."""
        if not self.usable():
            raise ChannelError(f"mesh {self._name} is not usable")
        self.network.open(association, now=self._now())
        self._listeners[association] = listener
        if self._tcp is not None and _is_tcp(association):
            self._tcp.connect(association)
        return MeshChannel(self, association)

    def last_heard(self, association: Association) -> float | None:
        return self._heard.get(association)

    def send_apdu(self, association: Association, apdu: bytes) -> None:
        """Queue an APDU on an open channel. Raises ChannelError."""
        if association not in self._listeners:
            raise ChannelError(f"channel {association} is closed")
        self._run(self.network.send_apdu(association, apdu, now=self._now()), deferred=True)

    def prioritize(self, association: Association) -> None:
        """This channel's next exchange takes the next free slot of the network."""
        self.network.prioritize(association)

    def close_channel(self, association: Association) -> None:
        """Close a channel; no event follows (but `on_released` listeners hear of it)."""
        if self._listeners.pop(association, None) is not None:
            self._heard.pop(association, None)
            self._close_tcp(association)
            self._run(self.network.close(association, now=self._now()), deferred=True)
            self._link_released(association)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        try:
            source = IpMeter(ipaddress.IPv6Address(str(addr[0])), int(str(addr[1])))
        except ValueError:  # an IPv4 peer on a dual-stack socket: not a mesh meter
            self.network.counters.malformed += 1
            return
        if debug_enabled():
            self._log.debug("mesh.rx", meter=str(source), datagram=data.hex(" "))
        self._run(self.network.receive(data, source=source, now=self._now()))

    def _pdu_received(self, association: Association, pdu: WrapperPdu) -> None:
        self._run(self.network.receive_pdu(association, pdu, now=self._now()))

    def connection_lost(self, exc: Exception | None, *, protocol: _Protocol | None = None) -> None:
        if protocol is not None and protocol is not self._protocol:
            return  # the socket of an earlier start (stopped, then started again before it said goodbye)
        self._transport, self._protocol = None, None
        self._cancel_timer()
        if self._tcp is not None:
            self._tcp.close_all()
        listeners, self._listeners = self._listeners, {}
        self._heard.clear()
        for association, listener in listeners.items():
            self.network.close(association, now=self._now())
            listener(ChannelDown(DownReason.MEDIUM_LOST))
            self._link_released(association)
        self._log.info("mesh.stopped", error=str(exc) if exc else None)

    def _close_tcp(self, association: Association) -> None:
        if self._tcp is not None and _is_tcp(association):
            self._tcp.close(association)

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _run(self, actions: list[MeshAction], *, deferred: bool = False) -> None:
        """Carry out actions; events for a caller inside open/send/close wait for the next loop turn."""
        for action in actions:
            if isinstance(action, Transmit):
                if debug_enabled():
                    self._log.debug("mesh.tx", meter=str(action.meter), pdu=action.data.hex(" "))
                if action.meter.transport is IpTransport.TCP:
                    if self._tcp is not None:
                        self._tcp.write(action.association, action.data)
                elif self._transport is not None:
                    self._transport.sendto(action.data, (str(action.meter.host), action.meter.port))
            elif isinstance(action, Deliver):
                self._deliver(action.association, action.event, deferred=deferred)
            else:
                self._hand_push(action, deferred=deferred)
        self._arm_timer()

    def _deliver(self, association: Association, event: ChannelEvent, *, deferred: bool) -> None:
        listener = self._listeners.get(association)
        if listener is None:
            return
        if isinstance(event, ChannelDown):
            del self._listeners[association]
            self._heard.pop(association, None)
            self._close_tcp(association)  # a timed-out TCP channel's late answer has nowhere to arrive
            self._log.info("mesh.channel_down", meter=str(association.meter), reason=event.reason.value)
        else:
            self._heard[association] = self._now()
        if deferred:
            assert self._loop is not None
            self._loop.call_soon(self._down_then_released, association, listener, event)
        else:
            self._down_then_released(association, listener, event)

    def _down_then_released(self, association: Association, listener: ChannelListener, event: ChannelEvent) -> None:
        listener(event)
        if isinstance(event, ChannelDown):
            self._link_released(association)

    def _link_released(self, association: Association) -> None:
        for listener in list(self._released):
            listener(association)

    def _hand_push(self, push: UnsolicitedPush, *, deferred: bool) -> None:
        for listener in self._unsolicited:
            if deferred:
                assert self._loop is not None
                self._loop.call_soon(listener, push)
            else:
                listener(push)

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
        self._run(self.network.expire(now=self._now()))


def _is_tcp(association: Association) -> bool:
    return isinstance(association.meter, IpMeter) and association.meter.transport is IpTransport.TCP



if TYPE_CHECKING:  # mypy proves the endpoint and its channels implement the relay core's interface

    def _conforms(endpoint: MeshEndpoint, channel: MeshChannel) -> tuple[MeterMedium, MeterChannel]:
        return endpoint, channel
