"""Small helpers for the WAN tests: read the JSON log, wait for a condition the gateway reaches."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from typing import Any


def log_events(stream: io.StringIO, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


async def until(condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
    """Poll a condition the gateway reaches on its own (no event to await across a socket)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
