"""The daemon: builds every part from the configuration, runs them, shuts them down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

import structlog

from gateway import __version__
from gateway.config import GatewayConfig, LinkConfig
from gateway.core.router import ManagementHandler, MeterRoute, Router
from gateway.link.line import MeterLine, Opener
from gateway.link.serial_port import LineOpenError, open_serial
from gateway.sdnotify import notify
from gateway.wan.server import WanServer

log = structlog.get_logger(__name__)

REOPEN_INTERVAL_S = 1.0  # how often a line that is down is tried again


def serial_opener(config: LinkConfig) -> Opener:
    """Opens the line's serial device through pyserial."""

    async def opener(factory: Callable[[], asyncio.Protocol]) -> asyncio.Transport:
        return await open_serial(device=config.device, baudrate=config.baudrate, protocol_factory=factory)

    return opener


class Gateway:
    """Every running part of one gateway."""

    def __init__(self, config: GatewayConfig, *, management: ManagementHandler | None = None) -> None:
        self.config = config
        self.lines = {link.name: MeterLine(config=link, opener=serial_opener(link)) for link in config.links}
        routes = {
            meter.sap: MeterRoute(
                sap=meter.sap, line=meter.link, physical_address=meter.physical_address,
                logical_device=meter.logical_device,
            )
            for meter in config.meters
        }
        self.router = Router(routes=routes, lines=self.lines, relay=config.relay, management=management)
        self.wan = WanServer(config=config.wan, sink=self.router)
        self._keepers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for line in self.lines.values():
            await self._try_open(line)
            self._keepers.append(asyncio.create_task(self._keep_open(line), name=f"line-{line.name}"))
        await self.wan.start()
        log.info("gateway.ready", version=__version__, lines=len(self.lines), meters=len(self.router.routes))

    async def stop(self) -> None:
        await self.wan.stop()
        for task in self._keepers:
            task.cancel()
        for task in self._keepers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._keepers.clear()
        for line in self.lines.values():
            line.close()
        log.info("gateway.stopped")

    async def _try_open(self, line: MeterLine) -> None:
        try:
            await line.open()
        except LineOpenError as exc:
            log.warning("line.open_failed", line=line.name, error=str(exc))

    async def _keep_open(self, line: MeterLine) -> None:
        while True:
            await asyncio.sleep(REOPEN_INTERVAL_S)
            if not line.is_open:
                await self._try_open(line)


async def run(config: GatewayConfig, *, management: ManagementHandler | None = None) -> None:
    """Run until SIGTERM or SIGINT."""
    gateway = Gateway(config, management=management)
    await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    notify("READY=1\nSTATUS=relaying")
    try:
        await stop.wait()
    finally:
        notify("STOPPING=1")
        await gateway.stop()
