"""Configuration: one TOML file, validated into frozen objects at start.

Unknown keys, wrong types and values the daemon could not run with are errors that name the key
and its line, all of them at once, because the person reading them is a technician on a laptop
next to a pole, not the author of this file (gateway/config_source.py finds keys and lines).
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gateway.codec.hdlc import meter_address_problem
from gateway.codec.wrapper import WRAPPER_PORT
from gateway.config_source import ConfigError as ConfigError  # noqa: PLC0414 - re-exported: callers load here
from gateway.config_source import ConfigProblem as ConfigProblem  # noqa: PLC0414
from gateway.config_source import Problems, SourceLines, build_table
from gateway.poller.config import DEFAULT_POLLING_KEYS, PollerConfig, parse_poller
from gateway.registry.store import TRANSPORTS, RegistryError, canonical_ip
from gateway.wan.limits import KEEPALIVE_IDLE_MAX_S, USER_TIMEOUT_MAX_S


@dataclass(frozen=True, slots=True)
class WanConfig:
    listen: tuple[str, ...] = ("0.0.0.0", "::")  # a concentrator listens on its WAN side
    port: int = WRAPPER_PORT
    max_apdu: int = 65535  # wrapper length limit; a longer header closes that HES connection
    max_connections: int = 256
    # Many head-ends open one TCP connection per meter association: leave room for parallel reads.
    max_connections_per_peer: int = 64
    max_associations_per_peer: int = 256  # meter associations one HES address may hold at once
    allow: tuple[str, ...] = ()  # HES addresses/networks allowed in ("10.1.0.0/16"); empty = any
    idle_timeout_s: float = 600.0  # a HES connection with no PDU for this long is closed
    first_pdu_timeout_s: float = 30.0  # a new connection must send a whole PDU within this, or lose its slot
    pdu_timeout_s: float = 10.0  # a wrapper PDU, once started, must arrive whole within this (slowloris)
    tcp_keepalive_s: float = 60.0  # idle time before TCP keepalive probes
    tcp_user_timeout_s: float = 30.0  # unacknowledged data for this long: the peer is gone (half-open)
    tls_certificate_file: str = ""  # PEM; TLS is on when this is set
    tls_private_key_file: str = ""  # PEM, readable only by the service user
    tls_client_ca_file: str = ""  # PEM: a HES must present a certificate signed by this CA


@dataclass(frozen=True, slots=True)
class LinkConfig:
    name: str
    device: str  # /dev/ttyUSB0, /dev/serial/by-id/..., a pty path in tests
    baudrate: int = 9600
    response_timeout_s: float = 1.0  # wait for the meter's response frame
    inter_octet_timeout_s: float = 0.1  # a gap this long inside a frame discards it
    max_retries: int = 3  # HDLC retransmissions before the exchange fails
    # What the gateway proposes in its SNRM: the most a meter may accept (IEC 62056-46 allows 2030 / 7);
    # the meter's UA answers what it takes. Lower them for a modem with small buffers.
    max_info: int = 2030
    window: int = 7
    inactivity_timeout_s: float = 120.0  # IEC 62056-46, HDLC setup IC 23 default
    reopen_interval_s: float = 1.0  # a lost device is tried again this often (udev "add" reopens at once)
    network_id: int = -1  # the gateway protocol's network id (E6/E7); -1: 1 + its place among [[links]]
    broadcast_share: float = 0.5  # at most this share of the line for broadcasts while relay exchanges wait
    # A new association is refused (transient) when the line's queue would keep it waiting longer than
    # max_wait_s (estimated from recent exchanges: a slow PLC line fills up long before a fast bus), or when
    # max_waiting data links wait at once (a hard cap whatever the line's speed).
    max_wait_s: float = 10.0
    max_waiting: int = 1024
    # Exchanges with different meters outstanding at once. 1: a wire (RS-485) where meters would collide.
    # Behind a PLC/RF modem whose MAC arbitrates the medium (it queues frames), more keep the medium busy.
    concurrent_exchanges: int = 1


MAX_CONCURRENT_EXCHANGES = 64  # a modem's queue is small: more only lengthens every answer's wait


@dataclass(frozen=True, slots=True)
class MeshConfig:
    """An IPv6 meter network (Wi-SUN FAN, G3-PLC) reached over the UDP/TCP wrapper."""

    name: str
    source_address: str = "::"  # the gateway's address on the mesh: meters answer and push to it
    interface: str = ""  # bind to this interface (the border router's TUN, e.g. "tun0"); empty: any
    port: int = WRAPPER_PORT  # IEC 62056-4-7: the gateway's UDP port, and the meters'
    max_in_flight: int = 8  # exchanges at once on this network: a mesh is not a bus, but flooding collapses it
    max_queued: int = 256  # APDUs waiting for a slot; beyond this an association is refused (congested)
    response_timeout_s: float = 10.0  # several hops each way; a lost datagram is this, then an exception-response
    network_id: int = -1  # the gateway protocol's network id (E6/E7); -1: after the [[links]], by place
    wisun_bus: str = ""  # "system" (or a D-Bus address): follow wsbrd's node list, register/readdress; "": off
    broadcast_group: str = ""  # IPv6 multicast group for broadcasts (e.g. "ff03::1"); "": broadcasts not sent here


@dataclass(frozen=True, slots=True)
class MeterConfig:
    sap: int
    link: str  # a [[links]] or a [[meshes]] name
    physical_address: int = -1  # on a serial line (required there)
    logical_device: int = 1  # the HDLC upper address on a line, the wrapper wPort on a mesh
    address: str = ""  # on a mesh: the meter's IPv6 address (required there)
    eui64: str = ""  # on a mesh, optional: 16 hex digits; the meter keeps its SAP when its address changes
    transport: str = "udp"  # on a mesh: "udp", or "tcp" for a meter that listens only on TCP (one connection each)

    @property
    def eui64_bytes(self) -> bytes | None:
        return bytes.fromhex(self.eui64.replace(":", "").replace("-", "")) if self.eui64 else None


EVENT_LOOPS = ("auto", "uvloop", "asyncio")


@dataclass(frozen=True, slots=True)
class RelayConfig:
    exchange_timeout_s: float = 10.0  # the HES gets an exception-response after this
    association_idle_s: float = 300.0  # an association with no traffic is released (DISC)
    priority_classes: tuple[int, ...] = (70,)  # plain ACTIONs on these interface classes go first (70: disconnect)
    gateway_any_address: bool = False  # gateway-requests may name unregistered addresses (registered, bounded)
    event_loop: str = "auto"  # auto: uvloop when installed (less CPU per relayed exchange), else asyncio's own


@dataclass(frozen=True, slots=True)
class PathsConfig:
    # Empty means: systemd's $STATE_DIRECTORY / $RUNTIME_DIRECTORY, else the FHS places.
    state_directory: str = ""
    runtime_directory: str = ""
    keys_file: str = ""  # the gateway's OWN keys (management logical device); never meter keys


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    sap_first: int = 17
    sap_last: int = 0x3FFF
    quarantine_days: float = 30.0  # a HES may cache the SAP list for a billing period
    flush_interval_s: float = 30.0  # hot values (last seen, counters) reach the disk this often
    identify: bool = True  # read the logical device name on first contact
    # A push from an unknown address registers a meter (the meter medium is not authenticated: bounded)
    push_registration: bool = True
    push_registrations_per_hour: float = 12.0  # new meters registered by pushes, refilled at this rate
    push_registration_burst: int = 4  # ... and at most this many at once
    push_registration_max_pending: int = 16  # push-registered meters still waiting for their identity read


@dataclass(frozen=True, slots=True)
class ScanConfig:
    link: str
    first: int = 16
    last: int = 64
    interval_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class ManagementConfig:
    name: str = "DLMSGW0000000001"  # the gateway's logical device name (0.0.42.0.0.255), 16 characters
    client_sap: int = 1  # the management client (HLS-GMAC with the gateway's own keys)


@dataclass(frozen=True, slots=True)
class PushConfig:
    """One push destination: meter alarms and notifications go there, store-and-forward."""

    name: str
    host: str = ""  # outbound TCP to the HES; empty = only over a subscribed HES connection
    port: int = WRAPPER_PORT
    deliver_to_subscribed: bool = True  # prefer an open HES connection that holds a SAP 1 association
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0  # capped exponential back-off
    form: str = "sap"  # "sap": source wPort = the meter's SAP; "gateway": in a gateway-response (E7)


@dataclass(frozen=True, slots=True)
class PushQueueConfig:
    max_bytes: int = 4 * 1024 * 1024  # oldest dropped first (counted) beyond this
    max_age_days: float = 7.0


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str = ""  # empty: no metrics endpoint (the default); e.g. "127.0.0.1" or "::"
    port: int = 9959  # GET /metrics, Prometheus text format


@dataclass(frozen=True, slots=True)
class DialOutConfig:
    """The gateway connects out to a HES (behind carrier NAT) and serves wrapper traffic on it."""

    host: str
    port: int = WRAPPER_PORT
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0


@dataclass(frozen=True, slots=True)
class StandbyConfig:
    """A pair of gateways (issue 15): this one's role at first start, its peer, the replication channel."""

    role: str = ""  # "" = a lone gateway; "primary" or "standby": the role at the very first start
    peer: str = ""  # the other gateway's replication address (its own address, not the floating one)
    peer_port: int = 4060
    listen: str = "0.0.0.0"  # where this gateway serves its registry to the peer while primary
    port: int = 4060
    secret_file: str = ""  # a 0600 file holding the pair's replication secret (32 bytes in hex); never a meter key
    hand_back: str = "manual"  # "manual": a returning primary stays standby; "automatic": VRRP preempts
    shared_medium: bool = True  # serial lines (RS-485: one master): a standby never opens them
    reconnect_s: float = 1.0  # a standby dials its primary again this often after a failure
    handover_wait_s: float = 5.0  # a promotion waits this long for a live primary peer to let go, else is refused
    # `health` fails when a line that should be open could not be reopened for this long (a dead
    # adapter: let the peer, with its own, take over); 0 = a line being reopened is always healthy
    unhealthy_line_down_s: float = 30.0

    @property
    def paired(self) -> bool:
        return bool(self.role)


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "json"  # json for the journal, console for a person


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    wan: WanConfig = field(default_factory=WanConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    log: LogConfig = field(default_factory=LogConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    management: ManagementConfig = field(default_factory=ManagementConfig)
    links: tuple[LinkConfig, ...] = ()
    meshes: tuple[MeshConfig, ...] = ()
    meters: tuple[MeterConfig, ...] = ()
    scan: tuple[ScanConfig, ...] = ()
    push: tuple[PushConfig, ...] = ()
    push_queue: PushQueueConfig = field(default_factory=PushQueueConfig)
    dial_out: tuple[DialOutConfig, ...] = ()
    poller: PollerConfig = field(default_factory=PollerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    standby: StandbyConfig = field(default_factory=StandbyConfig)


def check_wan(config: WanConfig) -> list[tuple[str, str]]:
    """Problems in a [wan] table, as (key, message) pairs; empty when it is usable."""
    problems: list[tuple[str, str]] = []
    for entry in config.allow:
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            problems.append(("allow", f"{entry!r} is not an IP address or network (10.1.0.0/16, 2001:db8::/32)"))
    tls = {"tls_certificate_file": config.tls_certificate_file, "tls_private_key_file": config.tls_private_key_file,
           "tls_client_ca_file": config.tls_client_ca_file}
    if any(tls.values()) and not all(tls.values()):
        missing = next(key for key, value in tls.items() if not value)
        problems.append((missing, "TLS needs all three of tls_certificate_file, tls_private_key_file and "
                                  "tls_client_ca_file (a HES must present a certificate)"))
    for key in ("max_connections", "max_connections_per_peer", "max_associations_per_peer"):
        if getattr(config, key) < 1:
            problems.append((key, "must be >= 1"))
    for key in ("idle_timeout_s", "first_pdu_timeout_s", "pdu_timeout_s"):
        if not getattr(config, key) > 0:
            problems.append((key, "must be > 0"))
    if not (config.tcp_keepalive_s == 0 or 1 <= config.tcp_keepalive_s <= KEEPALIVE_IDLE_MAX_S):
        problems.append(("tcp_keepalive_s", f"must be 0 (off) or 1..{KEEPALIVE_IDLE_MAX_S}"))
    if not 0 <= config.tcp_user_timeout_s <= USER_TIMEOUT_MAX_S:
        problems.append(("tcp_user_timeout_s", f"must be 0 (off) or up to {USER_TIMEOUT_MAX_S}"))
    return problems


_Fail = Callable[[str, "int | None", str, str], None]  # Problems.fail


def _networks(links: tuple[LinkConfig, ...], meshes: tuple[MeshConfig, ...]) -> list[tuple[str, int, int, str]]:
    """(table, index, network id, name) of every meter network; an unset id is its place, from 1: lines first."""
    found = [("links", i, link.network_id if link.network_id >= 0 else i + 1, link.name)
             for i, link in enumerate(links)]
    found += [("meshes", i, mesh.network_id if mesh.network_id >= 0 else len(links) + i + 1, mesh.name)
              for i, mesh in enumerate(meshes)]
    return found


def network_ids(links: tuple[LinkConfig, ...], meshes: tuple[MeshConfig, ...] = ()) -> dict[int, str]:
    """Gateway-protocol network id -> line or mesh name (unset: 1 + its place in [[links]], then [[meshes]])."""
    return {network: name for _, _, network, name in _networks(links, meshes)}


def _multicast(address: str) -> bool:
    try:
        return ipaddress.IPv6Address(address).is_multicast
    except ValueError:
        return False


def _check_meshes(config: GatewayConfig, fail: _Fail) -> None:
    for i, mesh in enumerate(config.meshes):
        try:
            ipaddress.IPv6Address(mesh.source_address)
        except ValueError:
            fail("meshes", i, "source_address", f"{mesh.source_address!r} is not an IPv6 address (\"::\": any)")
        if not 0 <= mesh.port <= 65535:
            fail("meshes", i, "port", "must be 0..65535 (0: any, for tests)")
        if not 1 <= mesh.max_in_flight <= 1024:
            fail("meshes", i, "max_in_flight", "must be 1..1024")
        if not 0 <= mesh.max_queued <= 100000:
            fail("meshes", i, "max_queued", "must be 0..100000")
        if not mesh.response_timeout_s > 0:
            fail("meshes", i, "response_timeout_s", "must be > 0")
        if mesh.broadcast_group and not _multicast(mesh.broadcast_group):
            fail("meshes", i, "broadcast_group", f"{mesh.broadcast_group!r} is not an IPv6 multicast address "
                                                 "(e.g. \"ff03::1\"; \"\": off)")
        if mesh.wisun_bus not in ("", "system") and not mesh.wisun_bus.startswith(("unix:", "tcp:")):
            fail("meshes", i, "wisun_bus", "must be \"system\", a D-Bus address (unix:path=...) or \"\" (off)")


def _check_mesh_meter(meter: MeterConfig, i: int, fail: _Fail) -> tuple[str, int | str, int] | None:
    """Problems of a [[meters]] entry on a mesh; its place (mesh, canonical IPv6, wPort) when it has one."""
    if meter.physical_address != -1:
        fail("meters", i, "physical_address", f"{meter.link!r} is a mesh: give the meter's IPv6 \"address\"")
    if not 0 <= meter.logical_device <= 0xFFFF:
        fail("meters", i, "logical_device", "must be a wrapper wPort, 0..65535")
    if meter.transport not in TRANSPORTS:
        fail("meters", i, "transport", "must be \"udp\" or \"tcp\"")
    if meter.eui64:
        try:
            if len(meter.eui64_bytes or b"") != 8:
                raise ValueError
        except ValueError:
            fail("meters", i, "eui64", "must be 16 hex digits (colons or dashes allowed)")
    try:
        return (meter.link, canonical_ip(meter.address), meter.logical_device)
    except RegistryError:
        fail("meters", i, "address", f"{meter.address!r} is not an IPv6 address (or [address]:port)"
             if meter.address else "a meter on a mesh needs its IPv6 address")
        return None


def _check(config: GatewayConfig, problems: Problems) -> None:
    fail = problems.fail
    seen_networks: dict[int, str] = {}
    for table, index, network, network_name in _networks(config.links, config.meshes):
        network_id = config.links[index].network_id if table == "links" else config.meshes[index].network_id
        if not -1 <= network_id <= 255:
            fail(table, index, "network_id", f"must be 0..255 (or -1: its place in [[{table}]])")
        elif network in seen_networks:
            fail(table, index, "network_id", f"network {network} is already {seen_networks[network]!r}'s")
        seen_networks.setdefault(network, network_name)
    for index, link in enumerate(config.links):
        if link.max_waiting < 1:
            fail("links", index, "max_waiting", "must be >= 1")
        if link.max_wait_s <= 0:
            fail("links", index, "max_wait_s", "must be > 0")
        if not 0.05 <= link.broadcast_share <= 1.0:
            fail("links", index, "broadcast_share", "must be 0.05..1.0")
        if not 1 <= link.concurrent_exchanges <= MAX_CONCURRENT_EXCHANGES:
            fail("links", index, "concurrent_exchanges", f"must be 1..{MAX_CONCURRENT_EXCHANGES}")
    _check_meshes(config, fail)
    for index, push in enumerate(config.push):
        if push.form not in ("sap", "gateway"):
            fail("push", index, "form", "must be \"sap\" or \"gateway\"")
    if not 1 <= config.wan.port <= 65535:
        fail("wan", None, "port", "must be 1..65535")
    for key, message in check_wan(config.wan):
        fail("wan", None, key, message)
    if not 8 <= config.wan.max_apdu <= 65535:
        fail("wan", None, "max_apdu", "must be 8..65535")
    if not 1 <= config.metrics.port <= 65535:
        fail("metrics", None, "port", "must be 1..65535")
    if config.relay.exchange_timeout_s <= 0:
        fail("relay", None, "exchange_timeout_s", "must be > 0")
    if config.relay.association_idle_s <= 0:
        fail("relay", None, "association_idle_s", "must be > 0")
    if config.relay.event_loop not in EVENT_LOOPS:
        fail("relay", None, "event_loop", "must be auto, uvloop or asyncio")
    if config.log.level not in ("debug", "info", "warning", "error"):
        fail("log", None, "level", "must be debug, info, warning or error")
    if config.log.format not in ("json", "console"):
        fail("log", None, "format", "must be json or console")
    names: set[str] = set()
    devices: dict[str, int] = {}
    for i, link in enumerate(config.links):
        if link.name in names:
            fail("links", i, "name", f"duplicate link name {link.name!r}")
        names.add(link.name)
        if link.device in devices:
            fail("links", i, "device", f"{link.device} is already links[{devices[link.device]}] "
                 "(one data link per device: put every meter of that port under one [[links]])")
        devices.setdefault(link.device, i)
        if not 32 <= link.max_info <= 2030:
            fail("links", i, "max_info", "must be 32..2030 (IEC 62056-46)")
        if not 1 <= link.window <= 7:
            fail("links", i, "window", "must be 1..7 (IEC 62056-46)")
        if link.response_timeout_s <= 0:
            fail("links", i, "response_timeout_s", "must be > 0")
        if link.inter_octet_timeout_s <= 0:
            fail("links", i, "inter_octet_timeout_s", "must be > 0")
        if not 0 <= link.max_retries <= 10:
            fail("links", i, "max_retries", "must be 0..10")
    mesh_names = {mesh.name for mesh in config.meshes}
    for i, mesh in enumerate(config.meshes):
        if mesh.name in names or any(m.name == mesh.name for m in config.meshes[:i]):
            fail("meshes", i, "name", f"{mesh.name!r} is already a line or mesh name")
    reg = config.registry
    saps: dict[int, int] = {}
    places: set[tuple[str, int | str, int]] = set()
    for i, meter in enumerate(config.meters):
        if meter.link not in names and meter.link not in mesh_names:
            fail("meters", i, "link", f"no link or mesh named {meter.link!r}")
        if meter.sap in saps:
            fail("meters", i, "sap", f"SAP {meter.sap} is already meters[{saps[meter.sap]}]'s; each meter needs "
                 f"its own, {reg.sap_first}..{reg.sap_last}")
        saps.setdefault(meter.sap, i)
        place: tuple[str, int | str, int] | None
        if meter.link in mesh_names:
            place = _check_mesh_meter(meter, i, fail)
        else:
            if meter.address or meter.eui64 or meter.transport != "udp":
                fail("meters", i, "address" if meter.address else "eui64" if meter.eui64 else "transport",
                     f"{meter.link!r} is a serial line: give the meter's \"physical_address\"")
            place = (meter.link, meter.physical_address, meter.logical_device)
            problem = meter_address_problem(logical_device=meter.logical_device,
                                            physical_address=meter.physical_address)
            if problem is not None:
                unset = meter.physical_address == -1 and problem.field == "physical_address"
                fail("meters", i, problem.field,
                     f"a meter on a serial line needs its HDLC physical address: {problem.message}" if unset
                     else problem.message)
        if place is not None and place in places:
            fail("meters", i, "address" if meter.link in mesh_names else "physical_address",
                 "another meter has the same link and address")
        if place is not None:
            places.add(place)
        if not reg.sap_first <= meter.sap <= reg.sap_last:
            fail("meters", i, "sap", f"outside the SAP range {reg.sap_first}..{reg.sap_last} "
                 "(SAP 1 is the gateway itself)")
    if not 2 <= reg.sap_first <= reg.sap_last <= 0xFFFF:
        fail("registry", None, "sap_first", "need 2 <= sap_first <= sap_last <= 65535")
    if reg.quarantine_days < 0:
        fail("registry", None, "quarantine_days", "must be >= 0")
    if reg.flush_interval_s <= 0:
        fail("registry", None, "flush_interval_s", "must be > 0")
    if reg.push_registrations_per_hour < 0:
        fail("registry", None, "push_registrations_per_hour", "must be >= 0")
    if not 0 <= reg.push_registration_burst <= 1000:
        fail("registry", None, "push_registration_burst", "must be 0..1000")
    if not 0 <= reg.push_registration_max_pending <= 10000:
        fail("registry", None, "push_registration_max_pending", "must be 0..10000")
    for i, scan in enumerate(config.scan):
        if scan.link not in names:
            fail("scan", i, "link", f"no link named {scan.link!r}")
        if not 0x10 <= scan.first <= scan.last <= 0x3FFD:
            fail("scan", i, "first", "need 16 <= first <= last <= 16381")
        if scan.interval_s < 60:
            fail("scan", i, "interval_s", "must be >= 60 (a scan occupies the line)")
    push_names: set[str] = set()
    for i, push in enumerate(config.push):
        if push.name in push_names:
            fail("push", i, "name", f"duplicate push destination {push.name!r}")
        push_names.add(push.name)
        if not push.host and not push.deliver_to_subscribed:
            fail("push", i, "host", "a destination needs a host or deliver_to_subscribed = true")
        if not 0 < push.reconnect_min_s <= push.reconnect_max_s:
            fail("push", i, "reconnect_min_s", "need 0 < reconnect_min_s <= reconnect_max_s")
    if config.push_queue.max_bytes < 1024:
        fail("push_queue", None, "max_bytes", "must be >= 1024")
    if config.push_queue.max_age_days <= 0:
        fail("push_queue", None, "max_age_days", "must be > 0")
    for i, dial in enumerate(config.dial_out):
        if not 0 < dial.reconnect_min_s <= dial.reconnect_max_s:
            fail("dial_out", i, "reconnect_min_s", "need 0 < reconnect_min_s <= reconnect_max_s")
    name = config.management.name.encode()
    if not 1 <= len(name) <= 32 or not config.management.name.isascii():
        fail("management", None, "name", "must be 1..32 ASCII characters")
    if not 1 <= config.management.client_sap <= 0x7F or config.management.client_sap == 16:
        fail("management", None, "client_sap", "must be 1..127 and not 16 (the public client)")
    _check_standby(config, problems)


def _check_standby(config: GatewayConfig, problems: Problems) -> None:
    standby, fail = config.standby, problems.fail
    if standby.paired and not standby.shared_medium and config.links:
        fail("standby", None, "shared_medium", "serial [[links]] are a shared medium (RS-485: one master): "
             "a standby must not open them; false is for a mesh only")
    if standby.paired and config.poller.enabled:
        fail("standby", None, "role", "legacy polling ([poller]) in a standby pair is not supported yet")
    if standby.role not in ("", "primary", "standby"):
        fail("standby", None, "role", "must be \"primary\" or \"standby\"")
    if standby.hand_back not in ("manual", "automatic"):
        fail("standby", None, "hand_back", "must be \"manual\" or \"automatic\"")
    for key in ("port", "peer_port"):
        if not 1 <= getattr(standby, key) <= 65535:
            fail("standby", None, key, "must be 1..65535")
    if standby.reconnect_s <= 0:
        fail("standby", None, "reconnect_s", "must be > 0")
    if standby.handover_wait_s <= 0:
        fail("standby", None, "handover_wait_s", "must be > 0")
    if standby.unhealthy_line_down_s < 0:
        fail("standby", None, "unhealthy_line_down_s", "must be >= 0")
    if standby.paired:
        for key in ("peer", "secret_file"):
            if not getattr(standby, key):
                fail("standby", None, key, "is needed when a role is given")


_TABLES = ("wan", "relay", "log", "paths", "registry", "management", "poller", "push_queue", "metrics", "standby")


def _tables(raw: Mapping[str, Any], key: str, problems: Problems) -> list[Any]:
    """The [[key]] tables of the file (a wrong shape is a problem, and counts as none)."""
    tables = raw.get(key, [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.fail("", None, key, f"expected [[{key}]] tables")
        return []
    return tables


def _table(raw: Mapping[str, Any], key: str, problems: Problems) -> Mapping[str, Any]:
    table = raw.get(key, {})
    if not isinstance(table, dict):
        problems.fail("", None, key, f"expected a [{key}] table")
        return {}
    return table


def parse_config(text: str) -> GatewayConfig:
    """Parse and validate configuration text. Raises ConfigError naming every problem's key and line."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    problems = Problems(SourceLines(text))
    top = {f.name for f in fields(GatewayConfig)}
    for key in raw:
        if key not in top:
            problems.unknown("", None, key)
    tables = {key: _table(raw, key, problems) for key in _TABLES}
    config = GatewayConfig(
        wan=build_table(WanConfig, tables["wan"], problems, "wan"),
        relay=build_table(RelayConfig, tables["relay"], problems, "relay"),
        log=build_table(LogConfig, tables["log"], problems, "log"),
        paths=build_table(PathsConfig, tables["paths"], problems, "paths"),
        registry=build_table(RegistryConfig, tables["registry"], problems, "registry"),
        management=build_table(ManagementConfig, tables["management"], problems, "management"),
        links=tuple(build_table(LinkConfig, t, problems, "links", i)
                    for i, t in enumerate(_tables(raw, "links", problems))),
        meshes=tuple(build_table(MeshConfig, t, problems, "meshes", i)
                     for i, t in enumerate(_tables(raw, "meshes", problems))),
        meters=tuple(build_table(MeterConfig, t, problems, "meters", i)
                     for i, t in enumerate(_tables(raw, "meters", problems))),
        scan=tuple(build_table(ScanConfig, t, problems, "scan", i)
                   for i, t in enumerate(_tables(raw, "scan", problems))),
        push=tuple(build_table(PushConfig, t, problems, "push", i)
                   for i, t in enumerate(_tables(raw, "push", problems))),
        push_queue=build_table(PushQueueConfig, tables["push_queue"], problems, "push_queue"),
        dial_out=tuple(build_table(DialOutConfig, t, problems, "dial_out", i)
                       for i, t in enumerate(_tables(raw, "dial_out", problems))),
        poller=parse_poller(tables["poller"], problems),
        metrics=build_table(MetricsConfig, tables["metrics"], problems, "metrics"),
        standby=build_table(StandbyConfig, tables["standby"], problems, "standby"),
    )
    _check(config, problems)
    problems.raise_if_any()
    return config


def check_polling_credentials(config: GatewayConfig, text: str) -> None:
    """Every poll group's credentials are in the polling keys file (when the file can be read here).

    A file that cannot be read is not an error here: the daemon runs without it (groups with
    credentials fail and say so), and a technician may check the file without the service's rights.
    """
    poller = config.poller
    if not poller.enabled or not any(group.credentials for group in poller.groups):
        return
    from gateway.poller.credentials import CredentialsError, load_polling_keys  # noqa: PLC0415 - only with polling

    path = Path(poller.keys_file) if poller.keys_file else DEFAULT_POLLING_KEYS
    try:
        keys = load_polling_keys(path)
    except CredentialsError:
        return
    problems = Problems(SourceLines(text))
    for i, group in enumerate(poller.groups):
        if group.credentials and group.credentials not in keys.named:
            held = ", ".join(sorted(keys.named)) or "nothing"
            problems.fail("poller.groups", i, "credentials",
                          f"no credentials {group.credentials!r} in {path} (it holds: {held})")
    problems.raise_if_any()


def load_config(path: Path) -> GatewayConfig:
    """Read and validate a configuration file, and the poll groups' credential names against their keys file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        config = parse_config(text)
        check_polling_credentials(config, text)
    except ConfigError as exc:
        raise ConfigError(exc.problems, file=str(path)) from None
    return config
