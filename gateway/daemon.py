"""The daemon: builds every part from the configuration, runs them, shuts them down cleanly.

Only this module builds objects; every other module receives what it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import ipaddress
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from gateway import __version__
from gateway.capture.tap import FrameTap
from gateway.codec.gateway import hdlc_address_bytes, hdlc_address_from
from gateway.codec.hdlc import meter_address_problem
from gateway.codec.wrapper import ALL_STATION_WPORT
from gateway.config import ConfigError, GatewayConfig, LinkConfig, MeshConfig, load_config, network_ids
from gateway.control.commands import Commands
from gateway.control.discovery import identify, identify_worker, scan_schedule
from gateway.control.server import ControlServer
from gateway.core.broadcast import BroadcastRelay
from gateway.core.channel import MeterAddress, MeterMedium, UnsolicitedPush
from gateway.core.gateway_protocol import GatewayProtocol, GatewayRefusal
from gateway.core.management import ManagementDevice
from gateway.core.push import PushForwarder
from gateway.core.push_registration import PushRefusal, PushRegistrationGate, PushRegistrationPolicy
from gateway.core.pushstore import PushStore
from gateway.core.router import MeterRoute, Router
from gateway.core.session import HesPeer
from gateway.keys import GatewayKeys, KeyFileError, load_keys
from gateway.link.hotplug import HotplugMonitor, matching
from gateway.link.line import MeterLine, Opener
from gateway.link.medium import SerialMedium
from gateway.link.serial_port import LineOpenError, open_serial
from gateway.link.traffic import attribute_bad_frames
from gateway.log import configure
from gateway.loglimit import LogLimiter
from gateway.media.channel import IpMeter, IpTransport
from gateway.media.mesh import MeshBinding, MeshEndpoint
from gateway.media.mesh_settings import MeshSettings
from gateway.poller.service import build_poller
from gateway.private_files import private_directory
from gateway.registry.counters import ReservedCounter
from gateway.registry.database import open_database
from gateway.registry.store import Meter, MeterRegistry, MeterState, RegistryError, SapPolicy, ip_endpoint
from gateway.sdnotify import notify
from gateway.standby.channel import SecretFileError
from gateway.standby.pair import StandbyPair
from gateway.standby.role import Role
from gateway.supervisor import Supervisor, Worker
from gateway.wan.dialout import DialOut
from gateway.wan.server import WanListenError, WanServer

if TYPE_CHECKING:
    from gateway.media.wisun import BorderRouterWatcher, WisunNode
    from gateway.metrics import MetricsEndpoint

log = structlog.get_logger(__name__)

SHUTDOWN_DISC_S = 2.0  # SIGTERM: time given to DISC every open data link
SHUTDOWN_TASKS_S = 1.0  # then for background tasks to end once cancelled (SIGTERM must finish within 5 s)
DEFAULT_STATE_DIRECTORY = Path("/var/lib/dlms-gateway")
DEFAULT_RUNTIME_DIRECTORY = Path("/run/dlms-gateway")
DEFAULT_KEYS_FILE = Path("/etc/dlms-gateway/keys.toml")
IPV6_LENGTH = 16  # a gateway-request's physical device address on a mesh: the meter's IPv6 address
EUI64_LENGTH = 8  # ... or its EUI-64 (Wi-SUN, G3-PLC)
REFUSAL_LOG_INTERVAL_S = 60.0  # one log line a minute at most for pushes refused a registration


def serial_opener(config: LinkConfig) -> Opener:
    """Opens the line's serial device through pyserial."""

    async def opener(factory: Callable[[], asyncio.Protocol]) -> asyncio.Transport:
        return await open_serial(device=config.device, baudrate=config.baudrate, protocol_factory=factory)

    return opener


def mesh_endpoint(config: MeshConfig) -> MeshEndpoint:
    """The medium of one [[meshes]] entry (its socket is bound by `start`)."""
    return MeshEndpoint(name=config.name, settings=MeshSettings(
        max_in_flight=config.max_in_flight, max_queued=config.max_queued, response_timeout_s=config.response_timeout_s),
        broadcast_group=config.broadcast_group or None)


