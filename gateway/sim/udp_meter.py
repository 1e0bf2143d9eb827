"""A simulated IPv6 meter: COSEM logical devices answering IEC 62056-4-7 wrapper datagrams on UDP.

The meter owns one UDP socket (its own address, port 4059 by default). A datagram's destination
wPort picks the logical device, its source wPort is the client SAP; the answer goes back as one
datagram with the wPorts swapped. Datagrams for an unknown wPort, or malformed ones, are
counted and dropped, as a real meter does. `push` sends a meter-initiated APDU.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from gateway.codec.datagram import decode_datagram
from gateway.codec.wrapper import WRAPPER_PORT, WrapperError, WrapperPdu, encode
from gateway.sim.bus import ApduServer


@dataclass(slots=True)
class UdpMeterCounters:
    requests: int = 0
    answers: int = 0
    pushes: int = 0
    malformed: int = 0
    unknown_wport: int = 0


class SimUdpMeter(asyncio.DatagramProtocol):
    """One simulated meter on an IP network."""

    def __init__(self, *, devices: Mapping[int, ApduServer]) -> None:
        self._devices = dict(devices)  # logical device (wPort) -> its application layer
        self.counters = UdpMeterCounters()
        self._transport: asyncio.DatagramTransport | None = None

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

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()

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
