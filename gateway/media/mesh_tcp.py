"""Wrapper connections to IP meters that listen only on TCP: one connection per association.

Each connection carries the wrapper as a stream (IEC 62056-4-7); PDUs are cut by the codec's
incremental decoder and handed to the owner with their association. The owner (`MeshEndpoint`)
keeps the exchange rules in `MeshNetwork`: these connections only move bytes and report
connected / failed. A connection we close reports nothing.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import cast

from gateway.codec.wrapper import WrapperDecoder, WrapperError, WrapperPdu
from gateway.media.channel import Association, DownReason, IpMeter
from gateway.media.ipsocket import MeshBinding, bound_socket

Connected = Callable[[Association], None]
PduReceived = Callable[[Association, WrapperPdu], None]
Failed = Callable[[Association, DownReason], None]


class _Connection(asyncio.Protocol):
    def __init__(self, links: TcpWrapperLinks, association: Association, *, max_apdu: int) -> None:
        self._links = links
        self._association = association
        self._decoder = WrapperDecoder(max_apdu=max_apdu)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            pdus = self._decoder.feed(data)
        except WrapperError:
            self._links.failed(self._association, DownReason.PROTOCOL_ERROR, connection=self)
            return
        for pdu in pdus:
            self._links.pdu_received(self._association, pdu, connection=self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._links.failed(self._association, DownReason.MEDIUM_LOST, connection=self)


class TcpWrapperLinks:
    """The TCP wrapper connections of one meter network, by association."""

    def __init__(self, *, binding: MeshBinding, connect_timeout_s: float, max_apdu: int,
                 on_connected: Connected, on_pdu: PduReceived, on_failed: Failed) -> None:
        self._binding = binding
        self._connect_timeout_s = connect_timeout_s
        self._max_apdu = max_apdu
        self._on_connected, self._on_pdu, self._on_failed = on_connected, on_pdu, on_failed
        self._connecting: dict[Association, asyncio.Task[None]] = {}
        self._connections: dict[Association, _Connection] = {}

    def connect(self, association: Association) -> None:
        """Start connecting; `on_connected` or `on_failed` follows."""
        self._connecting[association] = asyncio.create_task(self._connect(association), name="mesh.tcp.connect")

    async def _connect(self, association: Association) -> None:
        meter = association.meter
        assert isinstance(meter, IpMeter)
        loop = asyncio.get_running_loop()
        connection = _Connection(self, association, max_apdu=self._max_apdu)
        sock = bound_socket(self._binding, kind=socket.SOCK_STREAM, port=0)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await loop.sock_connect(sock, (str(meter.host), meter.port))
            await loop.create_connection(lambda: connection, sock=sock)
        except (OSError, TimeoutError):
            sock.close()
            self._connecting.pop(association, None)
            self._on_failed(association, DownReason.REFUSED)
            return
        except BaseException:  # cancelled by close(): nobody waits for a report
            sock.close()
            raise
        self._connecting.pop(association, None)
        self._connections[association] = connection
        self._on_connected(association)

    def write(self, association: Association, data: bytes) -> None:
        connection = self._connections.get(association)
        if connection is not None and connection.transport is not None:
            connection.transport.write(data)

    def close(self, association: Association) -> None:
        """Close quietly: no report follows."""
        task = self._connecting.pop(association, None)
        if task is not None:
            task.cancel()
        connection = self._connections.pop(association, None)
        if connection is not None and connection.transport is not None:
            connection.transport.close()

    def close_all(self) -> None:
        for association in [*self._connecting, *self._connections]:
            self.close(association)

    def pdu_received(self, association: Association, pdu: WrapperPdu, *, connection: _Connection) -> None:
        if self._connections.get(association) is connection:
            self._on_pdu(association, pdu)

    def failed(self, association: Association, reason: DownReason, *, connection: _Connection) -> None:
        if self._connections.get(association) is connection:
            self.close(association)
            self._on_failed(association, reason)
