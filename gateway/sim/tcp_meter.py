"""A simulated IP meter that listens only on TCP: the wrapper as a stream, one association per connection.

When a connection closes, the associations opened on it end (the meter releases them), as
IEC 62056-4-7 meters do when the transport under an application association goes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import cast

from gateway.codec.wrapper import WRAPPER_PORT, WrapperDecoder, WrapperError, encode
from gateway.sim.bus import ApduServer


class _MeterConnection(asyncio.Protocol):
    def __init__(self, meter: SimTcpMeter) -> None:
        self._meter = meter
        self._decoder = WrapperDecoder()
        self._clients: set[tuple[int, int]] = set()  # (logical device, client SAP) seen on this connection
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._meter.connections += 1

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        try:
            pdus = self._decoder.feed(data)
        except WrapperError:
            self._transport.abort()
            return
        for pdu in pdus:
            device = self._meter.devices.get(pdu.destination)
            if device is None:
                continue
            self._meter.requests += 1
            self._clients.add((pdu.destination, pdu.source))
            if self._meter.silent:
                continue
            answer = device.handle(client_sap=pdu.source, apdu=pdu.apdu)
            if answer is not None:
                self._transport.write(encode(pdu.reply(answer)))

    def connection_lost(self, exc: Exception | None) -> None:
        for logical_device, client_sap in self._clients:
            self._meter.devices[logical_device].release(client_sap=client_sap)
        self._meter.connections -= 1
        self._meter.closed.set()


class SimTcpMeter:
    """One simulated meter on TCP; `silent` makes it take requests and never answer (a stuck meter)."""

    def __init__(self, *, devices: Mapping[int, ApduServer]) -> None:
        self.devices = dict(devices)
        self.requests = 0
        self.connections = 0  # open now
        self.silent = False
        self.closed = asyncio.Event()  # set whenever a connection closes
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self, host: str = "::1", port: int = WRAPPER_PORT) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _MeterConnection(self), host, port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
