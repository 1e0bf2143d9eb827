"""A simulated IPv6 meter: COSEM logical devices answering IEC 62056-4-7 wrapper datagrams on UDP.

The meter owns one UDP socket (its own address, port 4059 by default). A datagram's destination
wPort picks the logical device, its source wPort is the client SAP; the answer goes back as one
datagram with the wPorts swapped. Datagrams for an unknown wPort, or malformed ones, are
counted and dropped, as a real meter does. `push` sends a meter-initiated APDU.

A datagram to the all-station wPort 0x7F is a broadcast: every logical device that takes
broadcasts runs it, nobody answers. A meter hears broadcasts sent to a multicast group it joined
(`join`: a second socket bound to the group, as a node subscribes to ff03::1).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from gateway.codec.datagram import decode_datagram
from gateway.codec.wrapper import ALL_STATION_WPORT, WRAPPER_PORT, WrapperError, WrapperPdu, encode
from gateway.sim.bus import ApduServer, BroadcastServer


@dataclass(slots=True)
class UdpMeterCounters:
    requests: int = 0
    answers: int = 0
    pushes: int = 0
    malformed: int = 0
    unknown_wport: int = 0
    broadcasts: int = 0


def multicast_socket(group: str, *, interface: str, port: int = WRAPPER_PORT) -> socket.socket:
    """A UDP socket bound to ``group`` that joined it on ``interface`` (make it in the meter's namespace)."""
    scope = socket.if_nametoindex(interface)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # every meter on the host hears the group
        sock.bind((group, port, 0, scope))
        membership = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", scope)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, membership)
    except BaseException:
        sock.close()
        raise
    return sock


class _GroupListener(asyncio.DatagramProtocol):
    def __init__(self, meter: SimUdpMeter) -> None:
        self._meter = meter

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._meter.group_datagram_received(data)


class SimUdpMeter(asyncio.DatagramProtocol):
    """One simulated meter on an IP network."""

    def __init__(self, *, devices: Mapping[int, ApduServer]) -> None:
        self._devices = dict(devices)  # logical device (wPort) -> its application layer
        self.counters = UdpMeterCounters()
        self._transport: asyncio.DatagramTransport | None = None
        self._groups: list[asyncio.BaseTransport] = []

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        assert self._transport is not None, "not started"
        host, port = self._transport.get_extra_info("sockname")[:2]
        return host, port

    async def start(self, host: str = "::1", port: int = WRAPPER_PORT, *, sock: socket.socket | None = None) -> None:
        """Bind and serve (or serve `sock`, e.g. one made inside a network namespace)."""
        loop = asyncio.get_running_loop()
        if sock is None:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.bind((host, port))
        sock.setblocking(False)
        self._transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)

    async def join(self, sock: socket.socket) -> None:
        """Also hear broadcasts on ``sock`` (from `multicast_socket`)."""
        sock.setblocking(False)
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: _GroupListener(self),
                                                                                 sock=sock)
        self._groups.append(transport)

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
        for transport in self._groups:
            transport.close()
        self._groups.clear()

    def group_datagram_received(self, data: bytes) -> None:
        """A datagram to a group: only broadcasts are taken there (a request would have nobody to answer)."""
        try:
            pdu = decode_datagram(data)
        except WrapperError:
            self.counters.malformed += 1
            return
        if pdu.destination != ALL_STATION_WPORT:
            self.counters.unknown_wport += 1
            return
        self._broadcast(pdu)

    def _broadcast(self, pdu: WrapperPdu) -> None:
        self.counters.broadcasts += 1
        for device in self._devices.values():
            if isinstance(device, BroadcastServer):
                device.handle_broadcast(client_sap=pdu.source, apdu=pdu.apdu)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # 3.11's selector transport is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        try:
            pdu = decode_datagram(data)
        except WrapperError:
            self.counters.malformed += 1
            return
        if pdu.destination == ALL_STATION_WPORT:
            self._broadcast(pdu)
            return
        device = self._devices.get(pdu.destination)
        if device is None:
            self.counters.unknown_wport += 1
            return
        self.counters.requests += 1
        answer = device.handle(client_sap=pdu.source, apdu=pdu.apdu)
        if answer is not None and self._transport is not None:
            self.counters.answers += 1
            self._transport.sendto(encode(pdu.reply(answer)), addr)

    def push(self, *, to: tuple[str, int], client_sap: int, apdu: bytes, logical_device: int = 1) -> None:
        """Send a meter-initiated APDU (data- or event-notification) to `to`."""
        assert self._transport is not None, "not started"
        self.counters.pushes += 1
        self._transport.sendto(encode(WrapperPdu(source=logical_device, destination=client_sap, apdu=apdu)), to)
