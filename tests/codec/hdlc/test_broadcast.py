"""All-station addresses and broadcast UI frames (IEC 62056-46), byte for byte."""

from __future__ import annotations

import pytest

from gateway.codec.axdr import Data, bit_string_of, decode, encode, flags_of
from gateway.codec.errors import LocalProtocolError
from gateway.codec.hdlc import (
    FrameKind,
    HdlcAddress,
    HdlcFrame,
    HdlcFrameDecoder,
    HdlcServerLink,
    ServerSettings,
    broadcast_apdu,
    encode_broadcast,
)
from gateway.codec.hdlc.control import i_control, u_control
from gateway.codec.xdlms import invoke_id_and_priority, is_confirmed


def test_all_station_addresses() -> None:
    assert HdlcAddress.all_station().encode() == bytes.fromhex("FEFF")  # 0x7F / 0x7F
    assert HdlcAddress.all_station(logical_device=1).encode() == bytes.fromhex("02FF")
    assert HdlcAddress.all_station(logical_device=1, size=4).encode() == bytes.fromhex("0002FEFF")  # lower 0x3FFF
    assert HdlcAddress.all_station(size=4).encode() == bytes.fromhex("FEFEFEFF")
    every = HdlcAddress.all_station(logical_device=1)
    assert every.is_all_station and every.reaches(logical_device=1, physical_address=17)
    assert not every.reaches(logical_device=2, physical_address=17)
    assert HdlcAddress.all_station().reaches(logical_device=2, physical_address=0x3FFD)
    one = HdlcAddress.server(logical_device=1, physical_address=17)
    assert not one.is_all_station and one.reaches(logical_device=1, physical_address=17)
    assert not one.reaches(logical_device=1, physical_address=18)
    assert not HdlcAddress.client(1).reaches(logical_device=1, physical_address=17)


def test_a_broadcast_ui_frame_round_trips() -> None:
    frame = encode_broadcast(client_sap=1, apdu=b"\xdb\x08APDU")
    # 7E A0 len | FE FF | 03 | 03 (UI, P clear) | HCS | E6 E6 00 | APDU | FCS | 7E
    assert frame[3:7] == bytes.fromhex("FEFF0303")
    (decoded,) = HdlcFrameDecoder().feed(frame, now=0.0)
    assert decoded.destination == HdlcAddress.all_station()
    assert broadcast_apdu(decoded) == b"\xdb\x08APDU"


@pytest.mark.parametrize("size", [2, 4])
def test_broadcast_to_one_logical_device(size: int) -> None:
    (decoded,) = HdlcFrameDecoder().feed(encode_broadcast(client_sap=1, apdu=b"x", logical_device=1, size=size), now=0)
    assert broadcast_apdu(decoded) == b"x" and decoded.destination.upper == 1


def test_frames_that_are_not_broadcasts() -> None:
    meter = HdlcServerLink(server_address=HdlcAddress.server(logical_device=1, physical_address=17),
                           settings=ServerSettings())
    (push,) = HdlcFrameDecoder().feed(meter.send_ui(client_sap=1, apdu=b"\x0f push"), now=0.0)
    assert broadcast_apdu(push) is None  # a meter's UI frame to a client
    every, client = HdlcAddress.all_station(), HdlcAddress.client(1)
    ui = u_control(FrameKind.UI, poll=False)
    assert broadcast_apdu(HdlcFrame(HdlcAddress.server(logical_device=1, physical_address=17), client, ui,
                                    b"\xe6\xe6\x00x")) is None  # UI to one meter
    assert broadcast_apdu(HdlcFrame(every, client, i_control(send_seq=0, recv_seq=0, poll=False),
                                    b"\xe6\xe6\x00x")) is None  # an I-frame
    assert broadcast_apdu(HdlcFrame(every, client, ui, b"x")) is None  # no LLC header
    assert broadcast_apdu(HdlcFrame(every, client, ui, b"\xe6\xe6\x00")) is None  # nothing after it
    assert broadcast_apdu(HdlcFrame(every, client, ui, b"\xe6\xe6\x00x", segmented=True)) is None


def test_a_broadcast_must_fit_one_information_field() -> None:
    encode_broadcast(client_sap=1, apdu=bytes(125))
    with pytest.raises(LocalProtocolError):
        encode_broadcast(client_sap=1, apdu=bytes(126))


def test_invoke_id_and_priority_service_class() -> None:
    assert invoke_id_and_priority(1, confirmed=True) == 0xC1
    assert invoke_id_and_priority(1, confirmed=False) == 0x81
    assert invoke_id_and_priority(15, confirmed=False, high_priority=False) == 0x0F
    assert is_confirmed(0xC1) and not is_confirmed(0x81)
    with pytest.raises(LocalProtocolError):
        invoke_id_and_priority(16, confirmed=True)


@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 1024])
def test_bit_string_flags_round_trip(count: int) -> None:
    flags = [n % 3 == 0 for n in range(count)]
    value = bit_string_of(flags)
    assert flags_of(decode(encode(value))[0]) == flags
    assert flags_of(value) == flags


def test_bit_zero_is_the_most_significant_bit() -> None:
    assert encode(bit_string_of([True, False, False, False, False, False, False, False, False, True])) == bytes.fromhex(
        "040A8040"
    )
    assert flags_of(Data.bit_string(b"\x80")) == [True] + [False] * 7
