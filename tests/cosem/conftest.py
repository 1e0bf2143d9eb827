"""A simulated meter at a fixed time, and clients for it built from our own codecs."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from gateway.cosem.server import LogicalDevice
from gateway.sim.meter import SimMeterSettings, build_meter
from tests.cosem.client import Keys, TestClient

# Not the Green Book demo keys: a test that forgot to set a key must fail.
BLOCK_CIPHER_KEY = bytes.fromhex("8F2E6A1C5B3D7E9F0A1B2C3D4E5F6071")
AUTHENTICATION_KEY = bytes.fromhex("3C4D5E6F708192A3B4C5D6E7F8091A2B")
NOW = dt.datetime(2026, 11, 21, 12, 7, 30, tzinfo=dt.UTC)
SETTINGS = replace(
    SimMeterSettings.demo(serial_number=4242),
    block_cipher_key=BLOCK_CIPHER_KEY,
    authentication_key=AUTHENTICATION_KEY,
)
KEYS = Keys(block_cipher_key=BLOCK_CIPHER_KEY, authentication_key=AUTHENTICATION_KEY)


def fixed_clock() -> dt.datetime:
    return NOW


@pytest.fixture
def meter() -> LogicalDevice:
    return build_meter(SETTINGS, clock=fixed_clock)


@pytest.fixture
def public(meter: LogicalDevice) -> TestClient:
    return TestClient(meter, client_sap=16)


@pytest.fixture
def management(meter: LogicalDevice) -> TestClient:
    return TestClient(meter, client_sap=1, keys=KEYS)
