"""The daemon: builds every part from the configuration, runs them, shuts them down cleanly.

Only this module builds objects; every other module receives what it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path

import structlog

from gateway import __version__
from gateway.config import ConfigError, GatewayConfig, LinkConfig, load_config
from gateway.control.commands import control_server
from gateway.control.discovery import identify_worker, scan_schedule
from gateway.control.server import ControlServer
from gateway.core.channel import UnsolicitedPush
from gateway.core.management import ManagementDevice
from gateway.core.push import PushForwarder
from gateway.core.pushstore import PushStore
from gateway.core.router import MeterRoute, Router
from gateway.core.session import HesPeer
from gateway.keys import GatewayKeys, KeyFileError, load_keys
from gateway.link.hotplug import HotplugMonitor, matching
from gateway.link.line import MeterLine, Opener
from gateway.link.medium import SerialMedium
from gateway.link.serial_port import LineOpenError, open_serial
from gateway.log import configure
from gateway.poller.service import build_poller
from gateway.registry.counters import ReservedCounter
from gateway.registry.database import open_database
from gateway.registry.store import MeterRegistry, MeterState, RegistryError, SapPolicy
from gateway.sdnotify import notify
from gateway.wan.dialout import DialOut
from gateway.wan.server import WanListenError, WanServer

log = structlog.get_logger(__name__)

SHUTDOWN_DISC_S = 2.0  # SIGTERM: time given to DISC every open data link
SHUTDOWN_TASKS_S = 1.0  # then for background tasks to end once cancelled (SIGTERM must finish within 5 s)
DEFAULT_STATE_DIRECTORY = Path("/var/lib/dlms-gateway")
DEFAULT_RUNTIME_DIRECTORY = Path("/run/dlms-gateway")
DEFAULT_KEYS_FILE = Path("/etc/dlms-gateway/keys.toml")


def serial_opener(config: LinkConfig) -> Opener:
    """Opens the line's serial device through pyserial."""

    async def opener(factory: Callable[[], asyncio.Protocol]) -> asyncio.Transport:
        return await open_serial(device=config.device, baudrate=config.baudrate, protocol_factory=factory)

    return opener


def _directory(configured: str, environment: str, default: Path) -> Path:
    if configured:
        return Path(configured)
    from_systemd = os.environ.get(environment, "").split(":")[0]  # systemd may list several
    return Path(from_systemd) if from_systemd else default


