"""This gateway's side of a standby pair: its role, the registry it serves or follows, the hand-over.

The daemon opens and closes the meter lines; this part decides when the registry is writable,
serves it to the peer while primary, follows the peer's while standby, and orders a hand-over:
a promotion first waits (bounded) until a live primary peer has let go of the bus, and a
demotion tells the follower only once the lines are closed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from gateway.config import StandbyConfig
from gateway.registry.store import MeterRegistry
from gateway.standby.channel import load_secret
from gateway.standby.replication import ReplicationClient, ReplicationServer
from gateway.standby.role import Role, record_role, start_role
from gateway.supervisor import Supervisor

log = structlog.get_logger(__name__)



class PeerStillPrimaryError(Exception):
    """The peer is alive and still primary: on a shared medium this gateway must not take the bus."""


class StandbyPair:
    """The role and the replication of one gateway (a lone gateway: always primary, nothing to replicate)."""

    def __init__(self, *, config: StandbyConfig, registry: MeterRegistry, state_directory: Path,
                 supervisor: Supervisor) -> None:
        self.config = config
        self._registry = registry
        self._state_directory = state_directory
        self._supervisor = supervisor
        self.role = start_role(config, state_directory)
        registry.replica = self.role is not Role.PRIMARY  # a standby's registry is the primary's copy
        self.server: ReplicationServer | None = None
        self.client: ReplicationClient | None = None
        self._following: asyncio.Task[None] | None = None

    @property
    def serves_meters(self) -> bool:
        """Whether this gateway opens its meter lines now: a primary, or a standby on a medium both may use."""
        return self.role is not Role.STANDBY

    def prepare(self) -> None:
        """Read the secret before anything is opened: raises SecretFileError."""
        if not self.config.paired:
            return
        secret = load_secret(Path(self.config.secret_file))
        self.server = ReplicationServer(registry=self._registry, secret=secret, host=self.config.listen,
                                        port=self.config.port)
        self.server.serving = self.role is Role.PRIMARY
        self._registry.on_change = self.server.changed
        self.client = ReplicationClient(registry=self._registry, secret=secret, host=self.config.peer,
                                        port=self.config.peer_port, reconnect_s=self.config.reconnect_s)
        record_role(self._state_directory, self.role)  # from now on, a restart comes back standby

    async def start(self) -> None:
        """Serve while primary, follow while standby: raises OSError when the replication port cannot be bound."""
        if self.server is None:
            return
        await self.server.start()
        if self.role is not Role.PRIMARY:
            self._follow()

    async def stop(self) -> None:
        await self._stop_following()
        if self.server is not None:
            await self.server.stop()

    async def take_over(self) -> None:
        """Become primary as far as the registry goes (the daemon then opens the lines); PeerStillPrimaryError."""
        # A peer that still serves us its registry is alive and primary, and may hold the bus. Its own
        # hook demotes it at the same time (VRRP told both): wait until it has let go.
        client = self.client
        wait_s = self.config.handover_wait_s
        if client is not None and self.config.shared_medium and not await client.peer_released(within_s=wait_s):
            log.warning("standby.peer_still_primary", peer=f"{client.host}:{client.port}", waited_s=wait_s,
                        effect="promotion refused: two masters on the line")
            raise PeerStillPrimaryError(f"the peer {client.host}:{client.port} is alive and still primary after "
                                        f"{wait_s:g} s: demote it first (it may hold the meter line)")
        await self._stop_following()
        self._registry.replica = False
        self.role = Role.PRIMARY
        record_role(self._state_directory, self.role)
        if self.server is not None:
            self.server.serving = True

    def step_down(self) -> None:
        """The role changes first (the daemon then closes the lines); ``follow`` once they are closed."""
        self.role = Role.STANDBY if self.config.shared_medium else Role.ACTIVE_STANDBY
        record_role(self._state_directory, self.role)

    def follow(self) -> None:
        """The lines are closed: stop serving the registry (the follower may take over) and follow the peer's."""
        if self.server is not None:
            self.server.serving = False
            self.server.changed()
        self._registry.replica = True
        self._follow()

    def _follow(self) -> None:
        if self.client is not None and self._following is None:
            self._following = asyncio.create_task(
                self._supervisor.supervise(self.client.run, "replication-follow"), name="replication-follow")

    async def _stop_following(self) -> None:
        task, self._following = self._following, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
