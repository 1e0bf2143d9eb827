"""Configuration: one TOML file, validated into frozen objects at start.

Unknown keys and wrong types are errors that name the key and its line, because the person
reading the error is a technician on a laptop next to a pole, not the author of this file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from gateway.codec.wrapper import WRAPPER_PORT
from gateway.poller.config import PollerConfig, parse_poller
from gateway.wan.limits import check_wan


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One mistake in a configuration file: the key it is about, its line, and what is wrong."""

    key: str  # 'links[0].baudrate', 'links[0]' for a whole table, '' for the whole file
    line: int | None
    message: str
    text: str  # the sentence a person reads, key and line included

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "line": self.line, "message": self.message}


class ConfigError(Exception):
    """A configuration file we refuse to run with: every problem found in it, in the order of the file."""

    def __init__(self, problems: str | list[ConfigProblem], *, file: str = "") -> None:
        if isinstance(problems, str):
            problems = [ConfigProblem(key="", line=None, message=problems, text=problems)]
        self.problems = problems
        self.file = file
        prefix = f"{file}: " if file else ""
        super().__init__("\n".join(prefix + problem.text for problem in problems))


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
_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?")
_KEY_PATH = r"[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*'"
_DOTTED_KEY = rf"(?:{_KEY_PATH})(?:\s*\.\s*(?:{_KEY_PATH}))*"
_ASSIGNMENT = re.compile(rf"^\s*({_DOTTED_KEY})\s*=\s*(.*)$")
_INLINE_KEY = re.compile(rf"(?:^|[{{,])\s*({_DOTTED_KEY})\s*=")
_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'[^']*'")
_INLINE_TABLE = re.compile(r"\{[^{}]*\}")
ARRAY_TABLES = ("links", "meters", "scan", "push", "dial_out", "poller.groups")


def _parts(dotted: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.findall(_KEY_PATH, dotted)]


class SourceLines:
    """Finds the line of a key in the TOML text (tomllib keeps no positions).

    Knows [tables], [[arrays of tables]], dotted keys (a.b = 1), inline tables (t = {a = 1})
    and arrays of inline tables (t = [{a = 1}, {a = 2}], over several lines too).
    """

    def __init__(self, text: str) -> None:
        self._keys: dict[tuple[str, int, str], int] = {}  # (table, index, key) -> first line
        table, counts = "", dict[str, int]()
        index = 0
        array: tuple[str, int] | None = None  # an array of inline tables still open: (its table, depth)
        array_index = -1
        for number, line in enumerate(text.splitlines(), start=1):
            bare = _STRING.sub('""', line).split("#", 1)[0]  # strings out first: they may hold a '#'
            if array is not None:
                array_index = self._inline_tables(array[0], array_index, bare, number)
                depth = array[1] + bare.count("[") - bare.count("]")
                array = (array[0], depth) if depth > 0 else None
                continue
            if header := _HEADER.match(line):
                table = ".".join(_parts(header.group(2)))
                index = counts.get(table, -1) + 1 if header.group(1) == "[[" else 0
                counts[table] = index
                self._note(table, index, "", number)
                continue
            assignment = _ASSIGNMENT.match(line)
            if not assignment:
                continue
            parts = _parts(assignment.group(1))
            owner = self._dotted(table, index, parts, number)
            value = bare.partition("=")[2].strip()
            if value.startswith("{"):
                self._inline_keys(owner, 0, value, number)
            elif value.startswith("[") and ("{" in value or value == "["):
                array_index = self._inline_tables(owner, -1, value[1:], number)
                depth = value.count("[") - value.count("]")
                array = (owner, depth) if depth > 0 else None

    def _note(self, table: str, index: int, key: str, number: int) -> None:
        self._keys.setdefault((table, index, key), number)

    def _dotted(self, table: str, index: int, parts: list[str], number: int) -> str:
        """Record a.b.c = ... in table: a, a.b and a.b.c each have this line; returns the table a.b.c names."""
        owner = table
        for depth, part in enumerate(parts):
            self._note(owner, index if depth == 0 else 0, part, number)
            if depth < len(parts) - 1:
                self._note(f"{owner}.{part}".lstrip("."), 0, "", number)
            owner = f"{owner}.{part}".lstrip(".")
        return owner

    def _inline_keys(self, table: str, index: int, text: str, number: int) -> None:
        for key in _INLINE_KEY.finditer(text):
            self._dotted_in(table, index, _parts(key.group(1)), number)

    def _dotted_in(self, table: str, index: int, parts: list[str], number: int) -> None:
        self._note(table, index, parts[0], number)
        for depth in range(1, len(parts)):
            self._note(".".join([table, *parts[:depth]]), 0, parts[depth], number)

    def _inline_tables(self, table: str, index: int, text: str, number: int) -> int:
        for inline in _INLINE_TABLE.finditer(text):
            index += 1
            self._note(table, index, "", number)
            self._inline_keys(table, index, inline.group(0), number)
        return index

    def find(self, table: str, index: int, key: str) -> int | None:
        return self._keys.get((table, index, key))


def key_name(table: str, index: int | None, key: str) -> str:
    """'links[0].baudrate', 'wan.port', 'poller.mqtt.qos'."""
    owner = f"{table}[{index}]" if index is not None and table in ARRAY_TABLES else table
    return f"{owner}.{key}".strip(".")


