"""An outside client (gurux-dlms, GPL, tests only) against our simulated meter, APDU for APDU.

The wrapper header (IEC 62056-4-7: version 1, source wPort = client SAP, destination wPort = 1,
length) is stripped and added here; no TCP, no HDLC, no gateway in between.
"""

from __future__ import annotations

import datetime as dt
import struct
from typing import Any

import pytest
from gurux_dlms import GXDateTime
from gurux_dlms.enums import DataType
from gurux_dlms.objects import (
    GXDLMSClock,
    GXDLMSData,
    GXDLMSDisconnectControl,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)

from gateway.cosem.objects import AssociationStatus
from gateway.cosem.server import LogicalDevice
from gateway.sim.meter import profile_rows
from tests.cosem.conftest import AUTHENTICATION_KEY, BLOCK_CIPHER_KEY, NOW, SETTINGS
from tests.hes import GuruxHes, HesCredentials

_HEADER = struct.Struct(">HHHH")  # version, source wPort, destination wPort, length
WRAPPER_VERSION = 1
MANAGEMENT = HesCredentials(client_sap=1, hls_gmac=True, block_cipher_key=BLOCK_CIPHER_KEY,
                            authentication_key=AUTHENTICATION_KEY, system_title=b"GURUXHES")


class DirectChannel:
    """A wrapper 'connection' that hands each APDU straight to the logical device."""

    def __init__(self, device: LogicalDevice) -> None:
        self.device = device
        self.answers: list[bytes] = []
        self.apdus_out: list[bytes] = []

    def send(self, data: bytes) -> None:
        version, source, destination, length = _HEADER.unpack(data[:8])
        assert (version, destination, length) == (WRAPPER_VERSION, 1, len(data) - 8)
        answer = self.device.handle(client_sap=source, apdu=data[8:])
        if answer is not None:
            self.apdus_out.append(answer)
            self.answers.append(_HEADER.pack(WRAPPER_VERSION, destination, source, len(answer)) + answer)

    def receive(self) -> bytes:
        if not self.answers:
            raise TimeoutError("the logical device gave no answer")
        return self.answers.pop(0)

    def close(self) -> None:
        pass


def utc(value: Any) -> dt.datetime:
    moment: dt.datetime = value.value.astimezone(dt.UTC)
    return moment


def test_gurux_public_client_reads_name_clock_and_energy(meter: LogicalDevice) -> None:
    hes = GuruxHes(DirectChannel(meter), credentials=HesCredentials(client_sap=16), server_sap=1)
    hes.associate()
    assert bytes(hes.read(GXDLMSData("0.0.42.0.0.255"), 2)) == SETTINGS.logical_device_name
    assert utc(hes.read(GXDLMSClock("0.0.1.0.0.255"), 2)) == NOW
    register = GXDLMSRegister("1.0.1.8.0.255")
    hes.read(register, 3)
    assert (register.scaler, int(register.unit)) == (1, 30)  # gurux holds the factor 10**0
    assert hes.read(register, 2) == SETTINGS.energy_at(NOW)
    # gurux parses our object list (IC 15 v0): what the public client may see, nothing more
    reply = hes.request(hes.client.getObjectsRequest())
    listed = {(int(o.objectType), o.logicalName) for o in hes.client.parseObjects(reply.data, True)}
    assert listed == {(1, "0.0.42.0.0.255"), (8, "0.0.1.0.0.255"), (3, "1.0.1.8.0.255"), (15, "0.0.40.0.0.255"),
                      (17, "0.0.41.0.0.255"), (1, "0.0.43.1.0.255")}
    hes.release()
    assert meter.association(16) is None
    assert meter.counters.associations == 1 and meter.counters.exception_responses == 0


def test_gurux_management_client_hls_gmac_profile_blocks_range_and_disconnect(meter: LogicalDevice) -> None:
    channel = DirectChannel(meter)
    hes = GuruxHes(channel, credentials=MANAGEMENT, server_sap=1, max_pdu=256)
    hes.associate()
    association = meter.association(1)
    assert association is not None and association.status is AssociationStatus.ASSOCIATED
    assert association.client_max_receive_pdu_size == 256

    profile = GXDLMSProfileGeneric("1.0.99.1.0.255")
    hes.read(profile, 3)
    blocks_before = meter.counters.get_blocks_sent
    rows = hes.read(profile, 2)
    expected = [(row[0].value, row[1].value) for row in profile_rows(SETTINGS, NOW)]
    got = [(utc(row[0]), row[1]) for row in rows]
    assert len(got) == 96
    assert got[-1] == (dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC), expected[-1][1])
    assert [energy for _, energy in got] == [energy for _, energy in expected]
    assert meter.counters.get_blocks_sent - blocks_before > 5
    assert all(len(apdu) <= 256 for apdu in channel.apdus_out)

    start, end = NOW - dt.timedelta(hours=3), NOW - dt.timedelta(hours=2)  # 09:07:30 .. 10:07:30
    ranged = hes.read_rows_by_range(profile, GXDateTime(start), GXDateTime(end))
    times = [utc(row[0]) for row in ranged]
    assert times == [dt.datetime(2026, 11, 21, 9, 15, tzinfo=dt.UTC) + dt.timedelta(minutes=15 * i) for i in range(4)]

    disconnect = GXDLMSDisconnectControl("0.0.96.3.10.255")
    assert hes.read(disconnect, 2) is True
    hes.method(disconnect, 1, 0, DataType.INT8)
    assert hes.read(disconnect, 2) is False
    hes.method(disconnect, 2, 0, DataType.INT8)
    assert hes.read(disconnect, 2) is True
    hes.release()
    assert meter.association(1) is None
    counters = meter.counters
    assert (counters.decrypt_failures, counters.replay_rejections, counters.hls_failures) == (0, 0, 0)
    assert all(apdu[0] in (0x61, 0x63, 0xCC, 0xCF, 0xDB) for apdu in channel.apdus_out)  # all ciphered


@pytest.mark.parametrize("wrong", ["authentication_key", "block_cipher_key"])
def test_gurux_with_a_wrong_key_fails_cleanly(meter: LogicalDevice, wrong: str) -> None:
    credentials = HesCredentials(**{**MANAGEMENT.__dict__, wrong: bytes(range(16))})
    channel = DirectChannel(meter)
    hes = GuruxHes(channel, credentials=credentials, server_sap=1)
    with pytest.raises(Exception) as raised:  # gurux raises its own exception types
        hes.associate()
    assert not isinstance(raised.value, TimeoutError)  # the meter answered: an AARE, not silence
    assert channel.apdus_out[-1][0] == 0x61
    assert meter.association(1) is None
    assert meter.counters.decrypt_failures == 1 and meter.counters.rejections == 1


def test_gurux_unknown_client_sap_is_rejected(meter: LogicalDevice) -> None:
    channel = DirectChannel(meter)
    hes = GuruxHes(channel, credentials=HesCredentials(client_sap=99), server_sap=1)
    with pytest.raises(Exception) as raised:
        hes.associate()
    assert not isinstance(raised.value, TimeoutError)
    assert channel.apdus_out == [channel.apdus_out[0]] and channel.apdus_out[0][0] == 0x61
    assert meter.counters.rejections == 1
