"""The exchanges of one IPv6 meter network over the UDP wrapper, sans-IO (time comes in as `now`).

Theory of operation. Each open channel (an `Association`: client SAP, logical device, meter
address) carries one exchange at a time: an APDU goes out as ONE wrapper datagram, and the next
datagram from that meter with the swapped wPorts is its answer. At most `max_in_flight`
exchanges run on the network at once; further APDUs wait, at most `max_queued` of them, and
waiting channels get the free slots round-robin, one exchange per turn. An exchange times out
`response_timeout_s` after its datagram went out; it is never resent: the channel goes down
with `DownReason.TIMEOUT`, and its association stays quiet for `quiet_after_timeout_s` (a
reopened channel sends nothing before then), so a late answer finds no exchange and is dropped
instead of being taken for the answer to a newer request.

A TCP meter's channel (one wrapper connection per association) waits for `connected` before
its first exchange and ends with `fail` when the connection does; it needs no quiet period,
since a timed-out channel's connection is closed and a late answer has nowhere to arrive.

A datagram from a meter is, in order: malformed (dropped), the answer to its channel's exchange,
an unambiguous push (data-/event-notification) on an open channel (`Push`), a push-tagged APDU
with no exchange to answer (`Push` on its channel, else `UnsolicitedPush`), or unexpected
(counted, dropped).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from gateway.codec.apdu import is_push
from gateway.codec.datagram import decode_datagram, may_be_push
from gateway.codec.wrapper import WrapperError, WrapperPdu, encode
from gateway.media.channel import (
    ApduReceived,
    Association,
    ChannelDown,
    ChannelError,
    ChannelEvent,
    DownReason,
    IpMeter,
    IpTransport,
    Push,
    UnsolicitedPush,
)
from gateway.media.mesh_settings import MeshCounters, MeshSettings

__all__ = ["Deliver", "MeshAction", "MeshCounters", "MeshNetwork", "MeshSettings", "Transmit"]

@dataclass(frozen=True, slots=True)
class Transmit:
    """Send one wrapper PDU for this association: a datagram on UDP, a write on its TCP connection."""

    association: Association
    meter: IpMeter
    data: bytes


@dataclass(frozen=True, slots=True)
class Deliver:
    """Give this event to the listener of this association's channel."""

    association: Association
    event: ChannelEvent


MeshAction = Transmit | Deliver | UnsolicitedPush


@dataclass(slots=True, eq=False)  # identity: a channel is found in the turn queue by itself
class _Channel:
    association: Association
    meter: IpMeter
    not_before: float  # end of a quiet period inherited from a timed-out predecessor; inf: TCP not connected
    pending: deque[bytes] = field(default_factory=deque)
    sent_at: float | None = None  # the exchange in flight, since
    waiting: bool = False  # in the turn queue


