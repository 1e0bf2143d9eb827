"""Kill the daemon with SIGKILL in the middle of polling, 50 times: the meters (in their own process,
outliving every daemon) never see an invocation counter twice."""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.poller.broker import free_port
from tests.poller.conftest import write_polling_keys

KILLS = 50
METERS = 2
START_TIMEOUT_S = 15.0


@contextmanager
def meter_process(directory: Path) -> Iterator[tuple[str, Path]]:
    path_file, status_file = directory / "pty", directory / "meters.json"
    process = subprocess.Popen([sys.executable, "-m", "tests.poller.simproc", "--meters", str(METERS),
                                "--path-file", str(path_file), "--status-file", str(status_file)],
                               cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (path_file.exists() and path_file.read_text()):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the meter process did not start")
            time.sleep(0.02)
        yield path_file.read_text(), status_file
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def daemon_config(directory: Path, device: str) -> Path:
    meters = "".join(f'[[meters]]\nsap = {17 + i}\nlink = "bus0"\nphysical_address = {17 + i}\n'
                     for i in range(METERS))
    text = f"""
[paths]
state_directory = "{directory / 'state'}"
runtime_directory = "{directory / 'run'}"
keys_file = "{directory / 'keys.toml'}"
[registry]
identify = false
[wan]
listen = ["127.0.0.1"]
port = {free_port()}
[log]
level = "info"
format = "json"
[[links]]
name = "bus0"
device = "{device}"
baudrate = 115200
response_timeout_s = 0.5
{meters}
[poller]
enabled = true
keys_file = "{directory / 'polling-keys.toml'}"
[[poller.groups]]
name = "all"
meters = [{", ".join(str(17 + i) for i in range(METERS))}]
credentials = "reader"
interval_s = 0.05
registers = ["1.0.1.8.0.255"]
profiles = ["1.0.99.1.0.255"]
retries = 0
"""
    path = directory / "gateway.toml"
    path.write_text(text)
    return path


def run_until_polling_then_kill(config: Path, *, linger_s: float) -> int:
    """Start the daemon, wait for its first recorded poll, let it poll on a little, SIGKILL it; polls seen."""
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "run", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    polls, buffer, kill_at = 0, b"", None
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while kill_at is None or time.monotonic() < kill_at:
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon did not poll in time")
            wait = 0.5 if kill_at is None else max(0.0, kill_at - time.monotonic())
            for _ in selector.select(wait):
                buffer += process.stdout.read() or b""
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if b'"poll.done"' in line:
                    polls += 1
                    assert b'"outcome": "ok"' in line, line
                    if kill_at is None:
                        kill_at = time.monotonic() + linger_s
                assert b"poll.counter_rejected" not in line
            if process.poll() is not None:
                raise RuntimeError(f"the daemon exited with {process.returncode}")
    finally:
        process.kill()
        process.wait(10)
        selector.close()
        process.stdout.close()
    return polls


@pytest.mark.timeout(180)
def test_sigkill_while_polling_never_reuses_an_invocation_counter(tmp_path: Path) -> None:
    write_polling_keys(tmp_path / "polling-keys.toml")
    rng = random.Random(20261121)
    polls = 0
    with meter_process(tmp_path) as (device, status_file):
        config = daemon_config(tmp_path, device)
        for _ in range(KILLS):
            polls += run_until_polling_then_kill(config, linger_s=rng.uniform(0.0, 0.08))
    meters = json.loads(status_file.read_text())
    assert [m["replay_rejections"] for m in meters] == [0] * METERS
    assert [m["decrypt_failures"] + m["hls_failures"] + m["rejections"] for m in meters] == [0] * METERS
    associations = sum(m["associations"] for m in meters)
    assert polls >= KILLS
    assert associations > polls  # some kills landed inside an association (opened, never recorded as a poll)
