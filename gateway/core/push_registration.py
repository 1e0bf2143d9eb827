"""Registration of unknown meters from their pushes, bounded: the meter medium is not authenticated.

Theory of operation. A plain UI frame can carry any source address, so anyone on the meter
medium can make pushes "from" addresses nobody registered. Each registration costs a SAP, a row
in the registry and identity reads on the shared line, so a push registers a meter only when,
in this order:

    the address is one a meter can hold      (codec rule; else ADDRESS)
    registration by push is on               (config; else DISABLED)
    a token is left in the bucket            (burst, refilled per hour; else RATE)
    few enough push-registered meters are    (max_pending not yet identified; else PENDING)
      still waiting for their identity read

The checks cost O(1) until a token is available, so a flood of forged pushes is cheap to refuse;
a token is spent only on a registration. A refused push is dropped and counted by reason
(``status`` shows the counts): storing it would let a forger fill the push queue of genuine
alarms with pushes no HES can attribute to a meter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from gateway.codec.hdlc import meter_address_problem


class PushRefusal(StrEnum):
    """Why a push from an unknown address registered no meter."""

    ADDRESS = "address"  # no meter can sit there (IEC 62056-46 reserved or out of range)
    DISABLED = "disabled"  # registry.push_registration = false
    RATE = "rate"  # more new addresses than push_registrations_per_hour / push_registration_burst allow
    PENDING = "pending"  # push_registration_max_pending meters still await their identity read
    UNREGISTERED = "unregistered"  # a mesh datagram from no registered meter: a mesh meter is registered, not pushed in
    REGISTRY = "registry"  # the registry said no (no free SAP)


@dataclass(frozen=True, slots=True)
class PushRegistrationPolicy:
    enabled: bool = True
    per_hour: float = 12.0
    burst: int = 4
    max_pending: int = 16


class PushRegistrationGate:
    """Decides whether a push from an unknown address may register a meter; counts refusals."""

    def __init__(self, policy: PushRegistrationPolicy, *, now: float) -> None:
        self.policy = policy
        self.registered = 0
        self.refused: Counter[PushRefusal] = Counter()
        self._tokens = float(policy.burst)
        self._filled_at = now

    def admit(self, *, logical_device: int, physical_address: int, now: float,
              pending: Callable[[], int]) -> PushRefusal | None:
        """None: register it now (a token is spent); else why not (counted)."""
        refusal = self._check(logical_device=logical_device, physical_address=physical_address, now=now,
                              pending=pending)
        if refusal is None:
            self._tokens -= 1.0
            self.registered += 1
        else:
            self.refused[refusal] += 1
        return refusal

    def refuse(self, refusal: PushRefusal) -> None:
        """Count a push refused before it reached the gate (a 1-byte source address)."""
        self.refused[refusal] += 1

    def registry_refused(self) -> PushRefusal:
        """The registration admitted last was refused by the registry: count it as refused instead."""
        self.registered -= 1
        self.refused[PushRefusal.REGISTRY] += 1
        return PushRefusal.REGISTRY

    def _check(self, *, logical_device: int, physical_address: int, now: float,
               pending: Callable[[], int]) -> PushRefusal | None:
        if meter_address_problem(logical_device=logical_device, physical_address=physical_address) is not None:
            return PushRefusal.ADDRESS
        if not self.policy.enabled:
            return PushRefusal.DISABLED
        elapsed = max(0.0, now - self._filled_at)
        self._tokens = min(float(self.policy.burst), self._tokens + elapsed * self.policy.per_hour / 3600.0)
        self._filled_at = now
        if self._tokens < 1.0:
            return PushRefusal.RATE
        if pending() >= self.policy.max_pending:
            return PushRefusal.PENDING
        return None
