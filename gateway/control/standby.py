"""Control commands of a gateway pair: `health` (keepalived's check), `role` (its notify hook), status's role part."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Mapping
from typing import Any, Protocol

from gateway.config import GatewayConfig
from gateway.control.server import CommandError, Handler, Progress, text
from gateway.link.line import MeterLine
from gateway.registry.store import MeterRegistry
from gateway.standby.pair import PeerStillPrimaryError, StandbyPair
from gateway.standby.role import Role
from gateway.wan.server import WanServer


class StandbyNode(Protocol):
    """What the health and role commands need of the running gateway."""

    @property
    def config(self) -> GatewayConfig: ...

    @property
    def role(self) -> Role: ...

    @property
    def pair(self) -> StandbyPair: ...

    @property
    def serves_meters(self) -> bool: ...

    @property
    def wan(self) -> WanServer: ...

    @property
    def database(self) -> sqlite3.Connection: ...

    @property
    def registry(self) -> MeterRegistry: ...

    @property
    def lines(self) -> Mapping[str, MeterLine]: ...

    @property
    def line_workers(self) -> Mapping[str, asyncio.Task[None]]: ...

    @property
    def line_down_since(self) -> Mapping[str, float]: ...

    async def promote(self) -> Role: ...

    async def demote(self) -> Role: ...


REPLICATED_TIMEOUT_S = 2.0  # a registration waits this long at most for the standby's acknowledgement


def _age(at: float | None) -> float | None:
    return None if at is None else round(max(0.0, time.time() - at), 1)


class StandbyCommands:
    """Health, role changes and the role's status, for one running gateway."""

    def __init__(self, gateway: StandbyNode) -> None:
        self.gateway = gateway

    def handlers(self) -> dict[str, Handler]:
        return {"health": self.health, "role": self.role}

    async def health(self, request: Mapping[str, Any], progress: Progress) -> dict[str, Any]:
        """Is this gateway up and serving? Each check named, so that `health --verbose` says which one failed."""
        gw = self.gateway
        checks: dict[str, bool] = {"control": True, "wan": bool(gw.wan.addresses)}
        try:
            gw.database.execute("SELECT count(*) FROM meters").fetchone()
            checks["registry"] = True
        except sqlite3.Error:
            checks["registry"] = False
        if gw.serves_meters:  # every line open, or being reopened (udev, or every second) and not for too long
            limit = gw.config.standby.unhealthy_line_down_s
            now = time.monotonic()
            for name, line in gw.lines.items():
                worker = gw.line_workers.get(name)
                down_for = now - gw.line_down_since.get(name, now)
                checks[f"line:{name}"] = line.is_open or (
                    worker is not None and not worker.done() and (limit == 0 or down_for < limit))
        return {"healthy": all(checks.values()), "role": gw.role.value, "checks": checks}

    async def role(self, request: Mapping[str, Any], progress: Progress) -> dict[str, Any]:
        action = text(request, "action", default="show")
        gw = self.gateway
        if action not in ("show", "promote", "demote"):
            raise CommandError(f"unknown role action {action[:20]!r}: show, promote or demote")
        if action != "show" and not gw.config.standby.paired:
            raise CommandError("this gateway has no [standby] table: it is alone, and always primary")
        before = gw.role
        if action == "promote":
            try:
                await gw.promote()
            except PeerStillPrimaryError as exc:
                raise CommandError(str(exc)) from None
        elif action == "demote":
            await gw.demote()
        return {**self.snapshot(), "changed": gw.role is not before, "previous": before.value}

    async def replicated(self) -> dict[str, Any]:
        """After a registration: wait (bounded) until the standby has it, so an acknowledged meter is on both."""
        server = self.gateway.pair.server
        if server is None or not server.serving:
            return {}
        return {"replicated": await server.replicated(self.gateway.registry.changes, within_s=REPLICATED_TIMEOUT_S)}

    def snapshot(self) -> dict[str, Any]:
        """The role part of `status`: role, peer, the last replicated change and its age."""
        gw = self.gateway
        standby = gw.config.standby
        result: dict[str, Any] = {"role": gw.role.value, "paired": standby.paired}
        if not standby.paired:
            return result
        result |= {"peer": f"{standby.peer}:{standby.peer_port}", "hand_back": standby.hand_back,
                   "serves_meters": gw.serves_meters}
        server, client = gw.pair.server, gw.pair.client
        if server is not None and server.serving:
            result["replication"] = {
                "side": "primary", "origin": server.origin, "sequence": gw.registry.changes,
                "changed_at": server.changed_at, "change_age_s": _age(server.changed_at),
                "followers": server.status(), "refused": server.refused}
        elif client is not None:
            state = client.state
            result["replication"] = {
                "side": "standby", "connected": state.connected, "origin": state.origin,
                "sequence": state.sequence, "changed_at": state.changed_at, "change_age_s": _age(state.changed_at),
                "applied_at": state.applied_at, "applied_age_s": _age(state.applied_at),
                "failures": state.failures, "last_error": state.last_error}
        return result
