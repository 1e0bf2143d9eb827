"""What one meter network is configured with (limits, patience) and what it counts."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.codec.wrapper import MAX_APDU

DEFAULT_MAX_IN_FLIGHT = 8  # a mesh is not a half-duplex bus, but flooding it collapses it
DEFAULT_RESPONSE_TIMEOUT_S = 10.0  # several mesh hops each way, 6LoWPAN fragmentation included


@dataclass(frozen=True, slots=True)
class MeshSettings:
    """How much one meter network is asked to carry at once, and how patiently."""

    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    max_queued: int = 256
    response_timeout_s: float = DEFAULT_RESPONSE_TIMEOUT_S
    quiet_after_timeout_s: float | None = None  # None: as long as the response timeout
    max_apdu: int = MAX_APDU

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.max_queued < 0 or self.response_timeout_s <= 0:
            raise ValueError("max_in_flight >= 1, max_queued >= 0 and response_timeout_s > 0 are required")

    @property
    def quiet_s(self) -> float:
        return self.response_timeout_s if self.quiet_after_timeout_s is None else self.quiet_after_timeout_s


@dataclass(slots=True)
class MeshCounters:
    """What one network did (TCP wrapper PDUs count as datagrams)."""

    datagrams_sent: int = 0
    datagrams_received: int = 0
    answers: int = 0
    pushes: int = 0  # on an open channel
    unsolicited: int = 0  # handed to push intake
    unexpected: int = 0  # no exchange to answer and no push tag: dropped
    malformed: int = 0
    timeouts: int = 0
    congested: int = 0
    broadcasts: int = 0  # datagrams to the multicast group
