"""One simulated meter: its settings and its COSEM object set, served by our own engine.

Readings are deterministic functions of the serial number and the time, so a test can
predict every value: the meter draws a constant power (from the serial number) since
2024-01-01T00:00Z, on top of ``energy_wh``.

Clients (Green Book 4.3, DLMS UA 1000-2 defaults):
- 16 public, no security: logical device name, clock, energy (value, scaler_unit), the
  current association, the SAP assignment, and the invocation counter to use with
  client 1. Not the load profile nor the disconnect control: those are the utility's.
- 1 management, HLS-GMAC with security suite 0, every APDU ciphered: everything,
  including the load profile, the disconnect methods and the image transfer (IC 18).
  With a ``broadcast_key``, client 1 may also broadcast unconfirmed ACTIONs (image blocks)
  and SETs (the image activation time, IC 22) in general-glo-ciphering under that key
  (gateway.cosem.broadcast).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

from gateway.codec.acse import Conformance, Mechanism
from gateway.codec.axdr import Data, date_time
from gateway.codec.obis import obis
from gateway.codec.security import SecurityContext
from gateway.codec.xdlms import ActionResult
from gateway.cosem.activation_schedule import ImageActivationSchedule
from gateway.cosem.association import ClientPolicy
from gateway.cosem.association_ln import AssociationLN
from gateway.cosem.broadcast import BroadcastPolicy
from gateway.cosem.image_transfer import IMAGE_TRANSFER, ImageCheck, ImageTransfer
from gateway.cosem.objects import Access, Clock, DataObject, DisconnectControl, Register, SapAssignment, access
from gateway.cosem.profile import CaptureObject, ProfileGeneric, Row
from gateway.cosem.server import LogicalDevice

# Green Book 9.2.7 example keys: published demo keys, fine to print in the demo.
DEMO_BLOCK_CIPHER_KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
DEMO_AUTHENTICATION_KEY = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
PUBLIC_CLIENT = 16  # DLMS UA 1000-2: public client SAP
MANAGEMENT_CLIENT = 1  # DLMS UA 1000-2: management client SAP
UNIT_WH = 30  # Blue Book 4.3.2 unit enumeration: Wh
CAPTURE_PERIOD_S = 15 * 60  # a 15-minute load profile
IMAGE_BLOCK_SIZE = 64  # ours: a broadcast block in general-glo-ciphering fits one 128-octet UI frame
SHA256_OCTETS = 32
SERIAL_DIGITS = 13  # "SIM" + 13 digits = a 16-octet logical device name, as real meters use
_EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)

LOGICAL_DEVICE_NAME = obis("0.0.42.0.0.255")
CLOCK = obis("0.0.1.0.0.255")
ACTIVE_ENERGY_IMPORT = obis("1.0.1.8.0.255")
LOAD_PROFILE = obis("1.0.99.1.0.255")
DISCONNECT_CONTROL = obis("0.0.96.3.10.255")
SAP_ASSIGNMENT = obis("0.0.41.0.0.255")
INVOCATION_COUNTER = obis("0.0.43.1.0.255")  # Green Book: invocation counter of security setup 0

PUBLIC_CONFORMANCE = (
    Conformance.GET | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ | Conformance.SELECTIVE_ACCESS
    | Conformance.MULTIPLE_REFERENCES
)
MANAGEMENT_CONFORMANCE = PUBLIC_CONFORMANCE | Conformance.SET | Conformance.ACTION | Conformance.GENERAL_PROTECTION


@dataclass(frozen=True, slots=True)
class SimMeterSettings:
    """What makes one simulated meter different from another. The keys are the simulator's own."""

    serial_number: int
    system_title: bytes  # 8 octets
    block_cipher_key: bytes
    authentication_key: bytes
    profile_entries: int = 96  # a day of 15-minute entries: spans several HDLC segments and GET blocks
    energy_wh: int = 1_000_000
    max_receive_pdu_size: int = 1024
    broadcast_key: bytes | None = None  # the global broadcast key (GBEK); None: broadcasts are dropped
    image_block_size: int = IMAGE_BLOCK_SIZE
    expected_image_sha256: bytes | None = None  # what image_verify accepts; None: any whole image

    def __post_init__(self) -> None:
        if not 0 <= self.serial_number < 10**SERIAL_DIGITS:
            raise ValueError(f"serial number must have at most {SERIAL_DIGITS} digits")
        if len(self.system_title) != 8:
            raise ValueError("a system title is 8 octets")
        if len(self.block_cipher_key) != 16 or len(self.authentication_key) != 16:
            raise ValueError("security suite 0 keys are 16 octets")
        if self.broadcast_key is not None and len(self.broadcast_key) != 16:
            raise ValueError("security suite 0 keys are 16 octets")
        if self.expected_image_sha256 is not None and len(self.expected_image_sha256) != SHA256_OCTETS:
            raise ValueError("a SHA-256 is 32 octets")

    def __repr__(self) -> str:  # never show the keys
        return f"SimMeterSettings(serial_number={self.serial_number}, system_title={self.system_title.hex()})"

    @classmethod
    def demo(cls, *, serial_number: int) -> SimMeterSettings:
        """A meter with the Green Book demo keys and a system title derived from its serial number."""
        return cls(
            serial_number=serial_number,
            system_title=system_title_of(serial_number),
            block_cipher_key=DEMO_BLOCK_CIPHER_KEY,
            authentication_key=DEMO_AUTHENTICATION_KEY,
        )

    @property
    def logical_device_name(self) -> bytes:
        return b"SIM" + f"{self.serial_number:0{SERIAL_DIGITS}d}".encode()

    @property
    def power_w(self) -> int:
        """The constant power this meter draws (deterministic from the serial number)."""
        return 200 + (self.serial_number * 37) % 800

    def energy_at(self, moment: datetime.datetime) -> int:
        """Active energy import in Wh at ``moment``."""
        elapsed = max(int((_utc(moment) - _EPOCH).total_seconds()), 0)
        return self.energy_wh + elapsed * self.power_w // 3600


