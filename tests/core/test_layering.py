"""The relay core imports no meter medium; the router and the session know no HDLC and no event loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "gateway" / "core"
MEDIA = ("gateway.link", "gateway.media")
SANS_IO = ("router.py", "session.py", "channel.py", "clock.py")  # the relay proper and its interfaces
NOT_IN_SANS_IO = ("asyncio", "gateway.codec.hdlc", "gateway.codec.datagram", "socket", "serial")


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_no_core_module_imports_a_meter_medium(path: Path) -> None:
    assert not {name for name in imports_of(path) if name.startswith(MEDIA)}


@pytest.mark.parametrize("name", SANS_IO)
def test_the_relay_and_its_interfaces_know_no_hdlc_and_no_event_loop(name: str) -> None:
    found = {imported for imported in imports_of(CORE / name)
             if any(imported == banned or imported.startswith(banned + ".") for banned in NOT_IN_SANS_IO)}
    assert not found
