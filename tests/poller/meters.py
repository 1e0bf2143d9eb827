"""Simulated meters for polling tests: the simulator's objects plus a read-only reading client.

The stock simulated meter knows the public client (16) and the management client (1). A utility
that lets its concentrator poll provisions a separate reading client with read-only rights: here
client 32, HLS-GMAC, every APDU ciphered, under its own keys. The meter also has an export
energy register and a standard event log so a schedule can read "registers" and "event logs".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace

from gateway.codec.acse import Conformance, Mechanism
from gateway.codec.axdr import Data, date_time
from gateway.codec.obis import obis
from gateway.codec.security import SecurityContext
from gateway.cosem.association import ClientPolicy
from gateway.cosem.association_ln import AssociationLN
from gateway.cosem.objects import Access, Clock, DataObject, Register, access
from gateway.cosem.profile import CaptureObject, ProfileGeneric, Row
from gateway.cosem.server import LogicalDevice
from gateway.sim.meter import (
    ACTIVE_ENERGY_IMPORT,
    CLOCK,
    LOAD_PROFILE,
    LOGICAL_DEVICE_NAME,
    PUBLIC_CLIENT,
    PUBLIC_CONFORMANCE,
    UNIT_WH,
    SimMeterSettings,
    profile_rows,
)

READING_CLIENT = 32
ACTIVE_ENERGY_EXPORT = obis("1.0.2.8.0.255")
EVENT_LOG = obis("0.0.99.98.0.255")  # Blue Book: standard event log
EVENT_CODE = obis("0.0.96.11.0.255")  # Blue Book: event code object of the standard event log
EVENT_PERIOD_S = 6 * 3600  # one event every six hours
EVENT_ENTRIES = 20
READING_CONFORMANCE = PUBLIC_CONFORMANCE | Conformance.ACTION  # ACTION: HLS pass 3 only (no method rights)
_EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

# Not the simulator's demo keys: the poller must use the keys of its credentials file.
READER_BLOCK_CIPHER_KEY = bytes.fromhex("5A1E0C3B9D7F2468ACE013579BDF0246")
READER_AUTHENTICATION_KEY = bytes.fromhex("C3A5F0E1D2B4968778695A4B3C2D1E0F")
GATEWAY_TITLE = bytes.fromhex("4447570000000001")  # "DGW" + 5 octets: the gateway's polling system title


@dataclass
class MovableClock:
    """The meters' time; tests move it on to make new profile entries appear."""

    now: dt.datetime

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def export_energy_at(settings: SimMeterSettings, moment: dt.datetime) -> int:
    """A small export register, deterministic like the import one."""
    elapsed = max(int((moment.astimezone(dt.UTC) - _EPOCH).total_seconds()), 0)
    return 5_000 + elapsed * (settings.serial_number % 7 + 1) // 3600


def event_rows(settings: SimMeterSettings, now: dt.datetime) -> list[Row]:
    """The last EVENT_ENTRIES events at or before ``now``, oldest first; codes from the serial number."""
    now = now.astimezone(dt.UTC)
    elapsed = int((now - _EPOCH).total_seconds())
    last = elapsed - elapsed % EVENT_PERIOD_S
    rows: list[Row] = []
    for back in range(EVENT_ENTRIES - 1, -1, -1):
        moment = _EPOCH + dt.timedelta(seconds=last - back * EVENT_PERIOD_S)
        stamp = date_time(moment.replace(tzinfo=None), deviation_minutes=0).value
        assert isinstance(stamp, bytes)
        code = 1 + (settings.serial_number + (last // EVENT_PERIOD_S - back)) % 60
        rows.append((Data.octet_string(stamp), Data.unsigned(code)))
    return rows


def reader_settings(serial: int) -> SimMeterSettings:
    return replace(SimMeterSettings.demo(serial_number=serial), block_cipher_key=READER_BLOCK_CIPHER_KEY,
                   authentication_key=READER_AUTHENTICATION_KEY)


def build_polled_meter(settings: SimMeterSettings, *, clock: Callable[[], dt.datetime]) -> LogicalDevice:
    """A simulated meter with a read-only reading client (32) besides the public client."""
    reads = {PUBLIC_CLIENT: access(read=(1, 2)), READING_CLIENT: access(read=(1, 2, 3))}
    reader_only: dict[int, Access] = {READING_CLIENT: access(read=range(1, 9))}
    clock_object = Clock(logical_name=CLOCK, rights={PUBLIC_CLIENT: access(read=range(1, 10)),
                                                     READING_CLIENT: access(read=range(1, 10))}, clock=clock)
    device: LogicalDevice | None = None

    def next_reader_counter() -> Data:
        assert device is not None
        return Data.double_long_unsigned(device.expected_client_counter(READING_CLIENT))

    objects = [
        DataObject(logical_name=LOGICAL_DEVICE_NAME, rights=reads,
                   value=Data.octet_string(settings.logical_device_name)),
        clock_object,
        Register(logical_name=ACTIVE_ENERGY_IMPORT, rights=reads, scaler=0, unit=UNIT_WH,
                 value=lambda: Data.double_long_unsigned(settings.energy_at(clock_object.now()))),
        Register(logical_name=ACTIVE_ENERGY_EXPORT, rights=reads, scaler=0, unit=UNIT_WH,
                 value=lambda: Data.double_long_unsigned(export_energy_at(settings, clock_object.now()))),
        ProfileGeneric(logical_name=LOAD_PROFILE, rights=reader_only,
                       capture_objects=(CaptureObject(Clock.class_id, CLOCK, 2),
                                        CaptureObject(Register.class_id, ACTIVE_ENERGY_IMPORT, 2)),
                       capture_period=900, profile_entries=settings.profile_entries,
                       rows=lambda: profile_rows(settings, clock_object.now())),
        ProfileGeneric(logical_name=EVENT_LOG, rights=reader_only,
                       capture_objects=(CaptureObject(Clock.class_id, CLOCK, 2),
                                        CaptureObject(DataObject.class_id, EVENT_CODE, 2)),
                       capture_period=0, profile_entries=EVENT_ENTRIES,
                       rows=lambda: event_rows(settings, clock_object.now())),
        AssociationLN(rights={PUBLIC_CLIENT: access(read=(1, 2, 3, 4, 5, 6, 8)),
                              READING_CLIENT: access(read=(1, 2, 3, 4, 5, 6, 8), methods=(1,))}),
        DataObject(logical_name=obis("0.0.43.1.0.255"), rights={PUBLIC_CLIENT: access(read=(1, 2))},
                   value=next_reader_counter),
    ]
    security = SecurityContext(system_title=settings.system_title, block_cipher_key=settings.block_cipher_key,
                               authentication_key=settings.authentication_key)
    clients = [
        ClientPolicy(client_sap=PUBLIC_CLIENT, mechanism=Mechanism.NONE, security=None, require_ciphering=False,
                     conformance=PUBLIC_CONFORMANCE),
        ClientPolicy(client_sap=READING_CLIENT, mechanism=Mechanism.HLS_GMAC, security=security,
                     require_ciphering=True, conformance=READING_CONFORMANCE),
    ]
    device = LogicalDevice(name=settings.logical_device_name, objects=objects, clients=clients,
                           max_receive_pdu_size=settings.max_receive_pdu_size, clock=clock)
    return device
