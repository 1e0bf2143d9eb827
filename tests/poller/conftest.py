"""Polling tests: simulated meters with a reading client on real ptys, and a gateway that polls them."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.config import GatewayConfig, LinkConfig, LogConfig, MeterConfig, PathsConfig, RegistryConfig, WanConfig
from gateway.daemon import Gateway
from gateway.poller.config import MqttConfig, PollerConfig, PollGroup
from gateway.sim.bus import ApduServer, SimMeter, SimulatedBus
from gateway.sim.pty import PtyPair, open_pty
from tests.poller.meters import (
    GATEWAY_TITLE,
    READER_AUTHENTICATION_KEY,
    READER_BLOCK_CIPHER_KEY,
    MovableClock,
    build_polled_meter,
    reader_settings,
)

START = dt.datetime(2026, 11, 21, 12, 7, 30, tzinfo=dt.UTC)


@dataclass
class PolledLine:
    pty: PtyPair
    bus: SimulatedBus
    devices: list[ApduServer] = field(default_factory=list)

    def close(self) -> None:
        self.bus.detach()
        self.pty.close()


def polled_line(devices: Sequence[ApduServer], *, first_address: int = 17, bit_rate: int | None = None) -> PolledLine:
    pty = open_pty()
    meters = [SimMeter(physical_address=first_address + i, device=d) for i, d in enumerate(devices)]
    bus = SimulatedBus(meters=meters, bit_rate=bit_rate)
    bus.attach(pty.master_fd)
    return PolledLine(pty=pty, bus=bus, devices=list(devices))


def write_polling_keys(path: Path, *, extra: str = "") -> Path:
    text = (f'[credentials.reader]\nmechanism = "hls-gmac"\nsystem_title = "{GATEWAY_TITLE.hex()}"\n'
            f'block_cipher_key = "{READER_BLOCK_CIPHER_KEY.hex()}"\n'
            f'authentication_key = "{READER_AUTHENTICATION_KEY.hex()}"\n' + extra)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    return path


def poller_gateway_config(directory: Path, *, links: Sequence[tuple[str, str]], meters: Sequence[MeterConfig],
                          groups: Sequence[PollGroup], mqtt: MqttConfig | None = None,
                          polls_per_line: int = 2) -> GatewayConfig:
    return GatewayConfig(
        paths=PathsConfig(state_directory=str(directory / "state"), runtime_directory=str(directory / "run"),
                          keys_file=str(directory / "keys.toml")),
        registry=RegistryConfig(identify=False),
        wan=WanConfig(listen=("127.0.0.1",), port=0),
        log=LogConfig(level="warning"),
        links=tuple(LinkConfig(name=name, device=device, baudrate=115200, response_timeout_s=0.5, max_retries=2)
                    for name, device in links),
        meters=tuple(meters),
        poller=PollerConfig(enabled=True, keys_file=str(directory / "polling-keys.toml"), groups=tuple(groups),
                            mqtt=mqtt or MqttConfig(), polls_per_line=polls_per_line),
    )


@pytest.fixture
def meter_clock() -> MovableClock:
    return MovableClock(START)


@pytest.fixture
async def reader_line(meter_clock: MovableClock) -> AsyncIterator[PolledLine]:
    line = polled_line([build_polled_meter(reader_settings(1 + i), clock=meter_clock) for i in range(4)])
    yield line
    line.close()



async def until(condition: Callable[[], bool], *, timeout_s: float = 15.0) -> None:
    """Poll a condition we cannot await (the broker's side), with a deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


class Gateways:
    """Gateways a test starts; whatever it has not stopped is stopped at the end."""

    def __init__(self) -> None:
        self.running: list[Gateway] = []

    async def start(self, config: GatewayConfig) -> Gateway:
        gateway = Gateway(config)
        self.running.append(gateway)
        await gateway.start()
        return gateway

    async def stop(self, gateway: Gateway) -> None:
        self.running.remove(gateway)
        await gateway.stop()


@pytest.fixture
async def gateways() -> AsyncIterator[Gateways]:
    started = Gateways()
    yield started
    for gateway in list(started.running):
        await started.stop(gateway)