class Problems:
    """Collects every problem of one file, each with its key and line (one loader, one format)."""

    def __init__(self, lines: SourceLines) -> None:
        self.lines = lines
        self.found: list[ConfigProblem] = []
        self._keys: set[str] = set()

    def line_of(self, table: str, index: int | None, key: str) -> int | None:
        number = self.lines.find(table, index or 0, key)
        if number is None and not table:
            number = self.lines.find(key, 0, "")  # a top-level table: its [header] line
        if number is None and key:
            number = self.lines.find(table, index or 0, "")  # at least the table's header
        return number

    def fail(self, table: str, index: int | None, key: str, message: str) -> None:
        """A key whose value is wrong (only its first problem is told: the rest may follow from it)."""
        name = key_name(table, index, key)
        if name in self._keys:
            return
        self._keys.add(name)
        number = self.line_of(table, index, key)
        self.found.append(ConfigProblem(key=name, line=number, message=message,
                                        text=f"'{name}'" + (f" (line {number})" if number else "") + f": {message}"))

    def unknown(self, table: str, index: int | None, key: str) -> None:
        name = key_name(table, index, key)
        self._keys.add(name)
        number = self.line_of(table, index, key)
        self.found.append(ConfigProblem(key=name, line=number, message="unknown key",
                                        text=f"unknown key '{name}'" + (f" (line {number})" if number else "")))

    def missing(self, table: str, index: int | None, keys: list[str]) -> None:
        owner = key_name(table, index, "")
        self._keys.update(key_name(table, index, key) for key in keys)
        number = self.lines.find(table, index or 0, "")
        at = f" (the table at line {number})" if number else ""
        message = f"missing required key {', '.join(keys)}"
        self.found.append(ConfigProblem(key=owner, line=number, message=message, text=f"{owner}{at}: {message}"))

    def raise_if_any(self) -> None:
        if self.found:
            ordered = sorted(self.found, key=lambda p: (p.line is None, p.line or 0))  # the order of the file
            raise ConfigError(ordered)


_PLACEHOLDERS: dict[Any, Any] = {str: "", int: 0, float: 0.0, bool: False}


def _convert(value: Any, hint: Any) -> Any:
    """The value as the field's type, or raise ValueError saying what is wrong."""
    origin = get_origin(hint)
    if origin is tuple:
        (item,) = get_args(hint)[:1]
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {type(value).__name__}")
        return tuple(_convert(v, item) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ValueError(f"expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def build_table(cls: type[_T], raw: Mapping[str, Any], problems: Problems, table: str,
                index: int | None = None) -> _T:
    """One table as ``cls``; a wrong or missing value is told to ``problems`` and replaced by a stand-in."""
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if key not in known:
            problems.unknown(table, index, key)
    values = {}
    missing = []
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in raw:
            try:
                values[f.name] = _convert(raw[f.name], hints[f.name])
                continue
            except ValueError as exc:
                problems.fail(table, index, f.name, str(exc))
        if f.default is MISSING and f.default_factory is MISSING:
            if f.name not in raw:
                missing.append(f.name)
            values[f.name] = () if get_origin(hints[f.name]) is tuple else _PLACEHOLDERS.get(hints[f.name])
    if missing:
        problems.missing(table, index, missing)
    return cls(**values)


def _check(config: GatewayConfig, problems: Problems) -> None:
    fail = problems.fail
    if not 1 <= config.wan.port <= 65535:
        fail("wan", None, "port", "must be 1..65535")
    for key, message in check_wan(config.wan):
        fail("wan", None, key, message)
    if not 8 <= config.wan.max_apdu <= 65535:
        fail("wan", None, "max_apdu", "must be 8..65535")
    if config.relay.exchange_timeout_s <= 0:
        fail("relay", None, "exchange_timeout_s", "must be > 0")
    if config.relay.association_idle_s <= 0:
        fail("relay", None, "association_idle_s", "must be > 0")
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
    reg = config.registry
    saps: dict[int, int] = {}
    places: set[tuple[str, int, int]] = set()
    for i, meter in enumerate(config.meters):
        if meter.link not in names:
            fail("meters", i, "link", f"no link named {meter.link!r}")
        if meter.sap in saps:
            fail("meters", i, "sap", f"SAP {meter.sap} is already meters[{saps[meter.sap]}]'s; each meter needs "
                 f"its own, {reg.sap_first}..{reg.sap_last}")
        saps.setdefault(meter.sap, i)
        if not 0x10 <= meter.physical_address <= 0x3FFD:
            fail("meters", i, "physical_address", "must be 16..16381 (IEC 62056-46 device addresses)")
        if not 0 <= meter.logical_device <= 0x3FFF:
            fail("meters", i, "logical_device", "must be 0..16383")
        place = (meter.link, meter.physical_address, meter.logical_device)
        if place in places:
            fail("meters", i, "physical_address", "another meter has the same link and address")
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


_TABLES = ("wan", "relay", "log", "paths", "registry", "management", "poller", "push_queue")


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
    from gateway.poller.service import DEFAULT_POLLING_KEYS  # noqa: PLC0415

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
