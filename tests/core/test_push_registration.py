"""Registration from pushes: the address rule, a token bucket and a cap on meters awaiting identity."""

from __future__ import annotations

from gateway.core.push_registration import PushRefusal, PushRegistrationGate, PushRegistrationPolicy

POLICY = PushRegistrationPolicy(enabled=True, per_hour=12.0, burst=4, max_pending=6)


def test_a_flood_registers_the_burst_then_one_per_refill_interval() -> None:
    gate = PushRegistrationGate(POLICY, now=0.0)
    answers = [gate.admit(logical_device=1, physical_address=100 + n, now=1.0, pending=lambda: 0)
               for n in range(150)]
    assert answers[:4] == [None] * 4
    assert set(answers[4:]) == {PushRefusal.RATE}
    assert gate.admit(logical_device=1, physical_address=300, now=1.0 + 299.0, pending=lambda: 0) is PushRefusal.RATE
    assert gate.admit(logical_device=1, physical_address=300, now=1.0 + 301.0, pending=lambda: 0) is None  # 3600/12
    assert gate.registered == 5
    assert gate.refused == {PushRefusal.RATE: 147}


def test_no_registration_beyond_the_meters_still_awaiting_identity() -> None:
    gate = PushRegistrationGate(POLICY, now=0.0)
    assert gate.admit(logical_device=1, physical_address=100, now=0.0, pending=lambda: 6) is PushRefusal.PENDING
    assert gate.admit(logical_device=1, physical_address=100, now=0.0, pending=lambda: 5) is None


def test_reserved_addresses_never_register_and_do_not_spend_tokens() -> None:
    gate = PushRegistrationGate(POLICY, now=0.0)
    for physical_address, logical_device in [(0, 1), (5, 1), (16382, 1), (16383, 1), (17, 0), (17, 16383)]:
        refusal = gate.admit(logical_device=logical_device, physical_address=physical_address, now=0.0,
                             pending=lambda: 0)
        assert refusal is PushRefusal.ADDRESS
    assert [gate.admit(logical_device=1, physical_address=100 + n, now=0.0, pending=lambda: 0)
            for n in range(4)] == [None] * 4


def test_off_means_off() -> None:
    gate = PushRegistrationGate(PushRegistrationPolicy(enabled=False), now=0.0)
    assert gate.admit(logical_device=1, physical_address=100, now=0.0, pending=lambda: 0) is PushRefusal.DISABLED
