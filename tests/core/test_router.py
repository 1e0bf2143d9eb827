"""The router on a fake clock and an in-memory medium: routes, refusals, waiting for a busy data link, SAP 1."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.codec import acse
from gateway.codec import apdu as apdus
from gateway.codec.apdu import ApduKind
from gateway.codec.wrapper import WrapperPdu
from gateway.config import RelayConfig
from gateway.core.channel import Association, DownReason
from gateway.core.router import MANAGEMENT_SAP, MAX_WAITING_PDUS, MeterRoute, Router
from gateway.core.session import SessionState
from tests.core.fakes import (
    AARE_ACCEPTED,
    AARE_REFUSED,
    AARQ,
    GET,
    RLRE,
    RLRQ,
    FakeClock,
    FakeHes,
    FakeMedium,
    aare_result,
    get_answer,
    kinds,
)

EXCHANGE_TIMEOUT_S = 10.0
MANAGEMENT_CLIENT = 1
PUBLIC_CLIENT = 16
ROUTES = {
    17: MeterRoute(sap=17, network="bus0", address=17),
    18: MeterRoute(sap=18, network="bus0", address=18, logical_device=2),
    19: MeterRoute(sap=19, network="bus0", address="fd00::19"),  # an address this medium cannot carry
    20: MeterRoute(sap=20, network="mesh0", address=20),  # a network the gateway does not have
}
METER_17 = Association(client_sap=PUBLIC_CLIENT, logical_device=1, meter=17)


@dataclass
class Management:
    """SAP 1 as the router sees it: accepts some client SAPs; the management client takes pushes."""

    accepting: set[int] = field(default_factory=lambda: {MANAGEMENT_CLIENT, PUBLIC_CLIENT})
    associated: set[int] = field(default_factory=set)
    released: list[int] = field(default_factory=list)

    def handle(self, *, client_sap: int, apdu: bytes) -> bytes | None:
        kind = apdus.kind_of(apdu)
        if kind is ApduKind.AARQ:
            if client_sap not in self.accepting:
                return AARE_REFUSED
            self.associated.add(client_sap)
            return AARE_ACCEPTED
        if kind is ApduKind.RLRQ:
            self.associated.discard(client_sap)
            return RLRE
        return get_answer(1)

    def release(self, *, client_sap: int) -> None:
        self.associated.discard(client_sap)
        self.released.append(client_sap)

    def takes_pushes(self, *, client_sap: int) -> bool:
        return client_sap == MANAGEMENT_CLIENT and client_sap in self.associated


@dataclass
class Rig:
    clock: FakeClock
    medium: FakeMedium
    management: Management
    router: Router
    drained: list[bool]

    def send(self, hes: FakeHes, apdu: bytes, *, meter_sap: int = 17, client_sap: int = PUBLIC_CLIENT) -> None:
        self.router.pdu_from_hes(hes, WrapperPdu(source=client_sap, destination=meter_sap, apdu=apdu))


def rig() -> Rig:
    clock, medium, management = FakeClock(), FakeMedium(), Management()
    router = Router(lookup=ROUTES.get, media={"bus0": medium}, relay=RelayConfig(exchange_timeout_s=EXCHANGE_TIMEOUT_S),
                    scheduler=clock, management=management)
    drained: list[bool] = []
    router.on_drained = lambda: drained.append(True)
    return Rig(clock, medium, management, router, drained)


def associated(r: Rig, hes: FakeHes) -> None:
    r.send(hes, AARQ)
    r.medium.opened[-1].answer(AARE_ACCEPTED)
    hes.received.clear()


# -- routes and refusals ----------------------------------------------------------------------------


def test_an_aarq_opens_a_channel_for_the_routes_meter_logical_device_and_client_sap() -> None:
    r, hes = rig(), FakeHes()
    r.send(hes, AARQ, meter_sap=18, client_sap=32)
    (channel,) = r.medium.opened
    assert channel.association == Association(client_sap=32, logical_device=2, meter=18)
    assert channel.sent == [AARQ]
    assert r.router.sessions[(18, 32)].state is SessionState.OPEN


def test_an_unknown_sap_is_refused_permanently_an_aarq_with_an_aare_anything_else_with_an_exception() -> None:
    r, hes = rig(), FakeHes()
    r.send(hes, AARQ, meter_sap=99)
    r.send(hes, GET, meter_sap=99)
    r.send(hes, AARQ, meter_sap=20)  # registered on a network this gateway does not run
    assert aare_result(hes.received[0].apdu) is acse.AssociationResult.REJECTED_PERMANENT
    assert kinds(hes.received[1:2]) == [ApduKind.EXCEPTION_RESPONSE]
    assert aare_result(hes.received[2].apdu) is acse.AssociationResult.REJECTED_PERMANENT
    assert [(pdu.source, pdu.destination) for pdu in hes.received] == [(99, 16), (99, 16), (20, 16)]
    assert r.medium.opened == [] and r.router.rejections == 3


def test_a_request_before_any_aarq_gets_an_exception_response() -> None:
    r, hes = rig(), FakeHes()
    r.send(hes, GET)
    assert kinds(hes.received) == [ApduKind.EXCEPTION_RESPONSE] and r.medium.opened == []


def test_an_address_the_medium_cannot_carry_is_refused_permanently() -> None:
    r, hes = rig(), FakeHes()
    r.send(hes, AARQ, meter_sap=19)
    assert aare_result(hes.received[0].apdu) is acse.AssociationResult.REJECTED_PERMANENT
    assert r.router.sessions == {}


def test_a_medium_that_is_down_refuses_transiently() -> None:
    r, hes = rig(), FakeHes()
    r.medium.up = False
    r.send(hes, AARQ)
    assert aare_result(hes.received[0].apdu) is acse.AssociationResult.REJECTED_TRANSIENT


def test_a_congested_medium_refuses_a_new_association_transiently_and_opens_nothing() -> None:
    # issue 13: a bounded queue per line, with a clear rejection when it is full
    r, hes = rig(), FakeHes()
    associated(r, hes)
    r.medium.full = True
    other = FakeHes(peer="198.51.100.2:1", peer_address="198.51.100.2")
    r.send(other, AARQ, client_sap=32)
    assert aare_result(other.received[0].apdu) is acse.AssociationResult.REJECTED_TRANSIENT
    assert len(r.medium.opened) == 1
    r.send(hes, GET)  # an association already open goes on
    assert r.medium.opened[0].sent[-1] == GET
    r.medium.full = False
    r.send(other, AARQ, client_sap=32)
    assert len(r.medium.opened) == 2


def test_an_association_held_by_one_hes_is_refused_to_another() -> None:
    r, first, second = rig(), FakeHes(), FakeHes(peer="198.51.100.2:1")
    associated(r, first)
    r.send(second, AARQ)
    r.send(second, GET)
    assert aare_result(second.received[0].apdu) is acse.AssociationResult.REJECTED_TRANSIENT
    assert kinds(second.received[1:]) == [ApduKind.EXCEPTION_RESPONSE]
    assert r.medium.opened[0].sent == [AARQ]  # nothing of the second HES reached the meter


def test_associations_per_hes_address_are_capped() -> None:
    r, hes = rig(), FakeHes()
    r.router.max_associations_per_peer = 1
    associated(r, hes)
    r.send(hes, AARQ, meter_sap=18)
    assert aare_result(hes.received[0].apdu) is acse.AssociationResult.REJECTED_TRANSIENT
    assert len(r.medium.opened) == 1


# -- exchanges --------------------------------------------------------------------------------------


def test_pipelined_apdus_reach_the_meter_in_order_and_answers_return_in_order() -> None:
    r, hes = rig(), FakeHes()
    for apdu in (AARQ, GET, GET, GET):
        r.send(hes, apdu)
    (channel,) = r.medium.opened
    assert channel.sent == [AARQ, GET, GET, GET]
    for answer in (AARE_ACCEPTED, get_answer(1), get_answer(2), get_answer(3)):
        channel.answer(answer)
    assert [pdu.apdu for pdu in hes.received] == [AARE_ACCEPTED, get_answer(1), get_answer(2), get_answer(3)]


def test_an_exchange_timeout_answers_an_exception_response_closes_the_link_cleanly_and_frees_the_association() -> None:
    r, hes = rig(), FakeHes()
    associated(r, hes)
    r.send(hes, GET)
    r.clock.advance(EXCHANGE_TIMEOUT_S)
    assert kinds(hes.received) == [ApduKind.EXCEPTION_RESPONSE]
    assert r.medium.opened[0].state == "closing" and not r.medium.opened[0].aborted  # a goodbye, not a reset
    r.send(hes, AARQ)  # the HES associates again at once: it waits for the goodbye
    assert len(r.medium.opened) == 1
    r.medium.opened[0].down(DownReason.RELEASED)
    assert len(r.medium.opened) == 2 and r.medium.opened[1].sent == [AARQ]


def test_release_rlrq_rlre_then_the_goodbye_ends_the_session() -> None:
    r, hes = rig(), FakeHes()
    associated(r, hes)
    r.send(hes, RLRQ)
    channel = r.medium.opened[0]
    channel.answer(RLRE)
    assert [pdu.apdu for pdu in hes.received] == [RLRE]
    assert channel.state == "closing" and r.router.sessions[(17, 16)].state is SessionState.CLOSING
    channel.down(DownReason.RELEASED)
    assert r.router.sessions == {} and r.drained == [True] and r.clock.armed == []


def test_an_aarq_right_after_a_release_waits_for_the_goodbye_then_proceeds_in_order() -> None:
    r, hes = rig(), FakeHes()
    associated(r, hes)
    r.send(hes, RLRQ)
    r.medium.opened[0].answer(RLRE)
    hes.received.clear()
    r.send(hes, AARQ)
    r.send(hes, GET)
    assert hes.received == [] and len(r.medium.opened) == 1  # waiting: the old data link still closes
    r.medium.opened[0].down(DownReason.RELEASED)
    assert len(r.medium.opened) == 2 and r.medium.opened[1].sent == [AARQ, GET]
    r.medium.opened[1].answer(AARE_ACCEPTED)
    r.medium.opened[1].answer(get_answer(4))
    assert [pdu.apdu for pdu in hes.received] == [AARE_ACCEPTED, get_answer(4)]


def test_a_hes_that_reconnects_at_once_waits_for_its_old_link_to_close_instead_of_being_refused() -> None:
    # issue 13: after a TCP drop the old session takes a while to say goodbye (DISC); the new
    # connection's AARQ waits for it, as an AARQ on the same connection already does
    r, old, new = rig(), FakeHes(), FakeHes()
    associated(r, old)
    r.router.hes_disconnected(old)
    assert r.medium.opened[0].state == "closing"
    r.send(new, AARQ)
    r.send(new, GET)
    assert new.received == [] and len(r.medium.opened) == 1  # waiting, not rejected-transient
    r.medium.opened[0].down(DownReason.RELEASED)
    assert len(r.medium.opened) == 2 and r.medium.opened[1].sent == [AARQ, GET]
    r.medium.opened[1].answer(AARE_ACCEPTED)
    assert [pdu.apdu for pdu in new.received] == [AARE_ACCEPTED]
    assert r.router.sessions[(17, 16)].owner is new


def test_an_open_association_of_another_hes_is_still_refused_transiently() -> None:
    r, holder, other = rig(), FakeHes(), FakeHes()
    associated(r, holder)
    r.send(other, AARQ)
    assert aare_result(other.received[-1].apdu) is acse.AssociationResult.REJECTED_TRANSIENT
    assert len(r.medium.opened) == 1


def test_the_hes_disconnecting_releases_its_sessions_and_forgets_what_it_had_waiting() -> None:
    r, hes, other = rig(), FakeHes(), FakeHes(peer="198.51.100.2:1", peer_address="198.51.100.2")
    associated(r, hes)
    r.medium.hold(Association(client_sap=PUBLIC_CLIENT, logical_device=2, meter=18))
    r.send(hes, AARQ, meter_sap=18)  # waits for the gateway's own link
    r.send(other, AARQ, meter_sap=17, client_sap=32)  # another HES's association stays
    r.medium.opened[1].answer(AARE_ACCEPTED)
    r.router.hes_disconnected(hes)
    assert r.medium.opened[0].state == "closing"
    assert r.router.sessions[(17, 32)].state is SessionState.OPEN
    r.medium.release(Association(client_sap=PUBLIC_CLIENT, logical_device=2, meter=18))
    r.clock.advance(EXCHANGE_TIMEOUT_S)
    assert hes.received == []  # nothing waited on its behalf, nothing opened for it
    assert [channel.association.meter for channel in r.medium.opened] == [17, 17]
    assert [pdu.apdu for pdu in other.received] == [AARE_ACCEPTED]


# -- a busy data link -------------------------------------------------------------------------------


def test_an_aarq_waits_for_a_busy_data_link_with_what_is_pipelined_behind_it_then_proceeds() -> None:
    r, hes = rig(), FakeHes()
    r.medium.hold(METER_17)  # the gateway's own identity read
    r.send(hes, AARQ)
    r.send(hes, GET)
    r.clock.advance(EXCHANGE_TIMEOUT_S - 1)
    assert hes.received == [] and r.medium.opened == []
    r.medium.release(METER_17)
    (channel,) = r.medium.opened
    assert channel.sent == [AARQ, GET]
    assert r.router.sessions[(17, 16)].owner is hes
    r.clock.advance(1)  # the wait's own timer went with the wait
    assert hes.received == []


def test_an_aarq_that_waits_past_the_exchange_timeout_is_rejected_transiently_and_the_next_one_works() -> None:
    r, hes = rig(), FakeHes()
    r.medium.hold(METER_17)
    r.send(hes, AARQ)
    r.send(hes, GET)
    r.clock.advance(EXCHANGE_TIMEOUT_S)
    assert aare_result(hes.received[0].apdu) is acse.AssociationResult.REJECTED_TRANSIENT
    assert kinds(hes.received[1:]) == [ApduKind.EXCEPTION_RESPONSE]
    assert r.medium.opened == []
    r.medium.release(METER_17)
    assert r.medium.opened == []  # nothing waits any more
    r.send(hes, AARQ)
    assert r.medium.opened[0].sent == [AARQ]


def test_what_waits_behind_a_busy_link_is_bounded_and_kept_to_its_own_hes() -> None:
    r, hes, other = rig(), FakeHes(), FakeHes(peer="198.51.100.2:1")
    r.medium.hold(METER_17)
    r.send(hes, AARQ)
    for _ in range(MAX_WAITING_PDUS):
        r.send(hes, GET)
    r.send(other, AARQ)
    assert kinds(hes.received) == [ApduKind.EXCEPTION_RESPONSE]  # the ninth PDU behind the AARQ
    assert aare_result(other.received[0].apdu) is acse.AssociationResult.REJECTED_TRANSIENT
    r.medium.release(METER_17)
    assert r.medium.opened[0].sent == [AARQ] + [GET] * (MAX_WAITING_PDUS - 1)


# -- SAP 1, the management logical device (issue 9, D1 and D2) --------------------------------------


def test_a_refused_aarq_to_sap_1_holds_nothing_and_another_hes_may_associate() -> None:
    r, stranger, owner = rig(), FakeHes(peer="198.51.100.7:1"), FakeHes()
    r.management.accepting = {MANAGEMENT_CLIENT}
    r.send(stranger, AARQ, meter_sap=MANAGEMENT_SAP, client_sap=PUBLIC_CLIENT)
    assert aare_result(stranger.received[0].apdu) is acse.AssociationResult.REJECTED_PERMANENT
    assert r.router.management_owners == {} and r.router.push_subscriber() is None
    r.management.accepting = {MANAGEMENT_CLIENT, PUBLIC_CLIENT}
    r.send(owner, AARQ, meter_sap=MANAGEMENT_SAP, client_sap=PUBLIC_CLIENT)
    assert aare_result(owner.received[0].apdu) is acse.AssociationResult.ACCEPTED
    assert r.router.management_owners == {PUBLIC_CLIENT: owner}


def test_sap_1_is_held_by_one_hes_per_client_sap_until_released() -> None:
    r, owner, other = rig(), FakeHes(), FakeHes(peer="198.51.100.2:1")
    r.send(owner, AARQ, meter_sap=MANAGEMENT_SAP, client_sap=PUBLIC_CLIENT)
    r.send(other, AARQ, meter_sap=MANAGEMENT_SAP, client_sap=PUBLIC_CLIENT)
    assert aare_result(other.received[0].apdu) is acse.AssociationResult.REJECTED_TRANSIENT
    r.send(owner, RLRQ, meter_sap=MANAGEMENT_SAP, client_sap=PUBLIC_CLIENT)
    assert r.router.management_owners == {}
    r.send(other, AARQ, meter_sap=MANAGEMENT_SAP, client_sap=PUBLIC_CLIENT)
    assert aare_result(other.received[-1].apdu) is acse.AssociationResult.ACCEPTED


def test_pushes_go_only_to_the_accepted_management_client_and_stop_when_its_hes_leaves() -> None:
    r, reader, manager = rig(), FakeHes(), FakeHes(peer="198.51.100.3:1")
    subscribed: list[bool] = []
    r.router.on_subscriber = lambda: subscribed.append(True)
    r.send(reader, AARQ, meter_sap=MANAGEMENT_SAP, client_sap=PUBLIC_CLIENT)
    assert r.router.push_subscriber() is None and subscribed == []  # a public reader takes no pushes
    r.send(manager, AARQ, meter_sap=MANAGEMENT_SAP, client_sap=MANAGEMENT_CLIENT)
    assert r.router.push_subscriber() is manager and subscribed == [True]
    r.router.hes_disconnected(manager)
    assert r.management.released == [MANAGEMENT_CLIENT] and r.router.push_subscriber() is None
