"""The peer log limiter: one line per key per interval, a budget per event, a count of what it left out."""

from __future__ import annotations

from gateway.loglimit import EVENT_BUDGET, MAX_KEYS, LogLimiter


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_interval_and_the_count_left_out() -> None:
    clock = Clock()
    limiter = LogLimiter(interval_s=1.0, clock=clock)
    assert limiter.allow("router.reject", "peer-a") == 0
    assert [limiter.allow("router.reject", "peer-a") for _ in range(500)] == [None] * 500
    assert limiter.allow("router.reject", "peer-b") == 0  # another peer is not silenced by the first
    assert limiter.allow("wan.refused", "peer-a") == 0  # nor another event
    clock.now += 1.0
    assert limiter.allow("router.reject", "peer-a") == 500


def test_many_peers_cannot_multiply_the_rate_of_one_event() -> None:
    clock = Clock()
    limiter = LogLimiter(interval_s=1.0, clock=clock)
    allowed = [limiter.allow("wan.connected", f"10.0.{n // 256}.{n % 256}") for n in range(1000)]
    assert sum(a is not None for a in allowed) == EVENT_BUDGET
    assert limiter.allow("wan.refused", "10.0.0.1") == 0  # the budget is per event
    clock.now += 1.0
    assert limiter.allow("wan.connected", "10.0.0.1") == 0  # heard in the first window: nothing left out
    assert limiter.allow("wan.connected", "10.0.1.200") == 1  # left out by the budget, counted


def test_memory_stays_bounded_whatever_the_keys() -> None:
    limiter = LogLimiter(interval_s=1.0, clock=Clock())
    for n in range(10_000):
        limiter.allow("router.reject", ("peer", n))
    assert len(limiter._last) <= MAX_KEYS
