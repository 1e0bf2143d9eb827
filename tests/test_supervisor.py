"""Long-lived workers: a crash is logged with its traceback and the worker runs again."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from gateway.supervisor import Supervisor


async def test_a_crashed_worker_is_logged_and_restarted_with_a_back_off() -> None:
    supervisor = Supervisor(backoff_min_s=0.0, backoff_max_s=0.0)
    runs = 0
    running_again = asyncio.Event()

    async def worker() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise ValueError("physical address 999999 does not fit")
        running_again.set()
        await asyncio.Event().wait()  # a healthy worker runs until cancelled

    with capture_logs() as logs:
        task = asyncio.create_task(supervisor.supervise(worker, "identify"))
        await asyncio.wait_for(running_again.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    crashes = [entry for entry in logs if entry["event"] == "worker.crashed"]
    assert [(c["worker"], c["log_level"]) for c in crashes] == [("identify", "error")] * 2
    assert all(c["exc_info"] is True for c in crashes)
    assert supervisor.restarts["identify"] == 2
    assert task.cancelled()


async def test_a_worker_that_returns_is_restarted_too() -> None:
    supervisor = Supervisor(backoff_min_s=0.0, backoff_max_s=0.0)
    second_run = asyncio.Event()
    runs = 0

    async def worker() -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            second_run.set()
            await asyncio.Event().wait()

    with capture_logs() as logs:
        task = asyncio.create_task(supervisor.supervise(worker, "scan-bus0"))
        await asyncio.wait_for(second_run.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [entry["event"] for entry in logs] == ["worker.ended"]
