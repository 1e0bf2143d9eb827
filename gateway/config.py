"""Configuration: one TOML file, validated into frozen objects at start.

Unknown keys and wrong types are errors that name the key and its line, because the person
reading the error is a technician on a laptop next to a pole, not the author of this file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from gateway.codec.hdlc import meter_address_problem
from gateway.codec.wrapper import WRAPPER_PORT
from gateway.poller.config import PollerConfig, parse_poller
from gateway.wan.limits import check_wan


class ConfigError(Exception):
    """A configuration file we refuse to run with."""


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
    max_info: int = 128  # proposed max information field length, IEC 62056-46 default
    window: int = 1
    inactivity_timeout_s: float = 120.0  # IEC 62056-46, HDLC setup IC 23 default
    reopen_interval_s: float = 1.0  # a lost device is tried again this often (udev "add" reopens at once)


@dataclass(frozen=True, slots=True)
class MeterConfig:
    sap: int
    link: str
    physical_address: int
    logical_device: int = 1


@dataclass(frozen=True, slots=True)
class RelayConfig:
    exchange_timeout_s: float = 10.0  # the HES gets an exception-response after this
    association_idle_s: float = 300.0  # an association with no traffic is released (DISC)


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


@dataclass(frozen=True, slots=True)
class PushQueueConfig:
    max_bytes: int = 4 * 1024 * 1024  # oldest dropped first (counted) beyond this
    max_age_days: float = 7.0


@dataclass(frozen=True, slots=True)
class DialOutConfig:
    """The gateway connects out to a HES (behind carrier NAT) and serves wrapper traffic on it."""

    host: str
    port: int = WRAPPER_PORT
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0


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
    meters: tuple[MeterConfig, ...] = ()
    scan: tuple[ScanConfig, ...] = ()
    push: tuple[PushConfig, ...] = ()
    push_queue: PushQueueConfig = field(default_factory=PushQueueConfig)
    dial_out: tuple[DialOutConfig, ...] = ()
    poller: PollerConfig = field(default_factory=PollerConfig)


_T = TypeVar("_T")
_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"]+)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"]+)\s*=")


class SourceLines:
    """Finds the line of a key in the TOML text (tomllib keeps no positions)."""

    def __init__(self, text: str) -> None:
        self._keys: list[tuple[str, int, str, int]] = []  # (table, index, key, line)
        table, counts = "", dict[str, int]()
        index = 0
        for number, line in enumerate(text.splitlines(), start=1):
            if header := _HEADER.match(line):
                table = header.group(2).replace('"', "")
                index = counts.get(table, -1) + 1 if header.group(1) == "[[" else 0
                counts[table] = index
                self._keys.append((table, index, "", number))
            elif key := _KEY.match(line):
                self._keys.append((table, index, key.group(1).replace('"', ""), number))

    def find(self, table: str, index: int, key: str) -> int | None:
        for t, i, k, number in self._keys:
            if t == table and i == index and k == key:
                return number
        return None


def where(lines: SourceLines, table: str, index: int, key: str) -> str:
    number = lines.find(table, index, key)
    if number is None and not table:
        number = lines.find(key, 0, "")  # a top-level table: its [header] line
    arrays = ("links", "meters", "scan", "push", "dial_out")
    name = f"{table}[{index}].{key}" if table in arrays else f"{table}.{key}".lstrip(".")
    return f"'{name}'" + (f" (line {number})" if number else "")


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin = get_origin(hint)
    if origin is tuple:
        (item,) = get_args(hint)[:1]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return tuple(_convert(v, item, where) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def build_table(cls: type[_T], raw: Mapping[str, Any], lines: SourceLines, table: str, index: int = 0) -> _T:
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown key {where(lines, table, index, key)}")
    values = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in raw:
            values[f.name] = _convert(raw[f.name], hints[f.name], where(lines, table, index, f.name))
    try:
        return cls(**values)
    except TypeError as exc:
        missing = re.findall(r"'(\w+)'", str(exc))
        header = lines.find(table, index, "")
        at = f" (the table at line {header})" if header else ""
        raise ConfigError(f"{table}[{index}]{at}: missing required key {', '.join(missing)}") from None


def _check(config: GatewayConfig, lines: SourceLines) -> None:
    def fail(table: str, index: int, key: str, message: str) -> None:
        raise ConfigError(f"{where(lines, table, index, key)}: {message}")

    if not 1 <= config.wan.port <= 65535:
        fail("wan", 0, "port", "must be 1..65535")
    for key, message in check_wan(config.wan):
        fail("wan", 0, key, message)
    if not 8 <= config.wan.max_apdu <= 65535:
        fail("wan", 0, "max_apdu", "must be 8..65535")
    if config.log.level not in ("debug", "info", "warning", "error"):
        fail("log", 0, "level", "must be debug, info, warning or error")
    if config.log.format not in ("json", "console"):
        fail("log", 0, "format", "must be json or console")
    names: set[str] = set()
    for i, link in enumerate(config.links):
        if link.name in names:
            fail("links", i, "name", f"duplicate link name {link.name!r}")
        names.add(link.name)
        if not 32 <= link.max_info <= 2030:
            fail("links", i, "max_info", "must be 32..2030 (IEC 62056-46)")
        if not 1 <= link.window <= 7:
            fail("links", i, "window", "must be 1..7 (IEC 62056-46)")
        if link.response_timeout_s <= 0 or link.inter_octet_timeout_s <= 0:
            fail("links", i, "response_timeout_s", "timeouts must be > 0")
        if not 0 <= link.max_retries <= 10:
            fail("links", i, "max_retries", "must be 0..10")
    saps: set[int] = set()
    places: set[tuple[str, int, int]] = set()
    for i, meter in enumerate(config.meters):
        if meter.link not in names:
            fail("meters", i, "link", f"no link named {meter.link!r}")
        if not 2 <= meter.sap <= 0xFFFF or meter.sap in saps:
            fail("meters", i, "sap", "must be unique, 2..65535 (SAP 1 is the gateway itself)")
        saps.add(meter.sap)
        problem = meter_address_problem(logical_device=meter.logical_device, physical_address=meter.physical_address)
        if problem is not None:
            fail("meters", i, problem.field, problem.message)
        place = (meter.link, meter.physical_address, meter.logical_device)
        if place in places:
            fail("meters", i, "physical_address", "another meter has the same link and address")
        places.add(place)
        if not config.registry.sap_first <= meter.sap <= config.registry.sap_last:
            fail("meters", i, "sap", f"outside the SAP range {config.registry.sap_first}..{config.registry.sap_last}")
    reg = config.registry
    if not 2 <= reg.sap_first <= reg.sap_last <= 0xFFFF:
        fail("registry", 0, "sap_first", "need 2 <= sap_first <= sap_last <= 65535")
    if reg.quarantine_days < 0 or reg.flush_interval_s <= 0:
        fail("registry", 0, "quarantine_days", "quarantine_days >= 0 and flush_interval_s > 0")
    if reg.push_registrations_per_hour < 0:
        fail("registry", 0, "push_registrations_per_hour", "must be >= 0")
    if not 0 <= reg.push_registration_burst <= 1000:
        fail("registry", 0, "push_registration_burst", "must be 0..1000")
    if not 0 <= reg.push_registration_max_pending <= 10000:
        fail("registry", 0, "push_registration_max_pending", "must be 0..10000")
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
    if config.push_queue.max_bytes < 1024 or config.push_queue.max_age_days <= 0:
        fail("push_queue", 0, "max_bytes", "max_bytes >= 1024 and max_age_days > 0")
    for i, dial in enumerate(config.dial_out):
        if not 0 < dial.reconnect_min_s <= dial.reconnect_max_s:
            fail("dial_out", i, "reconnect_min_s", "need 0 < reconnect_min_s <= reconnect_max_s")
    name = config.management.name.encode()
    if not 1 <= len(name) <= 32 or not config.management.name.isascii():
        fail("management", 0, "name", "must be 1..32 ASCII characters")
    if not 1 <= config.management.client_sap <= 0x7F or config.management.client_sap == 16:
        fail("management", 0, "client_sap", "must be 1..127 and not 16 (the public client)")


def parse_config(text: str) -> GatewayConfig:
    """Parse and validate configuration text. Raises ConfigError naming the key and line."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    lines = SourceLines(text)
    top = {f.name for f in fields(GatewayConfig)}
    for key in raw:
        if key not in top:
            raise ConfigError(f"unknown key {where(lines, '', 0, key)}")
    for key in ("links", "meters", "scan", "push", "dial_out"):
        if key in raw and not isinstance(raw[key], list):
            raise ConfigError(f"{where(lines, '', 0, key)}: expected [[{key}]] tables")
    for key in ("wan", "relay", "log", "paths", "registry", "management", "poller", "push_queue"):
        if key in raw and not isinstance(raw[key], dict):
            raise ConfigError(f"{where(lines, '', 0, key)}: expected a [{key}] table")
    config = GatewayConfig(
        wan=build_table(WanConfig, raw.get("wan", {}), lines, "wan"),
        relay=build_table(RelayConfig, raw.get("relay", {}), lines, "relay"),
        log=build_table(LogConfig, raw.get("log", {}), lines, "log"),
        paths=build_table(PathsConfig, raw.get("paths", {}), lines, "paths"),
        registry=build_table(RegistryConfig, raw.get("registry", {}), lines, "registry"),
        management=build_table(ManagementConfig, raw.get("management", {}), lines, "management"),
        links=tuple(build_table(LinkConfig, t, lines, "links", i) for i, t in enumerate(raw.get("links", []))),
        meters=tuple(build_table(MeterConfig, t, lines, "meters", i) for i, t in enumerate(raw.get("meters", []))),
        scan=tuple(build_table(ScanConfig, t, lines, "scan", i) for i, t in enumerate(raw.get("scan", []))),
        push=tuple(build_table(PushConfig, t, lines, "push", i) for i, t in enumerate(raw.get("push", []))),
        push_queue=build_table(PushQueueConfig, raw.get("push_queue", {}), lines, "push_queue"),
        dial_out=tuple(build_table(DialOutConfig, t, lines, "dial_out", i)
                       for i, t in enumerate(raw.get("dial_out", []))),
        poller=parse_poller(raw.get("poller", {}), lines),
    )
    _check(config, lines)
    return config


def load_config(path: Path) -> GatewayConfig:
    """Read and validate a configuration file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        return parse_config(text)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
