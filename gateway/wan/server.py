"""The WAN listener: HES connections carrying IEC 62056-4-7 wrapper PDUs over TCP.

One connection is one asyncio Protocol. Bytes are decoded as they arrive and handed to the
router synchronously, so a GET costs no task switch on its way to the meter line. A peer that
breaks the wrapper protocol, or that stops reading its answers, loses its own connection only.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol

import structlog

from gateway.codec.wrapper import WrapperDecoder, WrapperError, WrapperPdu, encode
from gateway.config import WanConfig

log = structlog.get_logger(__name__)

MAX_UNSENT_BYTES = 1 << 20  # answers a HES leaves unread before we cut it off


class PduSink(Protocol):
    """Where decoded PDUs go (the router)."""

    def pdu_from_hes(self, owner: HesConnection, pdu: WrapperPdu) -> None: ...

    def hes_disconnected(self, owner: HesConnection) -> None: ...


class HesConnection(asyncio.Protocol):
    """One HES TCP connection."""

    def __init__(self, *, server: WanServer) -> None:
        self._server = server
        self._decoder = WrapperDecoder(max_apdu=server.config.max_apdu)
        self._transport: asyncio.Transport | None = None
        self.peer = "?"
        self.pdus_in = 0
        self.pdus_out = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"[{peer[0]}]:{peer[1]}" if peer and ":" in peer[0] else (f"{peer[0]}:{peer[1]}" if peer else "?")
        if len(self._server.connections) >= self._server.config.max_connections:
            log.warning("wan.refused", peer=self.peer, reason="connection limit")
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._server.connections.add(self)
        log.info("wan.connected", peer=self.peer)

    def data_received(self, data: bytes) -> None:
        try:
            pdus = self._decoder.feed(data)
        except WrapperError as exc:
            log.warning("wan.protocol_error", peer=self.peer, error=str(exc))
            self.close()
            return
        self.pdus_in += len(pdus)
        self._server.pdus_in += len(pdus)
        for pdu in pdus:
            self._server.sink.pdu_from_hes(self, pdu)

    def send(self, pdu: WrapperPdu) -> None:
        """Send a PDU to this HES (dropped if the connection is gone)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(encode(pdu))
        self.pdus_out += 1
        self._server.pdus_out += 1
        if transport.get_write_buffer_size() > MAX_UNSENT_BYTES:
            log.warning("wan.not_reading", peer=self.peer, unsent=transport.get_write_buffer_size())
            self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return
        self._transport = None
        if self in self._server.connections:
            self._server.connections.discard(self)
            log.info("wan.disconnected", peer=self.peer, pdus_in=self.pdus_in, pdus_out=self.pdus_out)
            self._server.sink.hes_disconnected(self)


class WanServer:
    """Listens for HES connections on every configured address."""

    def __init__(self, *, config: WanConfig, sink: PduSink) -> None:
        self.config = config
        self.sink = sink
        self.connections: set[HesConnection] = set()
        self.pdus_in = 0
        self.pdus_out = 0
        self._servers: list[asyncio.Server] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for host in self.config.listen:
            server = await loop.create_server(
                lambda: HesConnection(server=self), host=host, port=self.config.port, reuse_address=True
            )
            self._servers.append(server)
        log.info("wan.listening", addresses=[f"{a}" for a in self.addresses])

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) pairs (the real port when configured as 0)."""
        out = []
        for server in self._servers:
            for sock in server.sockets:
                name = sock.getsockname()
                out.append((str(name[0]), int(name[1])))
        return out

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            connection.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