class Gateway:
    """Every running part of one gateway."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.started_at = time.time()
        self.state_directory = _directory(config.paths.state_directory, "STATE_DIRECTORY", DEFAULT_STATE_DIRECTORY)
        self.runtime_directory = _directory(config.paths.runtime_directory, "RUNTIME_DIRECTORY",
                                            DEFAULT_RUNTIME_DIRECTORY)
        self.lines = {link.name: MeterLine(config=link, opener=serial_opener(link)) for link in config.links}
        self.media = {name: SerialMedium(line) for name, line in self.lines.items()}
        self.state_directory.mkdir(parents=True, exist_ok=True)
        self.database = open_database(self.state_directory / "registry.db")
        policy = SapPolicy(first=config.registry.sap_first, last=config.registry.sap_last,
                           quarantine_s=config.registry.quarantine_days * 86400.0)
        self.registry = MeterRegistry(self.database, policy=policy)
        self._seed_meters()
        keys = self._load_keys()
        self.management = ManagementDevice(
            name=config.management.name.encode(), registry=self.registry, keys=keys,
            management_sap=config.management.client_sap,
            counter=ReservedCounter(self.database, key_name="management") if keys is not None else None,
        )
        self.router = Router(lookup=self.route, media=self.media, relay=config.relay,
                             scheduler=asyncio.get_running_loop(), management=self.management, observer=self)
        self.wan = WanServer(config=config.wan, sink=self.router)
        self.pushes = PushStore(self.state_directory / "pushes.db", max_bytes=config.push_queue.max_bytes,
                                max_age_s=config.push_queue.max_age_days * 86400.0)
        self.pushes_unrouted = 0  # pushes with nowhere to go (no destination configured): counted, logged
        self._push_burst: list[tuple[int, int, bytes]] = []  # received in this loop turn, not yet committed
        self.forwarders = [PushForwarder(config=push, store=self.pushes, subscriber=self.push_subscriber)
                           for push in config.push]
        self.router.on_subscriber = self._wake_forwarders
        self.router.max_associations_per_peer = config.wan.max_associations_per_peer
        for medium in self.media.values():
            medium.on_unsolicited(self._unsolicited)
        self.dial_outs = [DialOut(config=dial, server=self.wan) for dial in config.dial_out]
        self.poller = build_poller(self)  # legacy polling mode; None when off
        self.identify_queue: asyncio.Queue[int] = asyncio.Queue()
        self._reopen = {name: asyncio.Event() for name in self.lines}
        self.hotplug_monitor = HotplugMonitor(handler=self.hotplug)
        self._tasks: list[asyncio.Task[None]] = []
        self._scans: list[asyncio.Task[None]] = []
        self.control: ControlServer | None = None

    # -- wiring helpers -----------------------------------------------------------------------

    def _seed_meters(self) -> None:
        """[[meters]] in the configuration seed the registry; they never override what it knows."""
        for meter in self.config.meters:
            try:
                self.registry.register(link=meter.link, physical_address=meter.physical_address,
                                       logical_device=meter.logical_device, sap=meter.sap, registered_by="config")
            except RegistryError as exc:
                log.warning("registry.seed_skipped", sap=meter.sap, reason=str(exc))

    def _load_keys(self) -> GatewayKeys | None:
        path = Path(self.config.paths.keys_file) if self.config.paths.keys_file else DEFAULT_KEYS_FILE
        try:
            return load_keys(path)
        except KeyFileError as exc:
            log.warning("keys.unavailable", error=str(exc), effect="management client disabled")
            return None

    def route(self, sap: int) -> MeterRoute | None:
        meter = self.registry.get(sap)
        if meter is None or meter.link not in self.media:
            return None
        return MeterRoute(sap=meter.sap, network=meter.link, address=meter.physical_address,
                          logical_device=meter.logical_device)

    def meter_seen(self, sap: int) -> None:
        self.registry.seen(sap, frames=1)
        meter = self.registry.get(sap)
        if meter is not None and meter.state is not MeterState.ONLINE:
            self.registry.set_state(sap, MeterState.ONLINE)

    def meter_unreachable(self, sap: int) -> None:
        meter = self.registry.get(sap)
        if meter is not None and meter.state is MeterState.ONLINE:
            self.registry.set_state(sap, MeterState.OFFLINE)

    # -- pushes -------------------------------------------------------------------------------

    def push_subscriber(self) -> HesPeer | None:
        """The HES connection of the authenticated management client (SAP 1) takes pushes; nobody else."""
        return self.router.push_subscriber()

    def _wake_forwarders(self) -> None:
        for forwarder in self.forwarders:
            forwarder.wake()

    def _unsolicited(self, push: UnsolicitedPush) -> None:
        apdu, address = push.apdu, push.meter
        if not isinstance(address, int):  # the registry keeps physical addresses of lines
            log.warning("push.unaddressable", line=push.network, address=push.logical_device)
            self.pushes_unrouted += 1
            return
        meter = self.registry.by_place(link=push.network, physical_address=address, logical_device=push.logical_device)
        if meter is None:  # a meter we did not know: register it, find out who it is, deliver anyway
            try:
                meter = self.registry.register(link=push.network, physical_address=address,
                                               logical_device=push.logical_device, registered_by="push")
            except RegistryError as exc:
                log.warning("push.unregistrable", line=push.network, address=address, reason=str(exc))
                self.pushes_unrouted += 1
                return
            self.identify_queue.put_nowait(meter.sap)
        self.meter_seen(meter.sap)
        if not self.forwarders:
            log.warning("push.no_destination", sap=meter.sap, tag=f"{apdu[0]:02X}")
            self.pushes_unrouted += 1
            return
        if not self._push_burst:  # the frames of one read arrive together: one commit for all of them
            asyncio.get_running_loop().call_soon(self._commit_pushes)
        self._push_burst.append((meter.sap, push.client_sap, apdu))
        log.info("push.queued", sap=meter.sap, tag=f"{apdu[0]:02X}", size=len(apdu))

    def _commit_pushes(self) -> None:
        burst, self._push_burst = self._push_burst, []
        self.pushes.put(destinations=[f.config.name for f in self.forwarders], pushes=burst)
        self._wake_forwarders()

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.lines:
            self.hotplug_monitor.start()
        for line in self.lines.values():
            await self._try_open(line)
            self._spawn(self._keep_open(line), f"line-{line.name}")
        await self.wan.start()
        server = control_server(self)
        await server.start()
        self.control = server
        self._spawn(self._flush_loop(), "registry-flush")
        for forwarder in self.forwarders:
            self._spawn(forwarder.run(), f"push-{forwarder.config.name}")
        for dial in self.dial_outs:
            self._spawn(dial.run(), f"dialout-{dial.config.host}")
        if self.poller is not None:
            await self.poller.start()
        self._spawn(identify_worker(self), "identify")
        self._start_scans()
        if self.config.registry.identify:
            for meter in self.registry.meters():
                if meter.logical_device_name is None:
                    self.identify_queue.put_nowait(meter.sap)
        log.info("gateway.ready", version=__version__, lines=len(self.lines), meters=len(self.registry),
                 wan=[f"{h}:{p}" for h, p in self.wan.addresses])

    async def stop(self) -> None:
        """Stop listening, DISC every data link, flush the registry, close everything."""
        await self.wan.stop()  # HES connections close: their sessions send DISC
        if self.control is not None:
            await self.control.stop()
        if self.poller is not None:
            await self.poller.stop()
        if not await self._drain_sessions(SHUTDOWN_DISC_S):
            log.warning("gateway.sessions_not_released", sessions=len(self.router.sessions))
        self.hotplug_monitor.stop()
        for task in self._scans:
            task.cancel()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=SHUTDOWN_TASKS_S)
            for task in stuck:
                log.error("gateway.task_stuck", task=task.get_name())
        self._tasks.clear()
        for line in self.lines.values():
            await line.aclose()
        self.registry.flush()
        self.database.close()
        self._commit_pushes()  # a burst received in the last loop turn is not lost
        self.pushes.close()
        log.info("gateway.stopped")

    async def _drain_sessions(self, timeout_s: float) -> bool:
        """Wait until every session has closed (its goodbye answered); False on timeout."""
        if not self.router.sessions:
            return True
        drained = asyncio.Event()
        self.router.on_drained = drained.set
        try:
            async with asyncio.timeout(timeout_s):
                await drained.wait()
        except TimeoutError:
            return False
        finally:
            self.router.on_drained = None
        return True

    def _start_scans(self) -> None:
        for task in self._scans:
            task.cancel()
        self._scans = [asyncio.create_task(scan_schedule(self, scan), name=f"scan-{scan.link}")
                       for scan in self.config.scan]

    def reload(self, new: GatewayConfig) -> list[str]:
        """SIGHUP: apply what can change live; returns the tables that need a restart to change."""
        old = self.config
        self.config = replace(old, log=new.log, meters=new.meters, scan=new.scan, relay=new.relay)
        configure(level=new.log.level, fmt=new.log.format)
        self.router.relay = new.relay  # new associations use the new timeouts; open ones keep theirs
        self._seed_meters()
        if new.scan != old.scan:
            self._start_scans()
        needs_restart = [name for name in ("wan", "links", "paths", "registry", "management", "push",
                                           "push_queue", "dial_out", "poller")
                         if getattr(new, name) != getattr(old, name)]
        log.info("gateway.reloaded", log_level=new.log.level, meters=len(new.meters), scans=len(new.scan),
                 needs_restart=needs_restart)
        return needs_restart

    def _spawn(self, coroutine: Coroutine[None, None, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coroutine, name=name))

    async def _try_open(self, line: MeterLine) -> None:
        try:
            await line.open()
        except LineOpenError as exc:
            log.warning("line.open_failed", line=line.name, error=str(exc))

    async def _keep_open(self, line: MeterLine) -> None:
        """Reopen a line that is down: at once when udev says the device is back, else every second."""
        wake = self._reopen[line.name]
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(line.config.reopen_interval_s):
                    await wake.wait()
            wake.clear()
            if not line.is_open:
                await self._try_open(line)

    def hotplug(self, action: str, paths: frozenset[str]) -> None:
        """A udev event for a tty device (real, or synthetic in tests)."""
        for line in self.lines.values():
            if not matching(paths, line.config.device):
                continue
            log.info("hotplug.event", action=action, line=line.name, paths=sorted(paths))
            if action == "remove" and line.is_open:
                line.close()  # exchanges in flight fail back to their HES now, not after timeouts
            elif action in ("add", "change"):
                self._reopen[line.name].set()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.registry.flush_interval_s)
            self.registry.flush()


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec, when this process is the one being watched."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2


async def _watchdog(gateway: Gateway, interval: float) -> None:
    """Pets systemd's watchdog while the event loop turns, with a one-line status."""
    while True:
        sessions = len(gateway.router.sessions)
        lines_up = sum(line.is_open for line in gateway.lines.values())
        notify(f"WATCHDOG=1\nSTATUS={len(gateway.registry)} meters, {sessions} sessions, "
               f"{lines_up}/{len(gateway.lines)} links up")
        await asyncio.sleep(interval)


def _reload_from(gateway: Gateway, path: Path) -> None:
    """SIGHUP: read the file again; a bad file is refused and the running configuration kept."""
    notify("RELOADING=1")
    try:
        gateway.reload(load_config(path))
    except ConfigError as exc:
        log.error("gateway.reload_refused", error=str(exc))
    notify("READY=1")


async def run(config: GatewayConfig, *, config_path: Path | None = None) -> None:
    """Run until SIGTERM or SIGINT; SIGHUP reloads ``config_path``."""
    gateway = Gateway(config)
    try:
        await gateway.start()
    except WanListenError:
        await gateway.stop()  # lines and stores opened before the listener are closed cleanly
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if config_path is not None:
        loop.add_signal_handler(signal.SIGHUP, _reload_from, gateway, config_path)
    notify(f"READY=1\nSTATUS=relaying for {len(gateway.registry)} meters")
    interval = watchdog_interval()
    if interval is not None:
        gateway._spawn(_watchdog(gateway, interval), "watchdog")
    try:
        await stop.wait()
    finally:
        notify("STOPPING=1")
        await gateway.stop()
