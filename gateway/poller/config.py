"""The [poller] configuration table: groups of meters, what to read, retention, the MQTT uplink.

    [poller]
    enabled = true
    keys_file = "/etc/dlms-gateway/polling-keys.toml"   # credentials, mode 0600
    retention_days = 92
    retention_max_mb = 256
    [[poller.groups]]
    name = "residential"
    meters = [17, 18, "SIM0000000000019"]               # SAPs or logical device names
    credentials = "residential"                         # a name in the keys file
    interval_s = 900
    clock = true
    registers = ["1.0.1.8.0.255", "1.0.2.8.0.255"]
    profiles = ["1.0.99.1.0.255"]                        # load profiles: since the last reading
    event_logs = ["0.0.99.98.0.255"]                     # event logs: since the last reading
    [poller.mqtt]
    host = "broker.example"
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.codec.obis import ObisError, obis
from gateway.config_source import Problems, build_table

DEFAULT_POLLING_KEYS = Path("/etc/dlms-gateway/polling-keys.toml")  # [poller] keys_file when empty

# Ours: DLMS UA 1000-2 reserves client SAPs 0, 1 (management), 16 (public) and 127; a utility that
# lets its concentrator poll provisions a reading client with read-only rights, by convention here 32.
DEFAULT_CLIENT_SAP = 32
MANAGEMENT_CLIENT_SAP = 1
MQTT_PORT = 1883  # IANA: MQTT over TCP


@dataclass(frozen=True, slots=True)
class PollGroup:
    name: str
    meters: tuple[int | str, ...] = ()  # SAPs or logical device names
    credentials: str = ""  # a name in the polling keys file; "" = no authentication, no ciphering
    client_sap: int = DEFAULT_CLIENT_SAP
    allow_management_client: bool = False  # polling as client 1 must be asked for explicitly
    interval_s: float = 900.0
    clock: bool = True
    registers: tuple[str, ...] = ()  # IC 3 registers: value and scaler_unit
    profiles: tuple[str, ...] = ()  # IC 7 load profiles, read by range since the last reading
    event_logs: tuple[str, ...] = ()  # IC 7 event logs, the same way
    first_read_s: float = 86400.0  # a profile never read before: read this far back
    retries: int = 2  # attempts after the first one, within the interval
    retry_backoff_s: float = 5.0  # doubled after each failed attempt
    failure_threshold: int = 3  # consecutive failed polls before the meter is marked failing
    failing_interval_s: float = 0.0  # how often a failing meter is tried; 0 = four intervals


@dataclass(frozen=True, slots=True)
class MqttConfig:
    host: str = ""  # empty: no uplink, readings stay in the store for `dlms-gateway readings`
    port: int = MQTT_PORT
    topic_prefix: str = "dlms-gateway"
    client_id: str = ""  # empty: the gateway's logical device name
    qos: int = 1  # 1 or 2: a reading is marked published only when the broker has acknowledged it
    keepalive_s: int = 60
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0


@dataclass(frozen=True, slots=True)
class PollerConfig:
    enabled: bool = False
    keys_file: str = ""  # empty: /etc/dlms-gateway/polling-keys.toml
    retention_days: float = 92.0  # a quarter: longer than any collection outage we plan for
    retention_max_mb: float = 256.0  # the readings file never grows past this (oldest polls go first)
    polls_per_line: int = 2  # polls interleaved on one line: one thinks while the other transmits
    groups: tuple[PollGroup, ...] = ()
    mqtt: MqttConfig = field(default_factory=MqttConfig)


def parse_poller(raw: Mapping[str, Any], problems: Problems) -> PollerConfig:
    """Validate the [poller] table (problems name the key and its line, like the rest of the file)."""
    top = {k: v for k, v in raw.items() if k not in ("groups", "mqtt")}
    groups_raw = raw.get("groups", [])
    mqtt_raw = raw.get("mqtt", {})
    if not isinstance(groups_raw, list) or not all(isinstance(g, dict) for g in groups_raw):
        problems.fail("poller", None, "groups", "expected [[poller.groups]] tables")
        groups_raw = []
    if not isinstance(mqtt_raw, dict):
        problems.fail("poller", None, "mqtt", "expected a [poller.mqtt] table")
        mqtt_raw = {}
    base = build_table(PollerConfig, top, problems, "poller")
    groups = tuple(build_table(PollGroup, g, problems, "poller.groups", i) for i, g in enumerate(groups_raw))
    mqtt = build_table(MqttConfig, mqtt_raw, problems, "poller.mqtt")
    config = PollerConfig(enabled=base.enabled, keys_file=base.keys_file, retention_days=base.retention_days,
                          retention_max_mb=base.retention_max_mb, polls_per_line=base.polls_per_line,
                          groups=groups, mqtt=mqtt)
    _check(config, problems)
    return config


def _check(config: PollerConfig, errors: Problems) -> None:
    if config.retention_days <= 0:
        errors.fail("poller", None, "retention_days", "must be > 0")
    if config.retention_max_mb < 1:
        errors.fail("poller", None, "retention_max_mb", "must be >= 1")
    if not 1 <= config.polls_per_line <= 8:
        errors.fail("poller", None, "polls_per_line", "must be 1..8")
    names: set[str] = set()
    for i, group in enumerate(config.groups):
        _check_group(group, i, names, errors)
    mqtt = config.mqtt
    if not 1 <= mqtt.port <= 65535:
        errors.fail("poller.mqtt", None, "port", "must be 1..65535")
    if mqtt.qos not in (1, 2):
        errors.fail("poller.mqtt", None, "qos", "must be 1 or 2 (0 could lose readings)")
    if not mqtt.topic_prefix or any(c in mqtt.topic_prefix for c in "+#\0") or mqtt.topic_prefix.endswith("/"):
        errors.fail("poller.mqtt", None, "topic_prefix", "must be a topic without wildcards or a trailing '/'")
    if not 0 < mqtt.reconnect_min_s <= mqtt.reconnect_max_s:
        errors.fail("poller.mqtt", None, "reconnect_min_s", "need 0 < reconnect_min_s <= reconnect_max_s")
    if mqtt.keepalive_s < 5:
        errors.fail("poller.mqtt", None, "keepalive_s", "must be >= 5")


def _check_group(group: PollGroup, i: int, names: set[str], errors: Problems) -> None:
    table = "poller.groups"
    if not group.name or group.name in names:
        errors.fail(table, i, "name", f"must be unique and not empty ({group.name!r})")
    names.add(group.name)
    if not group.meters:
        errors.fail(table, i, "meters", "list at least one meter (a SAP or a logical device name)")
    for meter in group.meters:
        if isinstance(meter, bool) or not isinstance(meter, int | str) or (isinstance(meter, int)
                                                                             and not 2 <= meter <= 0xFFFF):
            errors.fail(table, i, "meters", f"{meter!r} is neither a meter SAP (2..65535) nor a name")
    if not 1 <= group.client_sap <= 0x7F or (group.client_sap == 16 and group.credentials):
        errors.fail(table, i, "client_sap", "must be 1..127 (16, the public client, takes no credentials)")
    if group.client_sap == MANAGEMENT_CLIENT_SAP and not group.allow_management_client:
        errors.fail(table, i, "client_sap", "1 is the management client (it may change the meter); polling "
                    "uses a read-only client: set allow_management_client = true to insist")
    for key in ("registers", "profiles", "event_logs"):
        for text in getattr(group, key):
            try:
                obis(text)
            except ObisError as exc:
                errors.fail(table, i, key, str(exc))
    if not (group.clock or group.registers or group.profiles or group.event_logs):
        errors.fail(table, i, "registers", "the group reads nothing: set clock, registers, profiles or event_logs")
    if group.interval_s <= 0 or group.first_read_s <= 0:
        errors.fail(table, i, "interval_s", "interval_s and first_read_s must be > 0")
    if not 0 <= group.retries <= 10:
        errors.fail(table, i, "retries", "must be 0..10")
    if group.retry_backoff_s <= 0:
        errors.fail(table, i, "retry_backoff_s", "must be > 0")
    if group.failure_threshold < 1:
        errors.fail(table, i, "failure_threshold", "must be >= 1")
    if group.failing_interval_s < 0:
        errors.fail(table, i, "failing_interval_s", "must be >= 0 (0 = four intervals)")
