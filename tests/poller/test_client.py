"""The polling client against our COSEM engine, APDU by APDU (no link): every service and refusal."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from gateway.codec.acse import Mechanism
from gateway.codec.axdr import Data, parse_date_time
from gateway.cosem.server import LogicalDevice
from gateway.poller.client import (
    AssociationRefusedError,
    Attribute,
    Credentials,
    DlmsClient,
    InvocationCounterRejectedError,
    ReadRefusedError,
)
from gateway.poller.credentials import DurableCounter
from gateway.registry.database import open_database
from gateway.sim.meter import ACTIVE_ENERGY_IMPORT, CLOCK, LOAD_PROFILE, profile_rows
from tests.poller.meters import (
    ACTIVE_ENERGY_EXPORT,
    GATEWAY_TITLE,
    READER_AUTHENTICATION_KEY,
    READER_BLOCK_CIPHER_KEY,
    READING_CLIENT,
    MovableClock,
    build_polled_meter,
    export_energy_at,
    reader_settings,
)

NOW = dt.datetime(2026, 11, 21, 12, 7, 30, tzinfo=dt.UTC)
READER = Credentials(mechanism=Mechanism.HLS_GMAC, system_title=GATEWAY_TITLE,
                     block_cipher_key=READER_BLOCK_CIPHER_KEY, authentication_key=READER_AUTHENTICATION_KEY)


class DirectChannel:
    """APDUs straight into a logical device, counting them."""

    def __init__(self, device: LogicalDevice, client_sap: int) -> None:
        self.device = device
        self.client_sap = client_sap
        self.sent: list[bytes] = []

    async def request(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        answer = self.device.handle(client_sap=self.client_sap, apdu=apdu)
        assert answer is not None
        return answer


class ListCounter:
    def __init__(self, start: int = 0) -> None:
        self.last = start

    def next_counter(self) -> int:
        self.last += 1
        return self.last


@pytest.fixture
def meter() -> tuple[LogicalDevice, MovableClock]:
    clock = MovableClock(NOW)
    return build_polled_meter(reader_settings(7), clock=clock), clock


async def test_hls_gmac_ciphered_reads_every_service(meter: tuple[LogicalDevice, MovableClock]) -> None:
    device, _ = meter
    channel = DirectChannel(device, READING_CLIENT)
    client = DlmsClient(channel, credentials=READER, counter=ListCounter())
    await client.associate()
    assert client.associated
    assert all(apdu[0] in (0x60, 0xC8, 0xCB) for apdu in channel.sent)  # AARQ, then only ciphered services
    stamp = await client.get(Attribute(8, CLOCK, 2))
    assert isinstance(stamp.value, bytes) and parse_date_time(stamp.value) == NOW.replace(tzinfo=None)
    values = await client.get_with_list([Attribute(3, ACTIVE_ENERGY_IMPORT, 2), Attribute(3, ACTIVE_ENERGY_EXPORT, 2),
                                         Attribute(3, ACTIVE_ENERGY_IMPORT, 3)])
    settings = reader_settings(7)
    assert values[0] == Data.double_long_unsigned(settings.energy_at(NOW))
    assert values[1] == Data.double_long_unsigned(export_energy_at(settings, NOW))
    assert values[2] == Data.structure(Data.integer(0), Data.enum(30))
    # A whole day of profile in GET blocks (the meter's PDU is 1024 octets), then a range of it.
    whole = await client.get(Attribute(7, LOAD_PROFILE, 2))
    assert device.counters.get_blocks_sent > 1
    expected = profile_rows(settings, NOW)
    assert [tuple(row.items) for row in whole.items] == expected
    start = NOW - dt.timedelta(hours=2)
    part = await client.get_range(LOAD_PROFILE, restricting=Attribute(8, CLOCK, 2), start=start, end=None)
    assert [tuple(row.items) for row in part.items] == expected[-8:]  # 10:15 .. 12:00
    await client.release()
    assert device.association(READING_CLIENT) is None
    assert device.counters.replay_rejections == 0 and device.counters.decrypt_failures == 0


async def test_refusals_are_errors_not_data(meter: tuple[LogicalDevice, MovableClock]) -> None:
    device, _ = meter
    wrong = Credentials(mechanism=Mechanism.HLS_GMAC, system_title=GATEWAY_TITLE,
                        block_cipher_key=READER_BLOCK_CIPHER_KEY, authentication_key=bytes(16))
    with pytest.raises(AssociationRefusedError):
        await DlmsClient(DirectChannel(device, READING_CLIENT), credentials=wrong, counter=ListCounter()).associate()
    client = DlmsClient(DirectChannel(device, READING_CLIENT), credentials=READER, counter=ListCounter(100))
    await client.associate()
    with pytest.raises(ReadRefusedError, match="object_undefined"):
        await client.get(Attribute(3, bytes([1, 0, 99, 8, 0, 255]), 2))
    # A public client has no business with the load profile, and gets no association as reader.
    public = DlmsClient(DirectChannel(device, 16), credentials=Credentials(mechanism=Mechanism.NONE), counter=None)
    await public.associate()
    with pytest.raises(ReadRefusedError):
        await public.get(Attribute(7, LOAD_PROFILE, 2))


async def test_a_reused_counter_is_rejected_by_the_meter(meter: tuple[LogicalDevice, MovableClock]) -> None:
    device, _ = meter
    first = DlmsClient(DirectChannel(device, READING_CLIENT), credentials=READER, counter=ListCounter(0))
    await first.associate()
    await first.get(Attribute(8, CLOCK, 2))
    await first.release()
    again = DlmsClient(DirectChannel(device, READING_CLIENT), credentials=READER, counter=ListCounter(0))
    with pytest.raises(AssociationRefusedError):  # the glo-initiateRequest replays counter 1
        await again.associate()
    assert device.counters.replay_rejections == 1
    late = DlmsClient(DirectChannel(device, READING_CLIENT), credentials=READER, counter=ListCounter(10))
    await late.associate()  # 11 AARQ, 12 f(StoC), 13 the ciphered ACTION carrying it
    late._counter = ListCounter(3)  # a counter source gone wrong
    with pytest.raises(InvocationCounterRejectedError) as caught:
        await late.get(Attribute(8, CLOCK, 2))
    assert caught.value.expected == 14


async def test_durable_counter_never_hands_out_a_counter_twice_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    seen: set[int] = set()
    for _ in range(5):
        connection = open_database(path)
        counter = DurableCounter(connection, key_name="poller:test")
        for _ in range(1500):  # crosses a reservation block
            value = counter.next_counter()
            assert value not in seen
            seen.add(value)
        connection.close()  # as after a power cut: whatever was reserved is skipped
    with sqlite3.connect(path) as check:
        (ceiling,) = check.execute("SELECT ceiling FROM invocation_counters WHERE key_name='poller:test'").fetchone()
    assert ceiling > max(seen)