class MeshNetwork:
    """All channels of one meter network; returns actions, does no I/O."""

    def __init__(self, settings: MeshSettings | None = None, *, name: str = "mesh") -> None:
        self.name = name  # the network's name: pushes handed to intake carry it
        self.settings = settings or MeshSettings()
        self.counters = MeshCounters()
        self._channels: dict[Association, _Channel] = {}
        self._waiting: deque[_Channel] = deque()  # channels with an APDU and no exchange, in turn order
        self._in_flight: dict[Association, _Channel] = {}
        self._quiet: dict[Association, float] = {}  # timed-out associations: quiet until
        self._queued = 0  # APDUs in all channels' pending queues

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def queued(self) -> int:
        """APDUs waiting for a free exchange slot."""
        return self._queued

    @property
    def deadline(self) -> float | None:
        """When `expire` must be called next: a response timeout or the end of a quiet period."""
        times = [channel.sent_at + self.settings.response_timeout_s
                 for channel in self._in_flight.values() if channel.sent_at is not None]
        if len(self._in_flight) < self.settings.max_in_flight:  # else the next free slot wakes the waiting
            # Only quiet channels wait with a free slot, so these are all in the future.
            times.extend(c.not_before for c in self._waiting if c.not_before != math.inf)
        return min(times, default=None)

    def is_open(self, association: Association) -> bool:
        return association in self._channels

    def open(self, association: Association, *, now: float) -> None:
        """Open a channel. Raises ChannelError."""
        if not isinstance(association.meter, IpMeter):
            raise ChannelError(f"a mesh reaches IP meters, not {association.meter!r}")
        if association in self._channels:
            raise ChannelError(f"channel {association} is open already")
        not_before = max(self._quiet.pop(association, now), now)
        if association.meter.transport is IpTransport.TCP:
            not_before = math.inf
        self._channels[association] = _Channel(association, association.meter, not_before=not_before)
        self._forget_quiet(now)

    def connected(self, association: Association, *, now: float) -> list[MeshAction]:
        """A TCP channel's connection is up: its exchanges may start."""
        channel = self._channels.get(association)
        if channel is None:
            return []
        channel.not_before = now
        return self._start_exchanges(now=now)

    def fail(self, association: Association, reason: DownReason, *, now: float) -> list[MeshAction]:
        """The channel's transport failed (a TCP connection refused or lost): the channel goes down."""
        channel = self._channels.get(association)
        if channel is None:
            return []
        self._remove(channel, now=now)
        return [Deliver(association, ChannelDown(reason)), *self._start_exchanges(now=now)]

    def send_apdu(self, association: Association, apdu: bytes, *, now: float) -> list[MeshAction]:
        """Queue one APDU on an open channel; it goes out when a slot is free. Raises ChannelError."""
        channel = self._channels.get(association)
        if channel is None:
            raise ChannelError(f"channel {association} is not open")
        if not apdu or len(apdu) > self.settings.max_apdu:
            raise ChannelError(f"APDU of {len(apdu)} bytes")
        if self._queued >= self.settings.max_queued:
            self.counters.congested += 1
            self._remove(channel, now=now)  # its slot, if it held one, goes to the next channel
            return [Deliver(association, ChannelDown(DownReason.CONGESTED)), *self._start_exchanges(now=now)]
        channel.pending.append(apdu)
        self._queued += 1
        if channel.sent_at is None:
            self._wait_turn(channel)
        return self._start_exchanges(now=now)

    def prioritize(self, association: Association) -> None:
        """Move a channel waiting for a slot to the front of the turn (a disconnect command goes first)."""
        channel = self._channels.get(association)
        if channel is not None and channel.waiting:
            self._waiting.remove(channel)
            self._waiting.appendleft(channel)

    def close(self, association: Association, *, now: float) -> list[MeshAction]:
        """Close a channel (no event); its free slot goes to the next channel waiting."""
        channel = self._channels.get(association)
        if channel is None:
            return []
        self._remove(channel, now=now)
        return self._start_exchanges(now=now)

    def receive(self, datagram: bytes, *, source: IpMeter, now: float) -> list[MeshAction]:
        """A datagram arrived from `source`."""
        self.counters.datagrams_received += 1
        try:
            pdu = decode_datagram(datagram, max_apdu=self.settings.max_apdu)
        except WrapperError:
            self.counters.malformed += 1
            return []
        return self._on_pdu(Association(client_sap=pdu.destination, logical_device=pdu.source, meter=source), pdu,
                            now=now)

    def receive_pdu(self, association: Association, pdu: WrapperPdu, *, now: float) -> list[MeshAction]:
        """A wrapper PDU arrived on the TCP connection of `association`."""
        self.counters.datagrams_received += 1
        if (pdu.source, pdu.destination) != (association.logical_device, association.client_sap):
            self.counters.unexpected += 1  # the wrong wPorts on this connection
            return []
        return self._on_pdu(association, pdu, now=now)

    def _on_pdu(self, association: Association, pdu: WrapperPdu, *, now: float) -> list[MeshAction]:
        channel = self._channels.get(association)
        if channel is not None and channel.sent_at is not None and not is_push(pdu.apdu):
            self.counters.answers += 1
            self._in_flight.pop(association)
            channel.sent_at = None
            if channel.pending:
                self._wait_turn(channel)
            return [Deliver(association, ApduReceived(pdu.apdu)), *self._start_exchanges(now=now)]
        if not may_be_push(pdu.apdu):
            self.counters.unexpected += 1
            return []
        if channel is not None:
            self.counters.pushes += 1
            return [Deliver(association, Push(pdu.apdu))]
        self.counters.unsolicited += 1
        return [UnsolicitedPush(network=self.name, meter=association.meter, logical_device=pdu.source,
                                client_sap=pdu.destination, apdu=pdu.apdu)]

    def expire(self, *, now: float) -> list[MeshAction]:
        """Handle every deadline that has passed: timeouts end their channel; quiet periods end."""
        actions: list[MeshAction] = []
        limit = self.settings.response_timeout_s
        for channel in [c for c in self._in_flight.values() if c.sent_at is not None and c.sent_at + limit <= now]:
            self.counters.timeouts += 1
            self._remove(channel, now=now)
            actions.append(Deliver(channel.association, ChannelDown(DownReason.TIMEOUT)))
        self._forget_quiet(now)
        return actions + self._start_exchanges(now=now)

    def _remove(self, channel: _Channel, *, now: float) -> None:
        association = channel.association
        del self._channels[association]
        in_flight = self._in_flight.pop(association, None) is not None
        if in_flight and channel.meter.transport is IpTransport.UDP:  # its answer may still come: stay quiet
            self._quiet[association] = now + self.settings.quiet_s
        self._queued -= len(channel.pending)
        if channel.waiting:
            self._waiting.remove(channel)

    def _wait_turn(self, channel: _Channel) -> None:
        if not channel.waiting:
            channel.waiting = True
            self._waiting.append(channel)

    def _forget_quiet(self, now: float) -> None:
        for association in [a for a, until in self._quiet.items() if until <= now]:
            del self._quiet[association]

    def _start_exchanges(self, *, now: float) -> list[MeshAction]:
        actions: list[MeshAction] = []
        for _ in range(len(self._waiting)):
            if len(self._in_flight) >= self.settings.max_in_flight:
                break
            channel = self._waiting.popleft()
            if channel.not_before > now:
                self._waiting.append(channel)  # still quiet (or connecting): goes after the others
                continue
            channel.waiting = False
            association = channel.association
            pdu = WrapperPdu(source=association.client_sap, destination=association.logical_device,
                             apdu=channel.pending.popleft())
            self._queued -= 1
            channel.sent_at = now
            self._in_flight[association] = channel
            self.counters.datagrams_sent += 1
            actions.append(Transmit(association, channel.meter, encode(pdu)))
        return actions
