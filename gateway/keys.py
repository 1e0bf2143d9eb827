"""The gateway's OWN keys (its management logical device; later legacy polling).

Never meter keys: in relay mode the HES holds those. The file is TOML with hex strings and must
be readable by the service user only, as ssh insists for private keys.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from gateway.private_files import read_private_toml

SYSTEM_TITLE_SIZE = 8  # Green Book 4.3.4: 3 octets manufacturer + 5 octets serial
KEY_SIZE = 16  # security suite 0: AES-128


class KeyFileError(Exception):
    """The key file is missing, malformed, or readable by others."""


@dataclass(frozen=True, slots=True)
class GatewayKeys:
    system_title: bytes
    block_cipher_key: bytes
    authentication_key: bytes

    def __repr__(self) -> str:  # never show a key, not even in a traceback
        return f"GatewayKeys(system_title={self.system_title.hex().upper()}, keys=<hidden>)"


def load_keys(path: Path) -> GatewayKeys:
    """Read the key file; refuse it if group or others may read or write it."""
    raw, problem = read_private_toml(path)
    if raw is None:
        raise KeyFileError(problem)
    values = {}
    for name, size in (("system_title", SYSTEM_TITLE_SIZE), ("block_cipher_key", KEY_SIZE),
                       ("authentication_key", KEY_SIZE)):
        text = raw.get(name)
        try:
            value = bytes.fromhex(text) if isinstance(text, str) else b""
        except ValueError:
            value = b""
        if len(value) != size:  # the message names the key, never its value
            raise KeyFileError(f"{path}: '{name}' must be {size} bytes in hex")
        values[name] = value
    unknown = set(raw) - set(values)
    if unknown:
        raise KeyFileError(f"{path}: unknown key {sorted(unknown)[0]!r}")
    return GatewayKeys(**values)


def create_keys(path: Path, *, system_title: bytes | None = None) -> GatewayKeys:
    """Make fresh random keys in a new file, mode 0600 from the first byte on."""
    keys = GatewayKeys(
        system_title=system_title or b"DGW" + secrets.token_bytes(5),
        block_cipher_key=secrets.token_bytes(KEY_SIZE),
        authentication_key=secrets.token_bytes(KEY_SIZE),
    )
    text = (f'system_title = "{keys.system_title.hex().upper()}"\n'
            f'block_cipher_key = "{keys.block_cipher_key.hex().upper()}"\n'
            f'authentication_key = "{keys.authentication_key.hex().upper()}"\n')
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return keys
