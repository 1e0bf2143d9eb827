"""What a mesh does to each datagram: seeded delay, jitter, loss; and the figures it measured. Pure."""

from __future__ import annotations

import math
import random
from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class MeshConditions:
    """One-way conditions of the emulated mesh (per datagram, independently drawn)."""

    delay_s: float = 0.150
    jitter_s: float = 0.050  # uniform in [-jitter, +jitter]; datagrams overtake each other
    loss: float = 0.02

    def __post_init__(self) -> None:
        if not (0 <= self.jitter_s <= self.delay_s and 0.0 <= self.loss <= 1.0):
            raise ValueError("0 <= jitter_s <= delay_s and 0 <= loss <= 1 are required")


@dataclass(frozen=True, slots=True)
class MeshFigures:
    """What the emulator did, by its own count (delays in seconds)."""

    forwarded: int  # admitted, delivered after their delay (unless the emulator closed first)
    dropped: int
    reordered: int  # datagrams scheduled to arrive before one sent earlier on the same flow
    delay_p50_s: float
    delay_p90_s: float
    delay_p99_s: float
    delay_max_s: float


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(slots=True)
class MeshModel:
    """Decides each datagram's fate from a seeded random stream."""

    conditions: MeshConditions
    seed: int
    forwarded: int = 0
    dropped: int = 0
    reordered: int = 0
    _random: random.Random = field(init=False)
    _delays: list[float] = field(default_factory=list)
    _last_arrival: dict[Hashable, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def admit(self, *, flow: Hashable, now: float) -> float | None:
        """When the datagram sent at `now` on `flow` arrives, or None when the mesh loses it."""
        if self._random.random() < self.conditions.loss:
            self.dropped += 1
            return None
        jitter = self.conditions.jitter_s
        delay = self.conditions.delay_s + (self._random.uniform(-jitter, jitter) if jitter else 0.0)
        arrival = now + delay
        if arrival < self._last_arrival.get(flow, arrival):
            self.reordered += 1
        self._last_arrival[flow] = max(arrival, self._last_arrival.get(flow, arrival))
        self.forwarded += 1
        self._delays.append(delay)
        return arrival

    def figures(self) -> MeshFigures:
        ordered = sorted(self._delays)
        return MeshFigures(
            forwarded=self.forwarded,
            dropped=self.dropped,
            reordered=self.reordered,
            delay_p50_s=_percentile(ordered, 0.50),
            delay_p90_s=_percentile(ordered, 0.90),
            delay_p99_s=_percentile(ordered, 0.99),
            delay_max_s=ordered[-1] if ordered else 0.0,
        )
