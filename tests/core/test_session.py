"""One meter session on a fake clock and an in-memory medium: order, timeouts, release, endings."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.codec import acse, xdlms
from gateway.codec import apdu as apdus
from gateway.codec.apdu import ApduKind
from gateway.codec.wrapper import WrapperPdu
from gateway.core.channel import Association, DownReason
from gateway.core.session import MAX_OUTSTANDING, MeterSession, SessionState
from gateway.loglimit import LogLimiter
from tests.core.fakes import (
    AARE_ACCEPTED,
    AARQ,
    GET,
    PUSH,
    RLRE,
    RLRQ,
    FakeChannel,
    FakeClock,
    FakeHes,
    FakeMedium,
    aare_result,
    get_answer,
    kinds,
)

EXCHANGE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 300.0
METER = Association(client_sap=16, logical_device=1, meter=17)


@dataclass
class Observer:
    seen: list[int] = field(default_factory=list)
    unreachable: list[int] = field(default_factory=list)

    def meter_seen(self, sap: int) -> None:
        self.seen.append(sap)

    def meter_unreachable(self, sap: int) -> None:
        self.unreachable.append(sap)


@dataclass
class Rig:
    clock: FakeClock
    medium: FakeMedium
    hes: FakeHes
    session: MeterSession
    observer: Observer
    closed: list[MeterSession]

    @property
    def channel(self) -> FakeChannel:
        (channel,) = self.medium.opened
        return channel

    def state(self) -> SessionState:
        return self.session.state

    def answers(self) -> list[bytes]:
        return [pdu.apdu for pdu in self.hes.received]


def rig(*, goodbye: bool = True) -> Rig:
    clock, medium, hes, observer = FakeClock(), FakeMedium(goodbye=goodbye), FakeHes(), Observer()
    closed: list[MeterSession] = []
    session = MeterSession(owner=hes, meter_sap=40, association=METER, medium=medium, scheduler=clock,
                           exchange_timeout_s=EXCHANGE_TIMEOUT_S, idle_timeout_s=IDLE_TIMEOUT_S,
                           on_closed=closed.append, peer_log=LogLimiter(), observer=observer)
    session.start()
    return Rig(clock, medium, hes, session, observer, closed)


def associated() -> Rig:
    r = rig()
    r.session.request(AARQ)
    r.channel.answer(AARE_ACCEPTED)
    r.hes.received.clear()
    return r


def is_exception(apdu: bytes, *, service_error: int) -> bool:
    decoded = xdlms.decode_xdlms(apdu)
    return isinstance(decoded, xdlms.ExceptionResponse) and decoded.service_error == service_error


def test_pipelined_apdus_go_to_the_meter_and_back_to_the_hes_in_order_with_the_hes_wports() -> None:
    r = rig()
    for apdu in (AARQ, GET, GET):
        r.session.request(apdu)
    assert r.channel.sent == [AARQ, GET, GET]  # byte for byte, in order, nothing held back
    for answer in (AARE_ACCEPTED, get_answer(1), get_answer(2)):
        r.channel.answer(answer)
    assert r.answers() == [AARE_ACCEPTED, get_answer(1), get_answer(2)]
    assert {(pdu.source, pdu.destination) for pdu in r.hes.received} == {(40, 16)}
    assert r.observer.seen == [40]  # told once: the registry keeps the time a meter answered to the second
    r.clock.advance(EXCHANGE_TIMEOUT_S)
    assert len(r.hes.received) == 3  # every exchange ended: no timeout follows


def test_the_observer_hears_that_the_meter_answered_at_most_once_a_second() -> None:
    r = rig()
    for apdu in (AARQ, GET, GET, GET):
        r.session.request(apdu)
    r.channel.answer(AARE_ACCEPTED)
    r.clock.advance(0.5)
    r.channel.answer(get_answer(1))
    assert r.observer.seen == [40]
    r.clock.advance(0.5)
    r.channel.answer(get_answer(2))
    assert r.observer.seen == [40, 40]
    r.clock.advance(0.2)
    r.channel.answer(get_answer(3))
    assert r.observer.seen == [40, 40]


def test_a_silent_meter_gets_an_exception_response_per_outstanding_request_and_the_link_closed_cleanly() -> None:
    r = associated()
    r.session.request(GET)
    r.session.request(GET)
    r.clock.advance(EXCHANGE_TIMEOUT_S - 0.001)
    assert r.hes.received == []
    r.clock.advance(0.001)
    assert kinds(r.hes.received) == [ApduKind.EXCEPTION_RESPONSE] * 2
    assert all(is_exception(a, service_error=apdus.SERVICE_ERROR_OTHER_REASON) for a in r.answers())
    # issue 13: a link given up on says goodbye (HDLC DISC), so the meter's next association starts clean;
    # the goodbye drops what was still queued, which never reaches the meter
    assert not r.channel.aborted and r.channel.state == "closing"
    assert r.state() is SessionState.CLOSING
    r.channel.down(DownReason.RELEASED)
    assert r.state() is SessionState.CLOSED and r.closed == [r.session]
    assert r.clock.armed == []  # no timer left behind
    assert r.medium.links == {}


def test_an_answer_still_arriving_is_not_a_silent_meter() -> None:
    # issue 13: a 4 KB GET block at 2,400 bit/s takes ~20 s while the meter answers every poll
    r = associated()
    r.session.request(GET)
    for _ in range(5):  # a frame of the answer every 9 s: 45 s in all, never 10 s of silence
        r.clock.advance(9.0)
        r.channel.last_heard = r.clock.time()
    assert r.hes.received == [] and r.state() is SessionState.OPEN
    r.channel.answer(get_answer(1))
    assert r.answers() == [get_answer(1)]
    r.session.request(GET)
    r.clock.advance(EXCHANGE_TIMEOUT_S)  # the meter heard before this request does not count for it
    assert kinds(r.hes.received[1:]) == [ApduKind.EXCEPTION_RESPONSE]


def test_a_silent_meter_turns_a_waiting_aarq_into_a_transient_rejection() -> None:
    r = rig()
    r.session.request(AARQ)
    r.clock.advance(EXCHANGE_TIMEOUT_S)
    (answer,) = r.answers()
    assert aare_result(answer) is acse.AssociationResult.REJECTED_TRANSIENT


def test_each_answer_restarts_the_exchange_timer_for_the_next_outstanding_request() -> None:
    r = associated()
    r.session.request(GET)
    r.session.request(GET)
    r.clock.advance(EXCHANGE_TIMEOUT_S - 1)
    r.channel.answer(get_answer(1))
    r.clock.advance(EXCHANGE_TIMEOUT_S - 1)  # the second request has its own full timeout
    assert r.answers() == [get_answer(1)]
    r.clock.advance(1)
    assert kinds(r.hes.received) == [ApduKind.RESPONSE, ApduKind.EXCEPTION_RESPONSE]


def test_release_rlrq_rlre_then_the_channel_says_goodbye_and_the_session_closes() -> None:
    r = associated()
    r.session.request(RLRQ)
    assert r.channel.sent[-1] == RLRQ
    r.channel.answer(RLRE)
    assert r.answers() == [RLRE]
    assert r.channel.state == "closing" and r.state() is SessionState.CLOSING and r.closed == []
    r.session.request(GET)  # nothing more on a released association
    assert is_exception(r.answers()[-1], service_error=apdus.SERVICE_ERROR_OPERATION_NOT_POSSIBLE)
    assert r.channel.sent[-1] == RLRQ
    r.channel.down(DownReason.RELEASED)
    assert r.state() is SessionState.CLOSED and r.closed == [r.session]
    assert not r.channel.aborted and r.observer.unreachable == []
    assert r.clock.armed == []


def test_release_with_nothing_to_say_goodbye_to_closes_at_once() -> None:
    r = rig(goodbye=False)
    r.session.request(AARQ)
    r.channel.answer(AARE_ACCEPTED)
    r.session.request(RLRQ)
    r.channel.answer(RLRE)
    assert r.state() is SessionState.CLOSED and r.closed == [r.session]
    assert r.medium.links == {}


def test_the_hes_going_away_releases_the_channel_and_its_outstanding_requests_get_nothing() -> None:
    r = associated()
    r.session.request(GET)
    r.session.hes_gone()
    assert r.channel.state == "closing"
    assert r.hes.received == []  # nobody to answer
    r.clock.advance(EXCHANGE_TIMEOUT_S)  # the exchange timer went with the association
    assert r.hes.received == [] and r.state() is SessionState.CLOSING
    r.channel.down(DownReason.RELEASED)
    assert r.state() is SessionState.CLOSED


def test_a_push_is_relayed_without_ending_the_exchange_in_progress() -> None:
    r = associated()
    r.session.request(GET)
    r.channel.push(PUSH)
    r.clock.advance(EXCHANGE_TIMEOUT_S - 1)
    r.channel.answer(get_answer(5))
    assert r.answers() == [PUSH, get_answer(5)]
    r.clock.advance(EXCHANGE_TIMEOUT_S)
    assert len(r.hes.received) == 2  # the answer ended the exchange: no timeout follows


def test_the_channel_going_down_fails_what_is_outstanding_and_an_unreachable_meter_is_reported() -> None:
    r = associated()
    r.session.request(GET)
    r.channel.down(DownReason.TIMEOUT)
    assert kinds(r.hes.received) == [ApduKind.EXCEPTION_RESPONSE]
    assert r.observer.unreachable == [40]
    assert r.state() is SessionState.CLOSED and not r.channel.aborted


def test_a_meter_that_drops_the_connection_is_not_reported_unreachable() -> None:
    r = associated()
    r.channel.down(DownReason.DROPPED)
    assert r.observer.unreachable == [] and r.state() is SessionState.CLOSED


def test_an_apdu_longer_than_the_channel_carries_is_refused_without_reaching_the_meter() -> None:
    r = associated()
    r.session.request(GET + bytes(FakeChannel.max_apdu))
    r.session.request(b"")
    assert is_exception(r.answers()[0], service_error=apdus.SERVICE_ERROR_PDU_TOO_LONG)
    assert is_exception(r.answers()[1], service_error=apdus.SERVICE_ERROR_OTHER_REASON)
    assert r.channel.sent == [AARQ]


def test_more_outstanding_requests_than_allowed_are_refused() -> None:
    r = associated()
    for _ in range(MAX_OUTSTANDING + 1):
        r.session.request(GET)
    assert len(r.channel.sent) == 1 + MAX_OUTSTANDING
    assert kinds(r.hes.received) == [ApduKind.EXCEPTION_RESPONSE]


def test_an_idle_association_is_released() -> None:
    r = associated()
    r.clock.advance(IDLE_TIMEOUT_S - 1)
    r.session.request(GET)
    r.channel.answer(get_answer(1))
    r.clock.advance(IDLE_TIMEOUT_S - 1)  # traffic restarted the idle time
    assert r.channel.state == "open"
    r.clock.advance(1)
    assert r.channel.state == "closing" and r.state() is SessionState.CLOSING


def test_answers_carry_the_sessions_wports() -> None:
    r = associated()
    r.session.request(GET)
    r.channel.answer(get_answer(3))
    assert r.hes.received == [WrapperPdu(source=40, destination=16, apdu=get_answer(3))]


def test_a_plain_disconnect_action_asks_to_go_first_a_ciphered_one_cannot_be_told_apart() -> None:
    # issue 13: a critical command recognisable in a plain APDU jumps the queue; ciphered APDUs are never opened
    r = associated()
    disconnect = bytes.fromhex("c301c1" "0046" "0000600a00ff" "01" "01" "0f00")  # remote_disconnect, class 70
    read = bytes.fromhex("c301c1" "0003" "0100010800ff" "01" "00")  # an ACTION on a register (class 3)
    ciphered = bytes.fromhex("cb30") + bytes(20)  # glo-action-request: whatever it holds, normal priority
    for apdu in (read, ciphered):
        r.session.request(apdu)
    assert r.channel.prioritized == 0
    r.session.request(disconnect)
    assert r.channel.prioritized == 1
    assert r.channel.sent[-3:] == [read, ciphered, disconnect]  # byte for byte, whatever the priority
