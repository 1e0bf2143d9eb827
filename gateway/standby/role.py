"""A gateway's role in a pair, and where it starts after a restart.

A restarted gateway of a pair never assumes it is still primary: its peer may have taken over
while it was down, and on a shared serial medium (RS-485: one master) two primaries would talk
over each other. It comes back standby; the floating-address daemon (keepalived) promotes it
again if it is still the elected one. Only the very first start takes the configured role.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

from gateway.config import StandbyConfig

ROLE_FILE = "role"


class Role(StrEnum):
    PRIMARY = "primary"  # serves the HES and opens the meter lines
    STANDBY = "standby"  # keeps a copy of the primary's registry; never opens a shared medium
    ACTIVE_STANDBY = "active-standby"  # a standby on a medium both may use at once (a mesh): it relays too


def start_role(config: StandbyConfig, state_directory: Path) -> Role:
    if not config.paired:
        return Role.PRIMARY
    if (state_directory / ROLE_FILE).exists():
        return Role.STANDBY if config.shared_medium else Role.ACTIVE_STANDBY
    return Role.PRIMARY if config.role == "primary" else \
        (Role.STANDBY if config.shared_medium else Role.ACTIVE_STANDBY)


def record_role(state_directory: Path, role: Role) -> None:
    """Written at every change (durably: a power cut right after a promotion must not lose the file)."""
    path = state_directory / ROLE_FILE
    temporary = path.with_suffix(".new")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(f"{role.value}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
