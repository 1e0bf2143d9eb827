"""Polling credentials the gateway owns, and their invocation counters.

The key file (polling-keys.toml) is readable by the service user only, like keys.toml; nothing
from it is ever logged. Credentials are named, a group refers to one by name, and a meter may
have its own (keyed by its logical device name or SAP), which wins over its group's:

    [credentials.residential]
    mechanism = "hls-gmac"                      # "none", "lls" or "hls-gmac"
    system_title = "4447570000000001"           # ours, 8 octets in hex
    block_cipher_key = "..."                    # 16 octets in hex: ciphering is on when present
    authentication_key = "..."
    [credentials.old_meters]
    mechanism = "lls"
    password = "12345678"
    [meters."SIM0000000000001"]                 # per meter
    mechanism = "hls-gmac"  ...
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.codec.acse import Mechanism
from gateway.poller.client import Credentials
from gateway.private_files import read_private_toml
from gateway.registry.counters import ReservedCounter

SYSTEM_TITLE_OCTETS = 8  # Green Book 4.3.4
KEY_OCTETS = 16  # security suite 0: AES-128
_MECHANISMS = {"none": Mechanism.NONE, "lls": Mechanism.LLS, "hls-gmac": Mechanism.HLS_GMAC}
_FIELDS = {"mechanism", "system_title", "block_cipher_key", "authentication_key", "password"}


class CredentialsError(Exception):
    """The polling key file is missing, malformed, or readable by others."""


@dataclass(frozen=True, slots=True, repr=False)
class PollingKeys:
    """Every credential of the polling key file."""

    named: Mapping[str, Credentials] = field(default_factory=dict)
    per_meter: Mapping[str, Credentials] = field(default_factory=dict)

    def for_meter(self, *, group_credentials: str, sap: int, name: str | None) -> Credentials | None:
        """A meter's own credentials if it has some, else its group's."""
        for key in (name, str(sap)):
            if key is not None and key in self.per_meter:
                return self.per_meter[key]
        return self.named.get(group_credentials)

    def __repr__(self) -> str:
        return f"PollingKeys(named={sorted(self.named)}, per_meter={len(self.per_meter)}, secrets=<hidden>)"


def load_polling_keys(path: Path) -> PollingKeys:
    """Read the polling key file; refuse it when group or others may read or write it."""
    raw, problem = read_private_toml(path)
    if raw is None:
        raise CredentialsError(problem)
    unknown = set(raw) - {"credentials", "meters"}
    if unknown:
        raise CredentialsError(f"{path}: unknown table {sorted(unknown)[0]!r}")
    tables = {}
    for section in ("credentials", "meters"):
        entries = raw.get(section, {})
        if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
            raise CredentialsError(f"{path}: [{section}.NAME] tables expected")
        tables[section] = {name: _credentials(path, f"{section}.{name}", entry) for name, entry in entries.items()}
    return PollingKeys(named=tables["credentials"], per_meter=tables["meters"])


def _credentials(path: Path, where: str, entry: Mapping[str, Any]) -> Credentials:
    """One credentials table; messages name the field, never a value."""
    unknown = set(entry) - _FIELDS
    if unknown:
        raise CredentialsError(f"{path}: [{where}] unknown key {sorted(unknown)[0]!r}")
    mechanism = _MECHANISMS.get(str(entry.get("mechanism", "")))
    if mechanism is None:
        raise CredentialsError(f"{path}: [{where}] 'mechanism' must be one of {', '.join(_MECHANISMS)}")

    def octets(name: str, size: int) -> bytes | None:
        text = entry.get(name)
        if text is None:
            return None
        try:
            value = bytes.fromhex(text) if isinstance(text, str) else b""
        except ValueError:
            value = b""
        if len(value) != size:
            raise CredentialsError(f"{path}: [{where}] '{name}' must be {size} octets in hex")
        return value

    title = octets("system_title", SYSTEM_TITLE_OCTETS)
    block_cipher_key = octets("block_cipher_key", KEY_OCTETS)
    authentication_key = octets("authentication_key", KEY_OCTETS)
    password = entry.get("password")
    if password is not None and (not isinstance(password, str) or not password):
        raise CredentialsError(f"{path}: [{where}] 'password' must be a non-empty string")
    if mechanism is Mechanism.LLS and password is None:
        raise CredentialsError(f"{path}: [{where}] LLS needs a 'password'")
    ciphered = block_cipher_key is not None
    if (ciphered or mechanism is Mechanism.HLS_GMAC) and (title is None or authentication_key is None
                                                          or block_cipher_key is None):
        raise CredentialsError(f"{path}: [{where}] HLS-GMAC and ciphering need 'system_title', "
                               "'block_cipher_key' and 'authentication_key'")
    return Credentials(mechanism=mechanism, system_title=title, block_cipher_key=block_cipher_key,
                       authentication_key=authentication_key,
                       password=password.encode() if password is not None else None)


def counter_name(credentials: Credentials) -> str:
    """One counter per (key, our system title): the AES-GCM nonce is title | counter under that key."""
    assert credentials.system_title is not None and credentials.authentication_key is not None
    # A fingerprint, not the key: the counter row must not reveal it (8 octets of a SHA-256).
    key = credentials.block_cipher_key or b""
    fingerprint = hashlib.sha256(b"dlms-gateway polling counter" + key).hexdigest()[:16]
    return f"poller:{credentials.system_title.hex()}:{fingerprint}"


class DurableCounter:
    """Invocation counters from a ReservedCounter: each one reserved on disk before it is handed out."""

    def __init__(self, connection: sqlite3.Connection, *, key_name: str) -> None:
        self._reserved = ReservedCounter(connection, key_name=key_name)
        self.last = self._reserved.start  # counters up to here may have been used before a crash
        self.spent = 0

    def next_counter(self) -> int:
        value = self.last + 1
        self._reserved.ensure(value)  # commits a new ceiling above ``value`` first when it is close
        self.last = value
        self.spent += 1
        return value
