"""Every media test leaves no task running and no timer armed (after zigpy's verify_cleanup)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def _verify_cleanup() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)  # one loop turn: closed transports report connection_lost, cancelled tasks end
    tasks = [task for task in asyncio.all_tasks() - before if task is not asyncio.current_task() and not task.done()]
    timers = [handle for handle in loop._scheduled if not handle.cancelled()]  # type: ignore[attr-defined]
    assert not tasks, f"tasks left running: {tasks}"
    assert not timers, f"timers left armed: {timers}"
