"""A gateway with simulated meters behind a real pty, in the test's event loop."""

from __future__ import annotations

import datetime as dt
import io
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import structlog

from gateway.config import GatewayConfig, LinkConfig, MeterConfig, PathsConfig, RegistryConfig, RelayConfig, WanConfig
from gateway.daemon import Gateway
from gateway.log import configure
from gateway.sim.bus import SimMeter, SimulatedBus
from gateway.sim.meter import SimMeterSettings, build_meter
from gateway.sim.pty import PtyPair, open_pty

# Not the Green Book demo keys (gurux's defaults): a test that forgot to set a key must fail.
TEST_BLOCK_CIPHER_KEY = bytes.fromhex("8F2E6A1C5B3D7E9F0A1B2C3D4E5F6071")
TEST_AUTHENTICATION_KEY = bytes.fromhex("3C4D5E6F708192A3B4C5D6E7F8091A2B")
FIXED_NOW = dt.datetime(2026, 11, 21, 12, 0, 0, tzinfo=dt.UTC)


def meter_settings(serial: int) -> SimMeterSettings:
    return replace(
        SimMeterSettings.demo(serial_number=serial),
        block_cipher_key=TEST_BLOCK_CIPHER_KEY,
        authentication_key=TEST_AUTHENTICATION_KEY,
    )


def fixed_clock() -> dt.datetime:
    return FIXED_NOW


@dataclass
class SimLine:
    pty: PtyPair
    bus: SimulatedBus
    meters: list[SimMeter]


def make_sim_line(count: int, *, first_address: int = 17) -> SimLine:
    pty = open_pty()
    meters = [
        SimMeter(physical_address=first_address + i, device=build_meter(meter_settings(1 + i), clock=fixed_clock))
        for i in range(count)
    ]
    bus = SimulatedBus(meters=meters)
    bus.attach(pty.master_fd)
    return SimLine(pty=pty, bus=bus, meters=meters)


@pytest.fixture
async def sim_line() -> AsyncIterator[SimLine]:
    line = make_sim_line(4)
    yield line
    line.bus.detach()
    line.pty.close()


@pytest.fixture
def captured_logs() -> io.StringIO:
    stream = io.StringIO()
    configure(level="debug", fmt="json", stream=stream)
    yield stream
    structlog.reset_defaults()


def gateway_config(device: str, *, meters: int = 4, extra_meters: tuple[MeterConfig, ...] = (),
                   exchange_timeout_s: float = 10.0, response_timeout_s: float = 0.5,
                   directory: Path | None = None) -> GatewayConfig:
    directory = directory or Path(tempfile.mkdtemp(prefix="gw-"))
    return GatewayConfig(
        paths=PathsConfig(state_directory=str(directory / "state"), runtime_directory=str(directory / "run"),
                          keys_file=str(directory / "keys.toml")),
        registry=RegistryConfig(identify=False),
        wan=WanConfig(listen=("127.0.0.1",), port=0),
        relay=RelayConfig(exchange_timeout_s=exchange_timeout_s),
        links=(LinkConfig(name="bus0", device=device, baudrate=115200, response_timeout_s=response_timeout_s,
                          max_retries=2),),
        meters=tuple(MeterConfig(sap=17 + i, link="bus0", physical_address=17 + i) for i in range(meters))
        + extra_meters,
    )


@pytest.fixture
async def gateway_factory() -> AsyncIterator[Callable[[GatewayConfig], Gateway]]:
    started: list[Gateway] = []

    def factory(config: GatewayConfig) -> Gateway:
        gateway = Gateway(config)
        started.append(gateway)
        return gateway

    yield factory
    for gateway in started:
        await gateway.stop()


@pytest.fixture
async def gateway(sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]) -> Gateway:
    gw = gateway_factory(gateway_config(sim_line.pty.slave_path))
    await gw.start()
    return gw
