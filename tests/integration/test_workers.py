"""Every long-lived task of the daemon runs under the supervisor: none can die without a log line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from gateway.config import GatewayConfig, PushConfig, ScanConfig
from gateway.daemon import Gateway
from tests.integration.conftest import SimLine, gateway_config


async def test_every_long_lived_task_is_supervised(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path
) -> None:
    config = gateway_config(sim_line.pty.slave_path, directory=tmp_path)
    gateway = gateway_factory(replace(config, push=(PushConfig(name="hes"),),
                                      scan=(ScanConfig(link="bus0", interval_s=3600.0),)))
    await gateway.start()
    tasks = [*gateway._tasks, *gateway._scans, *gateway.line_workers.values()]  # lines: while it serves meters
    names = {task.get_name() for task in tasks}
    assert {"line-bus0", "registry-flush", "push-hes", "identify", "scan-bus0"} <= names
    for task in tasks:
        assert getattr(task.get_coro(), "__qualname__", "") == "Supervisor.supervise", task.get_name()
