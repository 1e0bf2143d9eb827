"""Dial-out: the gateway connects to its HES (cellular backhaul behind carrier NAT) and serves
wrapper traffic on that connection exactly as if the HES had connected in.

The connection is kept: TCP keepalive and TCP_USER_TIMEOUT notice a dead path (see limits.py),
and a lost connection is dialled again with a capped exponential back-off.
"""

from __future__ import annotations

import asyncio
import functools

import structlog

from gateway.config import DialOutConfig
from gateway.wan.connection import HesConnection
from gateway.wan.server import WanServer

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0


class _DialledConnection(HesConnection):
    """A HES connection we opened; tells its dialler when it ends."""

    def __init__(self, *, server: WanServer, ended: asyncio.Event) -> None:
        super().__init__(server=server, inbound=False)
        self._ended = ended

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._ended.set()


class DialOut:
    """Keeps one outbound connection to a HES open."""

    def __init__(self, *, config: DialOutConfig, server: WanServer) -> None:
        self.config = config
        self._server = server
        self.connected = False
        self.dials = 0
        self._log = log.bind(hes=f"{config.host}:{config.port}")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self.config.reconnect_min_s
        while True:
            ended = asyncio.Event()
            self.dials += 1
            try:
                connection = functools.partial(_DialledConnection, server=self._server, ended=ended)
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await loop.create_connection(connection, self.config.host, self.config.port)
            except (OSError, TimeoutError) as exc:
                self._log.warning("dialout.failed", error=str(exc) or type(exc).__name__, retry_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.reconnect_max_s)
                continue
            self.connected = True
            self._log.info("dialout.connected")
            backoff = self.config.reconnect_min_s
            await ended.wait()
            self.connected = False
            self._log.info("dialout.lost", retry_s=backoff)
            await asyncio.sleep(backoff)  # a HES that hangs up at once is not hammered