def mesh_binding(config: MeshConfig) -> MeshBinding:
    return MeshBinding(host=config.source_address, port=config.port, interface=config.interface or None)


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
        self.meshes = {mesh.name: mesh_endpoint(mesh) for mesh in config.meshes}
        self.wisun_watchers: list[BorderRouterWatcher] = []
        self.tap = FrameTap()  # frame capture: both legs, while a technician captures
        for line in self.lines.values():
            line.tap = self.tap
        private_directory(self.state_directory)
        private_directory(self.runtime_directory)
        self.database = open_database(self.state_directory / "registry.db")
        policy = SapPolicy(first=config.registry.sap_first, last=config.registry.sap_last,
                           quarantine_s=config.registry.quarantine_days * 86400.0)
        self.registry = MeterRegistry(self.database, policy=policy)
        # each meter's SNRM proposes what it accepted before (the registry remembers), within the link's cap
        self.media: dict[str, MeterMedium] = {name: SerialMedium(line, memory=self.registry)
                                              for name, line in self.lines.items()}
        self.media.update(self.meshes)
        self.supervisor = Supervisor()
        self.pair = StandbyPair(config=config.standby, registry=self.registry, state_directory=self.state_directory,
                                supervisor=self.supervisor)
        self._seed_meters()
        keys = self._load_keys()
        self.management = ManagementDevice(
            name=config.management.name.encode(), registry=self.registry, keys=keys,
            management_sap=config.management.client_sap,
            counter=ReservedCounter(self.database, key_name="management") if keys is not None else None,
        )
        self.router = Router(lookup=self.route, media=self.media, relay=config.relay,
                             scheduler=asyncio.get_running_loop(), management=self.management, observer=self)
        self.networks = network_ids(config.links, config.meshes)  # gateway-protocol network id -> line or mesh
        self._line_networks = {name: network for network, name in self.networks.items()}
        self.gateway_registrations = PushRegistrationGate(PushRegistrationPolicy(
            enabled=config.relay.gateway_any_address, per_hour=config.registry.push_registrations_per_hour,
            burst=config.registry.push_registration_burst, max_pending=config.registry.push_registration_max_pending,
        ), now=time.monotonic())
        multicast = {mesh.name for mesh in config.meshes if mesh.broadcast_group}
        self.broadcasts = BroadcastRelay(networks={  # every line; a mesh with a multicast group
            network: self.lines[name] if name in self.lines else self.meshes[name]
            for network, name in self.networks.items() if name in self.lines or name in multicast})
        self.gateway_protocol = GatewayProtocol(router=self.router, lookup=self.gateway_route,
                                                broadcasts=self.broadcasts,
                                                meter_at=lambda sap: self.registry.get(sap) is not None)
        self.wan = WanServer(config=config.wan, sink=self.gateway_protocol, tap=self.tap)
        self.pushes = PushStore(self.state_directory / "pushes.db", max_bytes=config.push_queue.max_bytes,
                                max_age_s=config.push_queue.max_age_days * 86400.0)
        self._push_log = LogLimiter()  # a device on the meter line can push as fast as the line carries
        self.pushes_unrouted = 0  # pushes with nowhere to go (no destination configured): counted, logged
        registry = config.registry
        self.push_registrations = PushRegistrationGate(PushRegistrationPolicy(
            enabled=registry.push_registration, per_hour=registry.push_registrations_per_hour,
            burst=registry.push_registration_burst, max_pending=registry.push_registration_max_pending,
        ), now=time.monotonic())
        self._push_refusal_logged_at: float | None = None
        self._push_burst: list[tuple[int, int, bytes]] = []  # received in this loop turn, not yet committed
        self.forwarders = [PushForwarder(config=push, store=self.pushes, subscriber=self.push_subscriber,
                                         gateway_address=self.gateway_address)
                           for push in config.push]
        self.router.on_subscriber = self._wake_forwarders
        self.router.max_associations_per_peer = config.wan.max_associations_per_peer
        for medium in self.media.values():
            medium.on_unsolicited(self._unsolicited)
        self.dial_outs = [DialOut(config=dial, server=self.wan) for dial in config.dial_out]
        self.identity_reads: dict[int, asyncio.Task[Meter]] = {}  # SAP -> the identity read under way
        self.poller = build_poller(config.poller, client_name=config.management.name,
                                   state_directory=self.state_directory, lines=self.lines, registry=self.registry,
                                   counters=self.database, identify=functools.partial(identify, self, background=True))
        self.identify_queue: asyncio.Queue[int] = asyncio.Queue()
        self._reopen = {name: asyncio.Event() for name in self.lines}
        self.hotplug_monitor = HotplugMonitor(handler=self.hotplug)
        self._tasks: list[asyncio.Task[None]] = []
        self._scans: list[asyncio.Task[None]] = []
        self.line_workers: dict[str, asyncio.Task[None]] = {}  # while this gateway serves its meter lines
        self.line_down_since: dict[str, float] = {}  # line -> first failed reopen (monotonic), for `health`
        self._dial_out_tasks: list[asyncio.Task[None]] = []
        self._role_change = asyncio.Lock()
        self.control: ControlServer | None = None
        self.metrics: MetricsEndpoint | None = None

    # -- wiring helpers -----------------------------------------------------------------------

    def _seed_meters(self) -> None:
        """[[meters]] in the configuration seed the registry; they never override what it knows."""
        if self.registry.replica:
            return  # the primary's registry is the truth; it was seeded there
        meshes = {mesh.name for mesh in self.config.meshes}
        for meter in self.config.meters:
            try:
                if meter.link in meshes:
                    self.registry.register_ip(link=meter.link, address=meter.address, eui64=meter.eui64_bytes,
                                              logical_device=meter.logical_device, sap=meter.sap,
                                              registered_by="config", transport=meter.transport)
                else:
                    self.registry.register(link=meter.link, physical_address=meter.physical_address,
                                           logical_device=meter.logical_device, sap=meter.sap,
                                           registered_by="config")
            except RegistryError as exc:
                log.warning("registry.seed_skipped", sap=meter.sap, reason=str(exc))

    def _load_keys(self) -> GatewayKeys | None:
        path = Path(self.config.paths.keys_file) if self.config.paths.keys_file else DEFAULT_KEYS_FILE
        try:
            return load_keys(path)
        except KeyFileError as exc:
            log.warning("keys.unavailable", error=str(exc), effect="management client disabled")
            return None

    def meter_address(self, meter: Meter) -> MeterAddress | None:
        """The meter's address on its medium: an IpMeter on a mesh, the HDLC physical address on a line."""
        if meter.link in self.meshes:
            if meter.ip_address is None:
                return None
            host, port = ip_endpoint(meter.ip_address)
            return IpMeter(host, port, IpTransport(meter.ip_transport))
        if meter.ip_address is not None or meter_address_problem(logical_device=meter.logical_device,
                                                                 physical_address=meter.physical_address):
            return None  # a row from before the registry checked addresses: refused like an unknown SAP
        return meter.physical_address

    def route(self, sap: int) -> MeterRoute | None:
        meter = self.registry.get(sap)
        if meter is None or meter.link not in self.media:
            return None
        address = self.meter_address(meter)
        if address is None:
            return None
        return MeterRoute(sap=meter.sap, network=meter.link, address=address, logical_device=meter.logical_device)

    def gateway_route(self, network_id: int, address: bytes, logical_device: int) -> int | GatewayRefusal:
        """The SAP of the meter a gateway-request names (README: "Two ways to address a meter")."""
        line = self.networks.get(network_id)
        if line is None:
            return GatewayRefusal.UNKNOWN_NETWORK
        if line in self.meshes:
            return self._mesh_gateway_route(line, address, logical_device)
        physical_address = hdlc_address_from(address)
        if physical_address is None:  # not an HDLC address: a logical device name, or a system title
            meter = self.registry.by_name(address) or next(
                (m for m in self.registry.meters() if m.system_title == address), None)
            return meter.sap if meter is not None and meter.link == line else GatewayRefusal.UNKNOWN_METER
        meter = self.registry.by_place(link=line, physical_address=physical_address, logical_device=logical_device)
        if meter is not None:
            return meter.sap
        if meter_address_problem(logical_device=logical_device, physical_address=physical_address) is not None:
            return GatewayRefusal.INVALID_ADDRESS
        if not self.config.relay.gateway_any_address:
            return GatewayRefusal.UNKNOWN_METER
        refusal = self.gateway_registrations.admit(
            logical_device=logical_device, physical_address=physical_address, now=time.monotonic(),
            pending=lambda: sum(1 for m in self.registry.meters()
                                if m.registered_by == "discovery" and m.logical_device_name is None))
        if refusal is not None:
            return GatewayRefusal.REGISTRATION_REFUSED
        try:
            meter = self.registry.register(link=line, physical_address=physical_address,
                                           logical_device=logical_device, registered_by="discovery")
        except RegistryError:
            self.gateway_registrations.registry_refused()
            return GatewayRefusal.REGISTRATION_REFUSED
        log.info("registry.registered_by_gateway_request", sap=meter.sap, line=line, address=physical_address)
        return meter.sap

    def _mesh_gateway_route(self, mesh: str, address: bytes, logical_device: int) -> int | GatewayRefusal:
        """On a mesh a gateway-request names a meter by its IPv6 address (16 bytes), its EUI-64 (8 bytes), its
        logical device name or system title. Only registered meters: a mesh address is not registered on sight."""
        meter: Meter | None
        if len(address) == IPV6_LENGTH:
            host = ipaddress.IPv6Address(address)
            meter = self.registry.by_ip(link=mesh, address=host, logical_device=logical_device)
            if meter is None:  # a meter off port 4059: by its host, if that names one meter only
                here = [m for m in self.registry.meters() if m.link == mesh and m.logical_device == logical_device
                        and m.ip_address is not None and ip_endpoint(m.ip_address)[0] == host]
                meter = here[0] if len(here) == 1 else None
        elif len(address) == EUI64_LENGTH and (found := self.registry.by_eui64(address, logical_device=logical_device)):
            meter = found
        else:
            meter = self.registry.by_name(address) or next(
                (m for m in self.registry.meters() if m.system_title == address), None)
        return meter.sap if meter is not None and meter.link == mesh else GatewayRefusal.UNKNOWN_METER

    def gateway_address(self, sap: int) -> tuple[int, bytes] | None:
        """(network id, physical device address) of a meter, as a gateway-response names it (IPv6 on a mesh)."""
        meter = self.registry.get(sap)
        if meter is None or meter.link not in self._line_networks:
            return None
        if meter.ip_address is not None:
            return self._line_networks[meter.link], ip_endpoint(meter.ip_address)[0].packed
        return self._line_networks[meter.link], hdlc_address_bytes(meter.physical_address)

    def meter_seen(self, sap: int) -> None:
        self.registry.seen(sap)  # an APDU, not a frame: frames come from the data links' own counters
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
        if push.network in self.meshes:
            self._mesh_push(push)
            return
        address = push.meter
        if not isinstance(address, int):  # a 1-byte address: no physical address, no meter can sit there
            self.push_registrations.refuse(PushRefusal.ADDRESS)
            self._log_refusal(push.network, PushRefusal.ADDRESS, logical_device=push.logical_device,
                              physical_address=None)
            return
        meter = self.registry.by_place(link=push.network, physical_address=address, logical_device=push.logical_device)
        if meter is None:  # a meter we did not know: register it (bounded), find out who it is, deliver anyway
            meter = self._register_from_push(push.network, logical_device=push.logical_device, physical_address=address)
            if meter is None:
                return
            self.registry.seen(meter.sap, frames=1)  # not "online" on a push alone: its identity read says so
        else:
            self.meter_seen(meter.sap)
        self._store_push(meter, push)

    def _mesh_push(self, push: UnsolicitedPush) -> None:
        """A push from a mesh meter: only registered meters' are taken (a datagram's source is easily forged)."""
        meter = None
        if isinstance(push.meter, IpMeter):
            endpoint = f"[{push.meter.host}]:{push.meter.port}"
            meter = self.registry.by_ip(link=push.network, address=endpoint, logical_device=push.logical_device)
        if meter is None:  # a source address is easily forged on a mesh: counted, logged once a minute, dropped
            self.push_registrations.refuse(PushRefusal.UNREGISTERED)
            self._log_refusal(push.network, PushRefusal.UNREGISTERED, logical_device=push.logical_device,
                              physical_address=None)
            return
        self.meter_seen(meter.sap)
        self._store_push(meter, push)

    def _store_push(self, meter: Meter, push: UnsolicitedPush) -> None:
        apdu = push.apdu
        if not self.forwarders:
            self._push_log.emit(log.warning, "push.no_destination", key=meter.sap, sap=meter.sap,
                                tag=f"{apdu[0]:02X}")
            self.pushes_unrouted += 1
            return
        if not self._push_burst:  # the frames of one read arrive together: one commit for all of them
            asyncio.get_running_loop().call_soon(self._commit_pushes)
        self._push_burst.append((meter.sap, push.client_sap, apdu))
        self._push_log.emit(log.info, "push.queued", key=meter.sap, sap=meter.sap, tag=f"{apdu[0]:02X}",
                            size=len(apdu))

    def _register_from_push(self, network: str, *, logical_device: int, physical_address: int) -> Meter | None:
        """A meter for a push from an unknown address, or None: the push is then dropped and counted."""
        now = time.monotonic()
        refusal = self.push_registrations.admit(logical_device=logical_device, physical_address=physical_address,
                                                now=now, pending=self._pending_push_registrations)
        if refusal is None:
            try:
                meter = self.registry.register(link=network, physical_address=physical_address,
                                               logical_device=logical_device, registered_by="push")
            except RegistryError:  # no free SAP
                refusal = self.push_registrations.registry_refused()
        if refusal is not None:
            self._log_refusal(network, refusal, logical_device=logical_device, physical_address=physical_address)
            return None
        log.info("registry.registered_by_push", sap=meter.sap, line=network, address=physical_address)
        if self.config.registry.identify:
            self.identify_queue.put_nowait(meter.sap)
        return meter

    def _log_refusal(self, network: str, refusal: PushRefusal, *, logical_device: int,
                     physical_address: int | None) -> None:
        """One line a minute at most: a forger on the meter line cannot flood the log either."""
        now = time.monotonic()
        if self._push_refusal_logged_at is not None and now - self._push_refusal_logged_at < REFUSAL_LOG_INTERVAL_S:
            return
        self._push_refusal_logged_at = now
        log.warning("push.registration_refused", line=network, address=physical_address,
                    logical_device=logical_device, reason=str(refusal),
                    refused={str(k): v for k, v in self.push_registrations.refused.items()})

    def _pending_push_registrations(self) -> int:
        return sum(1 for m in self.registry.meters() if m.registered_by == "push" and m.logical_device_name is None)

    def _commit_pushes(self) -> None:
        burst, self._push_burst = self._push_burst, []
        self.pushes.put(destinations=[f.config.name for f in self.forwarders], pushes=burst)
        self._wake_forwarders()

    # -- roles (issue 15) ----------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self.pair.role

    @property
    def serves_meters(self) -> bool:
        return self.pair.serves_meters

    async def _serve_meters(self) -> None:
        for mesh in self.config.meshes:
            if not self.meshes[mesh.name].usable():
                await self._start_mesh(mesh)
        for line in self.lines.values():
            if line.name not in self.line_workers:
                await self._try_open(line)
                self.line_workers[line.name] = asyncio.create_task(self.supervisor.supervise(
                    functools.partial(self._keep_open, line), f"line-{line.name}"), name=f"line-{line.name}")

    async def _release_meters(self) -> None:
        """Close every line (its data links fail back to their HES at once) and stop reopening them."""
        workers, self.line_workers = list(self.line_workers.values()), {}
        self.line_down_since.clear()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for line in self.lines.values():
            was_open = line.is_open
            await line.aclose()
            if was_open:
                log.info("line.released", line=line.name, reason="standby")  # the port is closed now
        await self._stop_meshes()

    async def _stop_meshes(self) -> None:
        """Stop following the border routers and close every mesh socket (open channels go down)."""
        watchers, self.wisun_watchers = self.wisun_watchers, []
        for watcher in watchers:
            await watcher.stop()
        for endpoint in self.meshes.values():
            endpoint.stop()

    def _start_dial_outs(self) -> None:
        self._dial_out_tasks = [asyncio.create_task(self.supervisor.supervise(dial.run, f"dialout-{dial.config.host}"),
                                                    name=f"dialout-{dial.config.host}") for dial in self.dial_outs]

    async def _stop_dial_outs(self) -> None:
        tasks, self._dial_out_tasks = self._dial_out_tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def promote(self) -> Role:
        """Become primary: take writes, open the meter lines, dial out, serve the registry to the peer.

        Role changes run one at a time, in the order they came (keepalived's hooks: the last one wins).
        Raises PeerStillPrimaryError when the peer is alive and will not let go of the line.
        """
        async with self._role_change:
            return await self._promote()

    async def demote(self) -> Role:
        """Become standby: stop dialling out, close shared lines, then let the peer take over and follow it."""
        async with self._role_change:
            return await self._demote()

    async def _promote(self) -> Role:
        if self.role is Role.PRIMARY:
            return self.role
        started = time.monotonic()
        await self.pair.take_over()
        self._seed_meters()  # a standby that never heard from its primary still knows the configured meters
        await self._serve_meters()
        self._start_dial_outs()
        self._start_scans()
        if self.config.registry.identify:  # meters the old primary never identified
            for meter in self.registry.meters():
                if meter.logical_device_name is None:
                    self.identify_queue.put_nowait(meter.sap)
        log.info("standby.promoted", meters=len(self.registry),
                 lines_open=sum(line.is_open for line in self.lines.values()),
                 took_ms=round((time.monotonic() - started) * 1e3, 1))
        return self.role

    async def _demote(self) -> Role:
        if self.role is not Role.PRIMARY:
            return self.role
        self.pair.step_down()
        for task in self._scans:
            task.cancel()
        self._scans = []
        await self._stop_dial_outs()
        if not self.serves_meters:
            await self._release_meters()
        self.registry.flush()
        self.pair.follow()  # only now, the bus let go: the follower may take over
        log.info("standby.demoted", role=self.role.value)
        return self.role

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            self.pair.prepare()  # a bad secret file stops the start here, before anything is opened
        except SecretFileError as exc:
            raise WanListenError(f"no replication secret: {exc}") from None  # one line, no traceback
        if self.lines:
            self.hotplug_monitor.start()
        if self.serves_meters:
            await self._serve_meters()
        await self.wan.start()
        if self.registry.get(ALL_STATION_WPORT) is not None:
            log.warning("meters.all_station_wport_held", sap=ALL_STATION_WPORT,
                        effect="wPort 127 reaches this meter; broadcasts go by gateway-request (E6) to a network's "
                               "all-station address")
        standby = self.config.standby
        try:
            await self.pair.start()
        except OSError as exc:
            raise WanListenError(f"cannot listen for the standby on {standby.listen}:{standby.port}: "
                                 f"{exc.strerror}") from None
        commands = Commands(self)
        server = ControlServer(path=self.runtime_directory / "control.sock", handlers=commands.handlers())
        await server.start()
        self.control = server
        if self.config.metrics.listen:
            from gateway.metrics import MetricsEndpoint  # noqa: PLC0415 - prometheus-client only when asked for

            self.metrics = MetricsEndpoint(config=self.config.metrics, snapshot=commands.snapshot)
            await self.metrics.start()
        self._spawn(self._flush_loop, "registry-flush")
        for forwarder in self.forwarders:
            self._spawn(forwarder.run, f"push-{forwarder.config.name}")
        if self.role is Role.PRIMARY:
            self._start_dial_outs()
        if self.poller is not None:
            await self.poller.start()
        self._spawn(functools.partial(identify_worker, self), "identify")
        if self.serves_meters:
            self._start_scans()
        if self.config.registry.identify and not self.registry.replica:
            for meter in self.registry.meters():
                if meter.logical_device_name is None:
                    self.identify_queue.put_nowait(meter.sap)
        log.info("gateway.ready", version=__version__, lines=len(self.lines), meters=len(self.registry),
                 wan=[f"{h}:{p}" for h, p in self.wan.addresses], role=self.role.value)

    async def stop(self) -> None:
        """Stop listening, DISC every data link, flush the registry, close everything."""
        await self.wan.stop()  # HES connections close: their sessions send DISC
        await self.pair.stop()
        if self.control is not None:
            await self.control.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        if self.poller is not None:
            await self.poller.stop()
        if not await self._drain_sessions(SHUTDOWN_DISC_S):
            log.warning("gateway.sessions_not_released", sessions=len(self.router.sessions))
        self.hotplug_monitor.stop()
        for task in [*self._scans, *self.identity_reads.values()]:
            task.cancel()
        self._tasks += [*self.line_workers.values(), *self._dial_out_tasks]
        self.line_workers, self._dial_out_tasks = {}, []
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=SHUTDOWN_TASKS_S)
            for task in stuck:
                log.error("gateway.task_stuck", task=task.get_name())
        self._tasks.clear()
        for line in self.lines.values():
            await line.aclose()
        await self._stop_meshes()
        if not self.registry.replica:
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
        self._scans = [asyncio.create_task(self.supervisor.supervise(functools.partial(scan_schedule, self, scan),
                                                                     f"scan-{scan.link}"), name=f"scan-{scan.link}")
                       for scan in self.config.scan]

    def reload(self, new: GatewayConfig) -> list[str]:
        """SIGHUP: apply what can change live; returns the tables that need a restart to change."""
        old = self.config
        self.config = replace(old, log=new.log, meters=new.meters, scan=new.scan, relay=new.relay)
        configure(level=new.log.level, fmt=new.log.format)
        self.router.relay = new.relay  # new associations use the new timeouts; open ones keep theirs
        self._seed_meters()
        if new.scan != old.scan and self.serves_meters:
            self._start_scans()
        needs_restart = [name for name in ("wan", "links", "meshes", "paths", "registry", "management", "push",
                                           "push_queue", "dial_out", "poller", "metrics", "standby")
                         if getattr(new, name) != getattr(old, name)]
        log.info("gateway.reloaded", log_level=new.log.level, meters=len(new.meters), scans=len(new.scan),
                 needs_restart=needs_restart)
        return needs_restart

    def _spawn(self, work: Worker, name: str) -> None:
        """Run a long-lived worker for the daemon's life, restarted (and logged) whenever it fails."""
        self._tasks.append(asyncio.create_task(self.supervisor.supervise(work, name), name=name))

    async def _start_mesh(self, config: MeshConfig) -> None:
        """Bind the mesh's socket; a mesh that cannot bind stays unusable (its meters are refused, logged)."""
        try:
            await self.meshes[config.name].start(mesh_binding(config))
        except OSError as exc:
            log.error("mesh.start_failed", mesh=config.name, error=str(exc))
            return
        if config.wisun_bus:
            from gateway.media.wisun import BorderRouterWatcher  # noqa: PLC0415 - D-Bus only when asked for

            watcher = BorderRouterWatcher(on_nodes=functools.partial(self.wisun_nodes, config.name),
                                          bus_address=None if config.wisun_bus == "system" else config.wisun_bus)
            try:
                await watcher.start()
            except Exception as exc:  # no bus, or wsbrd's refused us: the mesh still relays its known meters
                log.warning("wisun.unavailable", mesh=config.name, error=str(exc))
                return
            self.wisun_watchers.append(watcher)

    def wisun_nodes(self, mesh: str, nodes: list[WisunNode]) -> None:
        """wsbrd's node list: each node (EUI-64) is a meter at its first address; a new address keeps its SAP."""
        for node in nodes:
            if not node.ipv6:
                continue
            address = next((a for a in node.ipv6 if not a.is_link_local), node.ipv6[0])
            try:
                meter = self.registry.register_ip(link=mesh, address=address, eui64=node.eui64,
                                                  registered_by="discovery")
            except RegistryError as exc:
                log.warning("wisun.register_refused", mesh=mesh, eui64=node.eui64.hex(), error=str(exc))
                continue
            if meter.logical_device_name is None and self.config.registry.identify:
                self.identify_queue.put_nowait(meter.sap)

    async def _try_open(self, line: MeterLine) -> None:
        try:
            await line.open()
        except LineOpenError as exc:
            log.warning("line.open_failed", line=line.name, error=str(exc))
            self.line_down_since.setdefault(line.name, time.monotonic())
        else:
            self.line_down_since.pop(line.name, None)

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
            for line in self.lines.values():
                attribute_bad_frames(self.registry, line_name=line.name, decoder=line.decoder)
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
    # What start-up built (configuration, registry, codecs) lives as long as the daemon: out of the cyclic
    # collector's sight, a collection scans only what relaying allocates (no millisecond pauses at p99)
    gc.freeze()
    interval = watchdog_interval()
    if interval is not None:
        gateway._spawn(functools.partial(_watchdog, gateway, interval), "watchdog")
    try:
        await stop.wait()
    finally:
        notify("STOPPING=1")
        await gateway.stop()
