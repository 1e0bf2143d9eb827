"""Registry replication: the primary serves snapshots of its registry, the standby follows and applies them.

The standby dials its peer. After the handshake (channel.py) the primary sends a full snapshot at
once, and again after every committed change (changes that come while one is being sent share the
next one). A snapshot on every connection is the catch-up: whatever happened while either side
was down, the standby holds the primary's registry again within one round trip. Each snapshot
carries (origin, sequence): the primary's run and its count of committed changes, shown by
`status` on both sides with the time of the change. A standby acknowledges each one it applied.

A gateway that is primary serves and never applies; a standby applies and refuses to serve (the
registry refuses writes of its own while it is a replica): conflicting copies cannot meet.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.registry.snapshot import SnapshotError, decode, encode
from gateway.registry.store import MeterRegistry, RegistryError
from gateway.standby.channel import (
    HANDSHAKE_LINE_BYTES,
    Channel,
    ChannelError,
    client_handshake,
    server_handshake,
)

log = structlog.get_logger(__name__)
CONNECT_TIMEOUT_S = 3.0
COALESCE_S = 0.2  # at most five snapshots a second: a burst of changes (meters coming online) shares one
MAX_CONNECTIONS = 4  # replication connections at once (handshakes included): one standby, and room to redial
HEARTBEAT_S = 1.0  # the primary speaks at least this often...
SILENCE_S = 3.0  # ...and a standby that hears nothing for this long counts it gone (a host that lost power)


class ReplicationRefusedError(Exception):
    """The peer cannot serve us (it is not primary), or we cannot take its registry (we are primary)."""


@dataclass
class Follower:
    peer: str
    acknowledged: int | None = None
    acknowledged_at: float | None = None


class ReplicationServer:
    """The primary's side: a listener that serves its registry to the standby while this gateway is primary."""

    def __init__(self, *, registry: MeterRegistry, secret: bytes, host: str, port: int) -> None:
        self._registry = registry
        self._secret = secret
        self.host, self.port = host, port
        self.serving = False  # true while primary
        self.origin = secrets.token_hex(4)  # this run of the gateway: sequences restart with it
        self.changed_at: float | None = None
        self.followers: dict[int, Follower] = {}
        self.refused = 0  # connections that failed the handshake (wrong secret, not our protocol)
        self.refusal = asyncio.Event()  # set at each refused connection
        self.acknowledged = asyncio.Event()  # set at each snapshot a follower said it applied
        self._wakes: set[asyncio.Event] = set()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=HANDSHAKE_LINE_BYTES)
        log.info("replication.listening", address=f"{self.host}:{self.port}")

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def stop(self) -> None:
        """Stop listening and drop every follower (a stopped primary serves nobody)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        connections, self._connections = list(self._connections), set()
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

    def changed(self) -> None:
        """The registry committed a change, or this gateway's role changed: every follower hears of it."""
        self.changed_at = time.time()
        for wake in self._wakes:
            wake.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= MAX_CONNECTIONS:  # a pair has one follower; this is someone else
            self.refused += 1
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve_follower(reader, writer)
        except asyncio.CancelledError:
            # stop() ends the connection here: a handler task ending cancelled makes Python 3.11's
            # start_server log "Unhandled exception in client_connected_cb"; nobody awaits it but stop()
            pass
        finally:
            self._connections.discard(task)
            writer.close()  # also when cancelled mid-handshake

    async def _serve_follower(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername"))
        try:
            channel = await server_handshake(reader, writer, secret=self._secret)
        except (ChannelError, TimeoutError, ConnectionError) as exc:
            self.refused += 1
            self.refusal.set()
            log.warning("replication.peer_refused", peer=peer, reason=str(exc) or type(exc).__name__)
            writer.close()
            return
        wake = asyncio.Event()
        self._wakes.add(wake)
        follower = Follower(peer=peer)
        self.followers[id(follower)] = follower
        acknowledgements = asyncio.create_task(self._acknowledgements(channel, follower))
        try:
            await self._feed(channel, follower, wake, acknowledgements)
        except (ChannelError, ConnectionError) as exc:
            log.info("replication.follower_gone", peer=peer, reason=str(exc) or type(exc).__name__)
        finally:
            acknowledgements.cancel()
            await asyncio.wait([acknowledgements])  # its own end, whatever it was; our cancellation still reaches us
            self._wakes.discard(wake)
            self.followers.pop(id(follower), None)
            await channel.close()

    async def _feed(self, channel: Channel, follower: Follower, wake: asyncio.Event,
                    acknowledgements: asyncio.Task[None]) -> None:
        log.info("replication.follower", peer=follower.peer)
        while True:
            if not self.serving:
                await channel.send({"type": "refused", "reason": "this gateway is not primary"})
                return
            wake.clear()
            encoding_started = time.monotonic()
            snapshot = {"type": "snapshot", "origin": self.origin, "sequence": self._registry.changes,
                        "changed_at": self.changed_at, "rows": encode(self._registry)}
            await channel.send(snapshot)
            sent_at = time.monotonic()
            # A large registry takes a while to encode: keep that under a tenth of the loop's time in a burst
            pause = max(COALESCE_S, 10 * (sent_at - encoding_started))
            while not wake.is_set():
                waiting = asyncio.ensure_future(wake.wait())
                try:
                    await asyncio.wait({waiting, acknowledgements}, timeout=HEARTBEAT_S,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiting.cancel()
                if acknowledgements.done():
                    acknowledgements.result()  # raises what ended it
                    return
                if not wake.is_set():
                    await channel.send({"type": "heartbeat"})
            await asyncio.sleep(max(0.0, sent_at + pause - time.monotonic()))

    async def _acknowledgements(self, channel: Channel, follower: Follower) -> None:
        while True:
            message = await channel.receive()
            if message.get("type") == "applied" and type(message.get("sequence")) is int:
                follower.acknowledged, follower.acknowledged_at = message["sequence"], time.time()
                self.acknowledged.set()

    async def replicated(self, sequence: int, *, within_s: float) -> bool:
        """Whether a follower acknowledged change ``sequence`` (or a later one) within ``within_s``; False alone."""
        try:
            async with asyncio.timeout(within_s):
                while self.followers:
                    if any((f.acknowledged or 0) >= sequence for f in self.followers.values()):
                        return True
                    self.acknowledged.clear()
                    await self.acknowledged.wait()
        except TimeoutError:
            pass
        return False

    def status(self) -> list[dict[str, Any]]:
        return [{"peer": f.peer, "acknowledged": f.acknowledged, "acknowledged_at": f.acknowledged_at}
                for f in self.followers.values()]


@dataclass
class ReplicaState:
    """What the standby last applied, for `status`."""

    connected: bool = False
    origin: str | None = None
    sequence: int | None = None
    changed_at: float | None = None  # when the primary committed that change
    applied_at: float | None = None
    meters: int = 0
    failures: int = 0
    last_error: str | None = None


class ReplicationClient:
    """The standby's side: follow the primary, apply each snapshot, acknowledge it; redial after a failure."""

    def __init__(self, *, registry: MeterRegistry, secret: bytes, host: str, port: int,
                 reconnect_s: float, silence_s: float = SILENCE_S) -> None:
        self._registry = registry
        self._silence_s = silence_s
        self._secret = secret
        self.host, self.port = host, port
        self._reconnect_s = reconnect_s
        self.state = ReplicaState()
        self.applied = asyncio.Event()  # set after each snapshot applied (for whoever waits for one)
        self.failed = asyncio.Event()  # set after each failure to follow

    async def run(self) -> None:
        """Until cancelled (on promotion)."""
        try:
            while True:
                try:
                    await self._follow()
                except (ChannelError, ReplicationRefusedError, SnapshotError, RegistryError, TimeoutError,
                        OSError) as exc:
                    reason = str(exc) or type(exc).__name__
                    if reason != self.state.last_error:  # once per distinct failure, not once a second
                        log.warning("replication.follow_failed", peer=f"{self.host}:{self.port}", reason=reason)
                    self.state.failures += 1
                    self.state.last_error = reason
                    self.failed.set()
                self.state.connected = False
                await asyncio.sleep(self._reconnect_s)
        finally:
            self.state.connected = False

    async def _follow(self) -> None:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=HANDSHAKE_LINE_BYTES)
        try:
            channel = await client_handshake(reader, writer, secret=self._secret)
        except BaseException:
            writer.close()
            raise
        try:
            self.state.connected = True
            log.info("replication.following", peer=f"{self.host}:{self.port}")
            while True:
                try:
                    async with asyncio.timeout(self._silence_s):
                        message = await channel.receive()
                except TimeoutError:
                    raise ChannelError(f"the primary said nothing for {self._silence_s:.1f} s") from None
                await self._apply(message, channel)
        finally:
            await channel.close()

    async def peer_released(self, *, within_s: float) -> bool:
        """Wait until the primary we follow stops serving (demoted, gone or silent); False if it still serves."""
        if not self.state.connected:
            return True
        log.info("replication.waiting_for_peer_release", peer=f"{self.host}:{self.port}", within_s=within_s)
        self.failed.clear()
        try:
            async with asyncio.timeout(within_s):
                await self.failed.wait()
        except TimeoutError:
            return False
        return True

    async def _apply(self, message: dict[str, Any], channel: Channel) -> None:
        if message.get("type") == "heartbeat":
            return
        if message.get("type") == "refused":
            raise ReplicationRefusedError(f"the peer refused: {str(message.get('reason'))[:80]}")
        if message.get("type") != "snapshot":
            raise ChannelError(f"unexpected message {str(message.get('type'))[:40]!r}")
        if not self._registry.replica:
            raise ReplicationRefusedError("this gateway is primary: it does not take the peer's registry")
        rows = decode(message.get("rows"))
        sequence, origin = message.get("sequence"), message.get("origin")
        if type(sequence) is not int or not isinstance(origin, str):
            raise SnapshotError("a snapshot without origin and sequence")
        self._registry.apply_snapshot(rows)
        state = self.state
        state.origin, state.sequence, state.applied_at = origin, sequence, time.time()
        changed_at = message.get("changed_at")
        state.changed_at = float(changed_at) if isinstance(changed_at, int | float) else None
        state.meters = len(self._registry)
        state.last_error = None
        log.info("replication.applied", origin=origin, sequence=sequence, meters=state.meters)
        self.applied.set()
        await channel.send({"type": "applied", "sequence": sequence})
