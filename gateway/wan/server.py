"""The WAN listener: HES connections carrying IEC 62056-4-7 wrapper PDUs over TCP or TLS.

Admission happens before the first read: a peer outside the allow-list, or over the total or
per-address connection limit, is dropped at once. With TLS, the handshake (client certificate
required) runs before a HesConnection sees any byte; a failed one never reaches the router.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import Counter

import structlog

from gateway.capture.tap import FrameTap
from gateway.config import WanConfig
from gateway.loglimit import LogLimiter
from gateway.wan.connection import MAX_UNSENT_BYTES, HesConnection, PduSink
from gateway.wan.limits import AllowList
from gateway.wan.tls import refusal_reason, server_context

__all__ = ["MAX_UNSENT_BYTES", "HesConnection", "PduSink", "WanListenError", "WanServer"]

log = structlog.get_logger(__name__)

# Why a connection was refused (WanServer.refused counts these).
REFUSED_NOT_ALLOWED = "not-allowed"
REFUSED_CONNECTION_LIMIT = "connection-limit"
REFUSED_PEER_LIMIT = "peer-connection-limit"
REFUSED_TLS = "tls-handshake"


class WanListenError(Exception):
    """An address to listen on cannot be bound (taken, or not an address of this host)."""


class WanServer:
    """Listens for HES connections on every configured address."""

    def __init__(self, *, config: WanConfig, sink: PduSink, tap: FrameTap | None = None) -> None:
        self.config = config
        self.sink = sink
        self.tap = tap or FrameTap()  # frame capture: every PDU in and out, while a capture runs
        self.allow = AllowList(config.allow)
        self.tls: ssl.SSLContext | None = None  # loaded by start(): a bad key file stops the daemon
        self.connections: set[HesConnection] = set()
        self.per_peer: Counter[str] = Counter()  # open connections by HES address
        self.refused: Counter[str] = Counter()  # by REFUSED_* reason
        self.cut_off: Counter[str] = Counter()  # by connection.CUT_* reason
        self.pdus_in = 0
        self.pdus_out = 0
        self.peer_log = LogLimiter()  # every wan.* line a peer triggers: per HES address and event, and in all
        self._servers: list[asyncio.Server] = []
        self._handshakes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Load TLS files (raises TlsConfigError) and listen (raises WanListenError)."""
        self.tls = server_context(self.config)
        loop = asyncio.get_running_loop()
        port = self.config.port
        for host in self.config.listen:
            try:
                server = await loop.create_server(
                    lambda: HesConnection(server=self), host=host, port=port, reuse_address=True,
                    backlog=max(128, self.config.max_connections),
                )
            except OSError as exc:
                where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                reason = os.strerror(exc.errno) if exc.errno else str(exc)  # asyncio's text repeats the address
                raise WanListenError(f"cannot listen on {where}: {reason}") from None
            self._servers.append(server)
            port = port or server.sockets[0].getsockname()[1]  # port 0: every address on the one chosen
        log.info("wan.listening", addresses=[f"{host}:{port}" for host, port in self.addresses],
                 tls=self.tls is not None, allow=list(self.config.allow) or "any")

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) pairs (the real port when configured as 0)."""
        out = []
        for server in self._servers:
            for sock in server.sockets:
                name = sock.getsockname()
                out.append((str(name[0]), int(name[1])))
        return out

    # -- admission ----------------------------------------------------------------------------

    def admit(self, connection: HesConnection) -> str | None:
        """Count a new inbound connection in, or say why it is refused."""
        address = connection.peer_address
        if not self.allow.allows(address):
            return REFUSED_NOT_ALLOWED
        if len(self.connections) >= self.config.max_connections:
            return REFUSED_CONNECTION_LIMIT
        if self.per_peer[address] >= self.config.max_connections_per_peer:
            return REFUSED_PEER_LIMIT
        self.adopt(connection)
        return None

    def adopt(self, connection: HesConnection) -> None:
        """Count a connection in without checks (one the gateway opened itself)."""
        self.connections.add(connection)
        self.per_peer[connection.peer_address] += 1

    def release(self, connection: HesConnection) -> None:
        """A counted connection ended."""
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        address = connection.peer_address
        self.per_peer[address] -= 1
        if self.per_peer[address] <= 0:
            del self.per_peer[address]

    # -- TLS ------------------------------------------------------------------------------------

    def start_tls(self, connection: HesConnection, transport: asyncio.Transport) -> None:
        """Run the server handshake for an admitted connection."""
        task = asyncio.create_task(self._handshake(connection, transport), name=f"tls-{connection.peer}")
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, connection: HesConnection, transport: asyncio.Transport) -> None:
        assert self.tls is not None
        loop = asyncio.get_running_loop()
        try:
            tls_transport = await loop.start_tls(
                transport, connection, self.tls, server_side=True,
                ssl_handshake_timeout=self.config.pdu_timeout_s,  # a dribbled handshake is a slowloris too
                ssl_shutdown_timeout=self.config.pdu_timeout_s,
            )
        except asyncio.CancelledError:
            connection.tls_refused("gateway stopping")
            raise
        except (OSError, EOFError, ValueError) as exc:  # ssl.SSLError is an OSError
            self.refused[REFUSED_TLS] += 1
            connection.tls_refused(refusal_reason(exc))
            return
        if tls_transport is None:  # closed cleanly mid-handshake (asyncio hands back no transport)
            self.refused[REFUSED_TLS] += 1
            connection.tls_refused(refusal_reason(None))
            return
        connection.tls_ready(tls_transport)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._handshakes):
            task.cancel()
        for connection in list(self.connections):
            connection.close()
        if self._handshakes:
            await asyncio.gather(*self._handshakes, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
