"""Any sequence of opens, sends, datagrams, closes and clock steps keeps the mesh's promises."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.codec.wrapper import WrapperPdu, encode
from gateway.media.channel import (
    ApduReceived,
    ChannelDown,
    ChannelError,
    DownReason,
    IpMeter,
    MeterAddress,
    Push,
    UnsolicitedPush,
)
from gateway.media.mesh_core import Deliver, MeshNetwork, MeshSettings, Transmit
from tests.media.test_mesh_core import association, meter

CHANNELS = 3
APDUS = st.sampled_from([b"\xc4\x01\xc1\x00\x09\x01\x01", b"\x0f\x00\x00\x00\x01\x00\x09\x00", b"\xdb\x08" + bytes(20),
                         b"\xd8\x01\x01", b"\x61\x03\x02\x01\x00"])
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("open"), st.integers(0, CHANNELS - 1)),
        st.tuples(st.just("send"), st.integers(0, CHANNELS - 1)),
        st.tuples(st.just("close"), st.integers(0, CHANNELS - 1)),
        st.tuples(st.just("answer"), st.integers(0, CHANNELS), APDUS),  # index CHANNELS: a meter never opened
        st.tuples(st.just("garbage"), st.binary(max_size=20)),
        st.tuples(st.just("wait"), st.floats(0.0, 3.0)),
    ),
    max_size=80,
)


def meter_index(address: MeterAddress) -> int:
    assert isinstance(address, IpMeter)
    return (int(address.host) & 0xFFFF) - 0x10


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
@example([("open", 0), ("open", 1), ("send", 0), ("send", 1)])  # a full network: no past deadline
def test_never_more_in_flight_than_allowed_never_resent_never_an_answer_without_a_request(operations: list) -> None:
    network = MeshNetwork(MeshSettings(max_in_flight=1, max_queued=2, response_timeout_s=1.0))
    now = 0.0
    awaiting: set[int] = set()  # channels whose datagram went out and got no answer or timeout yet
    open_channels: set[int] = set()
    for operation in operations:
        kind = operation[0]
        actions = []
        try:
            if kind == "open":
                network.open(association(operation[1]), now=now)
                open_channels.add(operation[1])
            elif kind == "send":
                actions = network.send_apdu(association(operation[1]), b"\xc0\x01", now=now)
            elif kind == "close":
                actions = network.close(association(operation[1]), now=now)
                open_channels.discard(operation[1])
                awaiting.discard(operation[1])
            elif kind == "answer":
                index, apdu = operation[1], operation[2]
                datagram = encode(WrapperPdu(source=1, destination=16, apdu=apdu))
                actions = network.receive(datagram, source=meter(index), now=now)
            elif kind == "garbage":
                actions = network.receive(operation[1], source=meter(0), now=now)
            else:
                now += operation[1]
                actions = network.expire(now=now)
        except ChannelError:
            continue
        for action in actions:
            if isinstance(action, Transmit):
                index = meter_index(action.meter)
                assert index not in awaiting, "a second datagram before the first was answered or timed out"
                awaiting.add(index)
            elif isinstance(action, Deliver):
                channel = meter_index(action.association.meter)
                if isinstance(action.event, ApduReceived):
                    assert channel in awaiting, "an answer without a request"
                    awaiting.discard(channel)
                elif isinstance(action.event, ChannelDown):
                    open_channels.discard(channel)
                    if action.event.reason is DownReason.TIMEOUT:
                        assert channel in awaiting
                    awaiting.discard(channel)
                else:
                    assert isinstance(action.event, Push)
                    assert channel in open_channels
            else:
                assert isinstance(action, UnsolicitedPush)
        assert network.in_flight <= 1 and network.queued <= 2
        assert network.in_flight == len(awaiting)
        deadline = network.deadline
        assert deadline is None or deadline > now, "a deadline already due: the driver's timer would spin"
    for index in range(CHANNELS):
        network.close(association(index), now=now)
    assert (network.in_flight, network.queued) == (0, 0)