def system_title_of(serial_number: int) -> bytes:
    """b"SIM" + the serial number in 5 octets."""
    return b"SIM" + serial_number.to_bytes(5, "big")


def _utc(moment: datetime.datetime) -> datetime.datetime:
    return moment.replace(tzinfo=datetime.UTC) if moment.tzinfo is None else moment.astimezone(datetime.UTC)


def profile_rows(settings: SimMeterSettings, now: datetime.datetime) -> list[Row]:
    """The last ``profile_entries`` quarter-hour captures at or before ``now``, oldest first."""
    now = _utc(now)
    last = now - datetime.timedelta(seconds=int((now - _EPOCH).total_seconds()) % CAPTURE_PERIOD_S,
                                    microseconds=now.microsecond)
    rows: list[Row] = []
    for back in range(settings.profile_entries - 1, -1, -1):
        moment = last - datetime.timedelta(seconds=back * CAPTURE_PERIOD_S)
        stamp = date_time(moment, deviation_minutes=0).value
        assert isinstance(stamp, bytes)
        rows.append((Data.octet_string(stamp), Data.double_long_unsigned(settings.energy_at(moment))))
    return rows


def build_meter(settings: SimMeterSettings, *, clock: Callable[[], datetime.datetime]) -> LogicalDevice:
    """The logical device of one simulated meter (server SAP 1 behind its HDLC address)."""
    public_read = {PUBLIC_CLIENT: access(read=(1, 2)), MANAGEMENT_CLIENT: access(read=(1, 2))}
    everyone_reads = {PUBLIC_CLIENT: access(read=(1, 2, 3)), MANAGEMENT_CLIENT: access(read=(1, 2, 3))}
    clock_object = Clock(
        logical_name=CLOCK,
        rights={
            PUBLIC_CLIENT: access(read=range(1, 10)),
            MANAGEMENT_CLIENT: access(read=range(1, 10), write=(2,)),
        },
        clock=clock,
    )
    device: LogicalDevice | None = None

    def next_management_counter() -> Data:
        assert device is not None
        return Data.double_long_unsigned(device.expected_client_counter(MANAGEMENT_CLIENT))

    def refuse_change(_sap: int, _name: bytes) -> ActionResult:
        return ActionResult.READ_WRITE_DENIED  # a meter's SAP list is fixed

    image_transfer = ImageTransfer(
        rights={MANAGEMENT_CLIENT: access(read=range(1, 8), write=(5,), methods=(1, 2, 3, 4))},
        block_size=settings.image_block_size,
        check=ImageCheck(expected_sha256=settings.expected_image_sha256),
        clock=clock_object.now,
    )
    management_only: dict[int, Access] = {
        MANAGEMENT_CLIENT: access(read=range(1, 9)),
    }
    objects = [
        DataObject(
            logical_name=LOGICAL_DEVICE_NAME, rights=public_read, value=Data.octet_string(settings.logical_device_name)
        ),
        clock_object,
        Register(
            logical_name=ACTIVE_ENERGY_IMPORT,
            rights=everyone_reads,
            value=lambda: Data.double_long_unsigned(settings.energy_at(clock_object.now())),
            scaler=0,
            unit=UNIT_WH,
        ),
        ProfileGeneric(
            logical_name=LOAD_PROFILE,
            rights=management_only,
            capture_objects=(
                CaptureObject(Clock.class_id, CLOCK, 2),
                CaptureObject(Register.class_id, ACTIVE_ENERGY_IMPORT, 2),
            ),
            capture_period=CAPTURE_PERIOD_S,
            profile_entries=settings.profile_entries,
            rows=lambda: profile_rows(settings, clock_object.now()),
        ),
        DisconnectControl(
            logical_name=DISCONNECT_CONTROL,
            rights={MANAGEMENT_CLIENT: access(read=(1, 2, 3, 4), write=(4,), methods=(1, 2))},
        ),
        AssociationLN(
            rights={
                PUBLIC_CLIENT: access(read=(1, 2, 3, 4, 5, 6, 8)),
                MANAGEMENT_CLIENT: access(read=(1, 2, 3, 4, 5, 6, 8), methods=(1,)),
            }
        ),
        SapAssignment(
            logical_name=SAP_ASSIGNMENT,
            rights=public_read,
            assignments=lambda: [(1, settings.logical_device_name)],
            connect_logical_device=refuse_change,
        ),
        DataObject(logical_name=INVOCATION_COUNTER, rights=public_read, value=next_management_counter),
        image_transfer,
        ImageActivationSchedule(rights={MANAGEMENT_CLIENT: access(read=(1, 2, 3, 4), write=(4,))},
                                transfer=image_transfer),
    ]
    security = SecurityContext(
        system_title=settings.system_title,
        block_cipher_key=settings.block_cipher_key,
        authentication_key=settings.authentication_key,
    )
    clients = [
        ClientPolicy(
            client_sap=PUBLIC_CLIENT,
            mechanism=Mechanism.NONE,
            security=None,
            require_ciphering=False,
            conformance=PUBLIC_CONFORMANCE,
        ),
        ClientPolicy(
            client_sap=MANAGEMENT_CLIENT,
            mechanism=Mechanism.HLS_GMAC,
            security=security,
            require_ciphering=True,
            conformance=MANAGEMENT_CONFORMANCE,
        ),
    ]
    broadcast = None
    if settings.broadcast_key is not None:
        broadcast = BroadcastPolicy(
            client_sap=MANAGEMENT_CLIENT,
            security=SecurityContext(
                system_title=settings.system_title,
                block_cipher_key=settings.broadcast_key,
                authentication_key=settings.authentication_key,
            ),
        )
    device = LogicalDevice(
        name=settings.logical_device_name,
        objects=objects,
        clients=clients,
        max_receive_pdu_size=settings.max_receive_pdu_size,
        clock=clock,
        broadcast=broadcast,
    )
    return device


def image_transfer_of(device: LogicalDevice) -> ImageTransfer:
    """The Image transfer object (IC 18) of a simulated meter."""
    item = next(item for item in device.objects if item.logical_name == IMAGE_TRANSFER)
    assert isinstance(item, ImageTransfer)
    return item
