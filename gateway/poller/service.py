"""The polling service the daemon runs when [poller] enabled = true."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.daemon import Gateway


class PollingService:
    """Schedules and runs polls; started and stopped by the daemon."""

    async def start(self) -> None:
        """Start the schedules."""

    async def stop(self) -> None:
        """Stop cleanly: finish or abandon the poll in flight, flush stores."""

    def status(self) -> dict[str, Any]:
        return {"state": "off"}


def build_poller(gateway: Gateway) -> PollingService | None:
    """The daemon's polling service, or None when polling is off."""
    if not gateway.config.poller.enabled:
        return None
    return PollingService()
