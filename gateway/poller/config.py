"""The [poller] configuration table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config import SourceLines


@dataclass(frozen=True, slots=True)
class PollerConfig:
    enabled: bool = False


def parse_poller(raw: Mapping[str, Any], lines: SourceLines) -> PollerConfig:
    """Validate the [poller] table (errors name the key and its line, like the rest of the file)."""
    from gateway.config import build_table  # noqa: PLC0415 - config imports this module

    return build_table(PollerConfig, raw, lines, "poller")
