"""The rejection log limiter: one line per key per interval, with a count of what it left out."""

from __future__ import annotations

from gateway.core.router import LogLimiter


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_interval_and_the_count_left_out() -> None:
    clock = Clock()
    limiter = LogLimiter(interval_s=1.0, clock=clock)
    assert limiter.allow("peer-a") == 0
    assert [limiter.allow("peer-a") for _ in range(500)] == [None] * 500
    assert limiter.allow("peer-b") == 0  # another peer is not silenced by the first
    clock.now += 1.0
    assert limiter.allow("peer-a") == 500


def test_memory_stays_bounded_whatever_the_keys() -> None:
    limiter = LogLimiter(interval_s=1.0, clock=Clock())
    for n in range(10_000):
        limiter.allow(("peer", n))
    assert len(limiter._last) <= 1025
