"""The sans-IO mesh network on a fake clock: slots, queue bound, fairness, timeouts, no retransmission, routing."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.codec.wrapper import WrapperPdu, encode
from gateway.media.channel import (
    ApduReceived,
    Association,
    ChannelDown,
    ChannelError,
    DownReason,
    IpMeter,
    Push,
    UnsolicitedPush,
)
from gateway.media.mesh_core import Deliver, MeshAction, MeshNetwork, MeshSettings, Transmit

GET = bytes.fromhex("C001C100010000600100FF0200")
GET_RESPONSE = bytes.fromhex("C401C1000906" + "00" * 6)
DATA_NOTIFICATION = bytes.fromhex("0F00000001000900")
GLO_EVENT = bytes.fromhex("CA0A30000000011122334455")
CLIENT = 16


def meter(index: int) -> IpMeter:
    return IpMeter(ipaddress.IPv6Address(f"fd00::{index + 0x10:x}"))


def association(index: int, *, client_sap: int = CLIENT) -> Association:
    return Association(client_sap=client_sap, logical_device=1, meter=meter(index))


def answer(assoc: Association, apdu: bytes = GET_RESPONSE) -> bytes:
    return encode(WrapperPdu(source=assoc.logical_device, destination=assoc.client_sap, apdu=apdu))


def transmits(actions: list[MeshAction]) -> list[Transmit]:
    return [action for action in actions if isinstance(action, Transmit)]


def events(actions: list[MeshAction], assoc: Association) -> list[object]:
    return [action.event for action in actions if isinstance(action, Deliver) and action.association == assoc]


def opened(network: MeshNetwork, count: int, *, now: float = 0.0) -> list[Association]:
    associations = [association(index) for index in range(count)]
    for assoc in associations:
        network.open(assoc, now=now)
    return associations


def test_one_apdu_is_one_wrapper_datagram_with_the_hes_wports() -> None:
    network = MeshNetwork()
    (assoc,) = opened(network, 1)
    (sent,) = transmits(network.send_apdu(assoc, GET, now=0.0))
    assert sent.meter == meter(0)
    assert sent.data == encode(WrapperPdu(source=CLIENT, destination=1, apdu=GET))
    assert events(network.receive(answer(assoc), source=meter(0), now=0.2), assoc) == [ApduReceived(GET_RESPONSE)]
    assert network.in_flight == 0


def test_in_flight_limit_then_round_robin_between_channels() -> None:
    network = MeshNetwork(MeshSettings(max_in_flight=2))
    first, second, third = opened(network, 3)
    sent: list[Transmit] = []
    for assoc in (first, first, second, third):  # two APDUs on the first channel: they go one at a time
        sent += transmits(network.send_apdu(assoc, GET, now=0.0))
    assert [t.meter for t in sent] == [meter(0), meter(1)]
    assert network.queued == 2
    # The first channel's answer frees a slot: the third channel (waiting longer) goes before first's second APDU.
    after_first = transmits(network.receive(answer(first), source=meter(0), now=0.1))
    assert [t.meter for t in after_first] == [meter(2)]
    after_second = transmits(network.receive(answer(second), source=meter(1), now=0.2))
    assert [t.meter for t in after_second] == [meter(0)]


def test_queue_bound_ends_the_channel_as_congested_without_sending() -> None:
    network = MeshNetwork(MeshSettings(max_in_flight=1, max_queued=1))
    first, second, third = opened(network, 3)
    assert transmits(network.send_apdu(first, GET, now=0.0))
    assert network.send_apdu(second, GET, now=0.0) == []  # queued
    actions = network.send_apdu(third, GET, now=0.0)
    assert transmits(actions) == []
    assert events(actions, third) == [ChannelDown(DownReason.CONGESTED)]
    assert not network.is_open(third) and network.counters.congested == 1


def test_timeout_counts_from_the_send_not_from_the_queueing() -> None:
    network = MeshNetwork(MeshSettings(max_in_flight=1, response_timeout_s=5.0))
    first, second = opened(network, 2)
    network.send_apdu(first, GET, now=0.0)
    network.send_apdu(second, GET, now=0.0)
    assert transmits(network.receive(answer(first), source=meter(0), now=4.0))  # second goes out at 4.0
    assert network.deadline == 9.0
    assert network.expire(now=8.9) == []
    assert events(network.expire(now=9.0), second) == [ChannelDown(DownReason.TIMEOUT)]


def test_a_timeout_is_never_followed_by_a_retransmission() -> None:
    network = MeshNetwork(MeshSettings(response_timeout_s=1.0, quiet_after_timeout_s=2.0))
    (assoc,) = opened(network, 1)
    assert len(transmits(network.send_apdu(assoc, GET, now=0.0))) == 1
    actions = network.expire(now=1.0)
    assert transmits(actions) == [] and events(actions, assoc) == [ChannelDown(DownReason.TIMEOUT)]
    for moment in (1.5, 3.0, 10.0, 100.0):
        assert transmits(network.expire(now=moment)) == []
    assert network.counters.datagrams_sent == 1 and network.counters.timeouts == 1
    with pytest.raises(ChannelError):
        network.send_apdu(assoc, GET, now=100.0)


def test_a_late_answer_is_never_taken_for_the_next_request() -> None:
    network = MeshNetwork(MeshSettings(response_timeout_s=1.0, quiet_after_timeout_s=2.0))
    (assoc,) = opened(network, 1)
    network.send_apdu(assoc, GET, now=0.0)
    network.expire(now=1.0)
    network.open(assoc, now=1.1)  # the HES tries again at once
    assert transmits(network.send_apdu(assoc, GET, now=1.1)) == []  # held until the quiet period ends
    assert network.deadline == 3.0
    late = network.receive(answer(assoc, b"\xc4\x01\xc1\x00\x09\x01\x99"), source=meter(0), now=2.5)
    assert late == [] and network.counters.unexpected == 1
    assert transmits(network.expire(now=3.0))  # now it goes
    assert events(network.receive(answer(assoc), source=meter(0), now=3.2), assoc) == [ApduReceived(GET_RESPONSE)]


def test_answers_from_the_wrong_source_or_wports_are_ignored() -> None:
    network = MeshNetwork()
    (assoc,) = opened(network, 1)
    network.send_apdu(assoc, GET, now=0.0)
    wrong = [
        (answer(assoc), meter(7)),  # another meter
        (answer(assoc), IpMeter(meter(0).host, 4060)),  # another port
        (encode(WrapperPdu(source=2, destination=CLIENT, apdu=GET_RESPONSE)), meter(0)),  # another logical device
        (encode(WrapperPdu(source=1, destination=1, apdu=GET_RESPONSE)), meter(0)),  # another client SAP
        (answer(assoc)[:-1], meter(0)),  # length field does not match the datagram
        (b"\x00\x02" + answer(assoc)[2:], meter(0)),  # wrapper version 2
    ]
    for datagram, source in wrong:
        assert network.receive(datagram, source=source, now=0.1) == []
    assert network.counters.unexpected == 4 and network.counters.malformed == 2
    assert events(network.receive(answer(assoc), source=meter(0), now=0.2), assoc) == [ApduReceived(GET_RESPONSE)]


def test_pushes_go_to_their_channel_or_to_the_unsolicited_listener() -> None:
    network = MeshNetwork()
    (assoc,) = opened(network, 1)
    network.send_apdu(assoc, GET, now=0.0)
    # A data-notification during an exchange is a push, not the answer: the exchange stays open.
    assert events(network.receive(answer(assoc, DATA_NOTIFICATION), source=meter(0), now=0.1), assoc) == [
        Push(DATA_NOTIFICATION)
    ]
    assert network.in_flight == 1
    # From a meter without a channel (a ciphered event-notification to the management client).
    stranger = network.receive(answer(association(5, client_sap=1), GLO_EVENT), source=meter(5), now=0.2)
    assert stranger == [UnsolicitedPush(network="mesh", meter=meter(5), logical_device=1, client_sap=1, apdu=GLO_EVENT)]
    # A GET response from a stranger is no push: counted and dropped.
    assert network.receive(answer(association(6)), source=meter(6), now=0.3) == []
    assert (network.counters.pushes, network.counters.unsolicited, network.counters.unexpected) == (1, 1, 1)


def test_a_ciphered_answer_with_a_push_capable_tag_answers_the_exchange() -> None:
    network = MeshNetwork()
    (assoc,) = opened(network, 1)
    network.send_apdu(assoc, bytes.fromhex("DB08") + b"HES00001" + b"\x10\x30" + b"\x00" * 15, now=0.0)
    general_glo = bytes.fromhex("DB08") + b"SIM00001" + b"\x10\x30" + b"\x01" * 15
    assert events(network.receive(answer(assoc, general_glo), source=meter(0), now=0.1), assoc) == [
        ApduReceived(general_glo)
    ]


def test_close_frees_the_slot_for_the_next_channel_and_keeps_the_late_answer_out() -> None:
    network = MeshNetwork(MeshSettings(max_in_flight=1, response_timeout_s=1.0))
    first, second = opened(network, 2)
    network.send_apdu(first, GET, now=0.0)
    network.send_apdu(second, GET, now=0.0)
    assert [t.meter for t in transmits(network.close(first, now=0.5))] == [meter(1)]
    network.open(first, now=0.6)
    assert network.receive(answer(first), source=meter(0), now=0.7) == []


def test_open_twice_or_with_a_serial_address_is_refused() -> None:
    network = MeshNetwork()
    (assoc,) = opened(network, 1)
    with pytest.raises(ChannelError):
        network.open(assoc, now=0.0)
    with pytest.raises(ChannelError):
        network.open(Association(client_sap=CLIENT, logical_device=1, meter=17), now=0.0)


def test_a_full_network_sets_no_deadline_for_the_channels_waiting_for_a_slot() -> None:
    network = MeshNetwork(MeshSettings(max_in_flight=1, response_timeout_s=5.0))
    first, second = opened(network, 2)
    network.send_apdu(first, GET, now=0.0)
    network.send_apdu(second, GET, now=1.0)
    assert network.deadline == 5.0  # the first exchange's timeout only: the answer or it frees the slot


def test_congestion_on_the_channel_holding_a_slot_hands_the_slot_on() -> None:
    network = MeshNetwork(MeshSettings(max_in_flight=1, max_queued=1))
    first, second = opened(network, 2)
    network.send_apdu(first, GET, now=0.0)  # in flight
    network.send_apdu(second, GET, now=0.0)  # queued: the queue is full
    actions = network.send_apdu(first, GET, now=0.0)  # the HES pipelines: no room
    assert events(actions, first) == [ChannelDown(DownReason.CONGESTED)]
    assert [t.meter for t in transmits(actions)] == [meter(1)]
