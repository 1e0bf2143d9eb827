"""One meter line: a serial port, the shared half-duplex medium, and the HDLC links on it.

Theory of operation. Many HDLC data-link connections (one per HES association) share one
multi-drop line, and the line carries one exchange at a time: the gateway (primary station)
sends a frame with the poll bit, then the addressed meter answers until the final bit. So the
line is a token: at most one link "holds the medium" from its ``transmit()`` until it no
longer ``awaiting_response`` (answer received or timer expired). Links that want the medium
are served round-robin, one exchange each, so a long load-profile read cannot starve a short
GET; a link's response timer starts when its frame goes out, not when its APDU was queued.

Behind a PLC or RF modem whose MAC arbitrates the medium (it queues frames and sends each when
the channel is free), the meters cannot collide, and waiting for one meter's latency leaves the
channel idle. ``concurrent_exchanges`` = N lets up to N links to different physical meters hold
polls at once, granted in the same order (urgent first, then round-robin, background last); a
broadcast still takes the whole line, once the exchanges holding it have ended. N = 1 is the
token above.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from gateway.capture.pcapng import Direction
from gateway.capture.tap import FrameTap
from gateway.codec.hdlc import (
    HdlcAddress,
    HdlcClientLink,
    HdlcFrame,
    HdlcFrameDecoder,
    LinkDown,
    LinkDownReason,
    LinkEvent,
    encode_broadcast,
)
from gateway.codec.hdlc.address import ALL_STATION_HALF
from gateway.codec.hdlc.control import FRAME_KINDS
from gateway.codec.hdlc.frame import split_frames
from gateway.config import LinkConfig
from gateway.link.framelog import describe, describe_bytes
from gateway.log import debug_enabled

log = structlog.get_logger(__name__)

LinkListener = Callable[[LinkEvent], None]
UnsolicitedListener = Callable[[HdlcFrame], None]
Opener = Callable[[Callable[[], asyncio.Protocol]], Awaitable[asyncio.Transport]]

_Key = tuple[int, int, int | None]  # (client SAP, meter logical device, physical address)


FAULT_LOG_INTERVAL_S = 60.0  # at most one log line per line this often for frames we drop, whatever arrives


def _key(*, client_sap: int, upper: int, lower: int | None) -> _Key:
    return (client_sap, upper, lower)


EXCHANGE_TIME_WEIGHT = 0.05  # the newest exchange's share in the line's moving average of exchange times
MAX_BROADCASTS_QUEUED = 64  # broadcast frames waiting for the medium; beyond this the HES is refused
BITS_PER_OCTET = 10  # 8N1 on the serial side: a frame's airtime is its octets x 10 / bit rate
_BROADCASTING: _Key = (-1, -1, None)  # who "holds" the medium while a broadcast frame is on the wire
BroadcastDone = Callable[[float | None], None]  # the frame's airtime once it has left, or None: never sent


@dataclass(slots=True)
class _Broadcast:
    frame: bytes
    done: BroadcastDone


@dataclass(slots=True)
class LineCounters:
    frames_sent: int = 0
    frames_received: int = 0
    frames_unrouted: int = 0
    frames_undefined: int = 0  # a control field DLMS does not define (REJ, SREJ, SABM, ...): dropped
    frames_failed: int = 0  # handling the frame raised (a bug): dropped, the rest of the read goes on
    exchanges: int = 0
    timeouts: int = 0
    busy_s: float = 0.0  # time some link held the medium (from its poll to the final frame or a timeout)
    broadcasts: int = 0  # UI frames to all stations sent
    broadcast_airtime_s: float = 0.0


class _LineProtocol(asyncio.Protocol):
    """One opening of the device; a stale one (closed, then reopened) no longer speaks for the line."""

    def __init__(self, line: MeterLine) -> None:
        self._line = line
        self.closed = asyncio.Event()  # the port (and its lock) is released

    def data_received(self, data: bytes) -> None:
        if self._line.current is self:
            self._line.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        if self._line.current is self:
            self._line.connection_lost(exc)


class MeterLine:
    """The medium: schedules exchanges of the HDLC links on one serial line, fairly."""

    def __init__(
        self, *, config: LinkConfig, opener: Opener, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.name = config.name
        self.counters = LineCounters()
        self._opener = opener
        self._clock = clock
        self._decoder = HdlcFrameDecoder(inter_octet_timeout_s=config.inter_octet_timeout_s)
        self._transport: asyncio.Transport | None = None
        self.current: _LineProtocol | None = None  # the protocol of the open device
        self._links: dict[_Key, tuple[HdlcClientLink, LinkListener]] = {}
        self._urgent: set[_Key] = set()  # relay links whose next exchange goes first (a disconnect command)
        self._background: list[_Key] = []  # legacy polling links, served when the relay is idle
        # Relay links round-robin in two levels: between the HES peers they work for (groups), then between
        # a group's links. A HES with 60 associations gets the turns of a HES with one, not 60 times as many.
        self._groups: list[str] = []  # groups with relay links, in turn order
        self._members: dict[str, list[_Key]] = {}  # a group's relay links, in turn order
        self._member_next: dict[str, int] = {}
        self._group_of: dict[_Key, str] = {}  # every relay link (the others are background work)
        self._group_next = 0
        self._holders: set[_Key] = set()  # links holding the medium (polled, awaiting the final frame)
        self._holding_since: dict[_Key, float] = {}  # when each holder took the medium
        self._exchange_s = 0.0  # moving average of how long an exchange held the medium
        self._capacity = max(1, config.concurrent_exchanges)
        self._broadcasts: deque[_Broadcast] = deque()
        self._relay_turns_owed = 0  # relay exchanges served before the next broadcast frame, when they wait
        share = min(max(config.broadcast_share, 0.05), 1.0)
        self._relay_turns_per_broadcast = round((1.0 - share) / share)
        self._held_since = 0.0
        self._opened_at: float | None = None
        self._timers: dict[_Key, tuple[asyncio.TimerHandle, float]] = {}  # response timeouts, back-offs; lazy
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsolicited: UnsolicitedListener | None = None
        self.tap: FrameTap | None = None  # frame capture (dlms-gateway capture); one test per frame when idle
        self._released_listeners: list[Callable[[int, int, int | None], None]] = []
        self._log = log.bind(line=config.name, device=config.device)
        self._fault_logged_at: float | None = None
        self._relay_active_at: float | None = None  # when a relay link last sent or heard on the line
        self._links_to: dict[int | None, int] = {}  # physical address -> data links to it

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._transport is not None

    @property
    def decoder(self) -> HdlcFrameDecoder:
        return self._decoder

    async def open(self) -> None:
        """Open the serial device. Raises LineOpenError."""
        protocol = _LineProtocol(self)
        self.current = protocol
        try:
            self._transport = await self._opener(lambda: protocol)
        except BaseException:
            self.current = None  # never opened: nothing will report connection_lost
            raise
        self._opened_at = self._clock()
        self._log.info("line.open")

    def _hold(self, key: _Key, now: float | None = None) -> None:
        """A link holds the medium; how long the medium is held by anyone is accounted here."""
        if key in self._holders:
            return
        now = self._clock() if now is None else now
        if not self._holders:
            self._held_since = now
        self._holders.add(key)
        self._holding_since[key] = now

    def _release(self, key: _Key, now: float | None = None) -> None:
        if key in self._holders:
            now = self._clock() if now is None else now
            self._holders.discard(key)
            held = now - self._holding_since.pop(key, now)
            if key != _BROADCASTING:
                self._exchange_s += EXCHANGE_TIME_WEIGHT * (held - self._exchange_s)
            if not self._holders:
                self.counters.busy_s += now - self._held_since

    def _release_all(self) -> None:
        for key in list(self._holders):
            self._release(key)

    def busy_ratio(self) -> float:
        """Share of the time since the line opened that an exchange held it (0 while never open)."""
        if self._opened_at is None:
            return 0.0
        now = self._clock()
        busy = self.counters.busy_s + (now - self._held_since if self._holders else 0.0)
        return round(busy / (now - self._opened_at), 4) if now > self._opened_at else 0.0

    def exchange_s(self) -> float:
        """How long an exchange holds the line, lately (a moving average; 0 before the first)."""
        return self._exchange_s

    def expected_wait_s(self, waiting: int | None = None) -> float:
        """How long a link that wants the line now would wait for it, estimated from recent exchanges (behind
        ``waiting`` links, or as many as wait now)."""
        return (self.waiting() if waiting is None else waiting) * self._exchange_s / self._capacity

    def congested(self, *, max_waiting: int, max_wait_s: float) -> bool:
        """Whether ``max_waiting`` links wait, or a link would wait longer than ``max_wait_s``. Counting the
        waiting links passes over every link: it is skipped when even all of them waiting would be neither."""
        links = len(self._links)
        if links < max_waiting and self.expected_wait_s(links) <= max_wait_s:
            return False
        waiting = self.waiting()
        return waiting >= max_waiting or self.expected_wait_s(waiting) > max_wait_s

    def outstanding(self) -> int:
        """Exchanges holding the medium now (polls awaiting their final frame, or a broadcast on the wire)."""
        return len(self._holders)

    def waiting(self) -> int:
        """Data links that want the medium now (the line's queue)."""
        return sum(1 for link, _ in self._links.values() if link.wants_medium)

    def close(self) -> None:
        """Close the device; every link on it goes down."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        self._fail_all(LinkDownReason.LINE_CLOSED)

    async def aclose(self) -> None:
        """Close the device and wait until the port is released (its lock too)."""
        protocol = self.current
        self.close()
        if protocol is not None:
            await protocol.closed.wait()

    def on_unsolicited(self, listener: UnsolicitedListener) -> None:
        """Receive frames no link asked for (UI pushes, frames for unknown links)."""
        self._unsolicited = listener

    # -- links --------------------------------------------------------------------------------

    def attach(
        self, link: HdlcClientLink, listener: LinkListener, *, client_sap: int, server_address: HdlcAddress,
        background: bool = False, group: str = "",
    ) -> None:
        """Put a link on this line; its events go to ``listener``.

        A background link (legacy polling) gets the medium only when no relay link wants it, so a
        relay exchange waits at most for the one background exchange already on the line. ``group``:
        whom a relay link works for (a HES address); groups take turns, then their links do.
        """
        key = _key(client_sap=client_sap, upper=server_address.upper, lower=server_address.lower)
        if key in self._links:
            raise ValueError(f"a link for {key} is already on line {self.name}")
        self._links[key] = (link, listener)
        self._links_to[key[2]] = self._links_to.get(key[2], 0) + 1
        if background:
            self._background.append(key)
            return
        self._group_of[key] = group
        members = self._members.get(group)
        if members is None:
            members = self._members[group] = []
            self._member_next[group] = 0
            self._groups.append(group)
        members.append(key)

    def detach(self, link: HdlcClientLink) -> None:
        """Take a link off this line (it no longer gets the medium)."""
        key = next((k for k, (candidate, _) in self._links.items() if candidate is link), None)
        if key is None:
            return
        del self._links[key]
        remaining = self._links_to.pop(key[2]) - 1
        if remaining:
            self._links_to[key[2]] = remaining
        self._urgent.discard(key)
        self._cancel_timer(key)
        if key in self._background:
            self._background.remove(key)
        else:
            self._leave_group(key)
        self._release(key)
        self.wake()
        for listener in list(self._released_listeners):
            listener(key[0], key[1], key[2])

    def _leave_group(self, key: _Key) -> None:
        group = self._group_of.pop(key)
        members = self._members[group]
        index = members.index(key)
        members.pop(index)
        if index < self._member_next[group]:
            self._member_next[group] -= 1
        if members:
            return
        del self._members[group], self._member_next[group]
        position = self._groups.index(group)
        self._groups.pop(position)
        if position < self._group_next:
            self._group_next -= 1

    def on_link_released(self, listener: Callable[[int, int, int | None], None]) -> None:
        """Be told (client SAP, logical device, physical address) when a link leaves the line."""
        self._released_listeners.append(listener)

    def relay_idle_s(self) -> float:
        """How long no relay (HES) exchange has wanted or used the medium; 0 while one does."""
        if any(key in self._holders for key in self._group_of) or self._relay_waits():
            return 0.0
        return float("inf") if self._relay_active_at is None else self._clock() - self._relay_active_at

    def has_link(self, *, client_sap: int, upper: int, lower: int | None) -> bool:
        return _key(client_sap=client_sap, upper=upper, lower=lower) in self._links

    def prioritize(self, link: HdlcClientLink) -> None:
        """This link's next exchange goes before the round-robin turn of the others."""
        key = next((k for k, (candidate, _) in self._links.items() if candidate is link), None)
        if key is not None and key in self._group_of:  # a relay link
            self._urgent.add(key)

    def has_link_to(self, lower: int | None) -> bool:
        """A data link to this physical meter exists, whatever its client SAP and logical device."""
        return lower in self._links_to

    def broadcast(self, *, client_sap: int, apdu: bytes, done: BroadcastDone) -> bool:
        """Queue one APDU for every meter on the line (a UI frame to all stations); False when it cannot be.

        Nobody answers a broadcast: ``done`` is told the frame's airtime once it has left the line.
        Raises LocalProtocolError when the APDU does not fit one frame.
        """
        if self._transport is None or len(self._broadcasts) >= MAX_BROADCASTS_QUEUED:
            return False
        self._broadcasts.append(_Broadcast(encode_broadcast(client_sap=client_sap, apdu=apdu), done))
        self.wake()
        return True

    def _relay_waits(self) -> bool:
        return any(self._links[key][0].wants_medium for key in self._group_of)

    def _send_broadcast(self) -> None:
        """One broadcast frame on the wire: the medium is held for its airtime (no poll, no answer)."""
        assert self._transport is not None
        broadcast = self._broadcasts.popleft()
        self._transport.write(broadcast.frame)
        airtime = len(broadcast.frame) * BITS_PER_OCTET / self.config.baudrate
        self.counters.broadcasts += 1
        self.counters.broadcast_airtime_s += airtime
        if self.tap is not None and self.tap.active:
            every = ALL_STATION_HALF[2]  # the frame goes to every station of every logical device
            self.tap.hdlc(line=self.name, direction=Direction.OUTBOUND, data=broadcast.frame, upper=every,
                          lower=every)
        self._hold(_BROADCASTING)
        self._relay_turns_owed = self._relay_turns_per_broadcast
        asyncio.get_running_loop().call_later(airtime, self._broadcast_left, broadcast, airtime)

    def _broadcast_left(self, broadcast: _Broadcast, airtime: float) -> None:
        self._release(_BROADCASTING)
        broadcast.done(airtime)
        self.wake()

    def wake(self) -> None:
        """Links may want the medium: grant it while the line has room for another exchange."""
        holders = self._holders
        while len(holders) < self._capacity and self._transport is not None and _BROADCASTING not in holders:
            if self._broadcasts and (self._relay_turns_owed <= 0 or not self._relay_waits()):
                if not holders:
                    self._send_broadcast()  # relay exchanges still get their share between broadcast frames
                return  # a broadcast takes the whole line: it waits for the exchanges holding it
            key = self._next_turn()
            if key is None:
                return
            self._grant(key, self._links[key][0])

    def _next_turn(self) -> _Key | None:
        """Who gets the medium now: a prioritized link (a disconnect command does not wait its turn), then
        relay links round-robin (between HES peers, then within each), then background work on an
        otherwise idle line; None when no link may have it."""
        links = self._links
        if self._urgent:
            for key in list(self._urgent):
                entry = links.get(key)
                if entry is None:
                    self._urgent.discard(key)
                elif entry[0].wants_medium and self._may_hold(key):
                    self._urgent.discard(key)
                    return key
        groups = self._groups
        group_count = len(groups)
        relay_waits = False
        group_index = self._group_next
        for _ in range(group_count):
            if group_index >= group_count:
                group_index = 0
            group = groups[group_index]
            members = self._members[group]
            member_count = len(members)
            index = self._member_next[group]
            for _ in range(member_count):
                if index >= member_count:
                    index = 0
                key = members[index]
                index += 1
                if not links[key][0].wants_medium:
                    continue
                if not self._may_hold(key):
                    relay_waits = True
                    continue
                self._member_next[group] = index if index < member_count else 0
                self._group_next = group_index + 1 if group_index + 1 < group_count else 0
                self._relay_turns_owed -= 1
                return key
            group_index += 1
        if relay_waits:
            return None  # relay links wait for a meter already busy: background work does not take their room
        for key in self._background:  # idle medium: background work may use it
            if links[key][0].wants_medium and self._may_hold(key):
                self._background.remove(key)
                self._background.append(key)  # round-robin among background links too
                return key
        return None

    def _may_hold(self, key: _Key) -> bool:
        """Not while an exchange with the same physical meter is outstanding (its station answers one poll)."""
        return not self._holders or all(held[2] != key[2] for held in self._holders)

    def _grant(self, key: _Key, link: HdlcClientLink) -> None:
        assert self._transport is not None
        now = self._clock()
        data = link.transmit(now=now)
        self._transport.write(data)
        if self.tap is not None and self.tap.active:
            for sent in split_frames(data):
                self.tap.hdlc(line=self.name, direction=Direction.OUTBOUND, data=sent, upper=key[1], lower=key[2])
        if debug_enabled():
            for frame in describe_bytes(data):
                self._log.debug("hdlc.tx", **frame)
        self.counters.frames_sent += 1
        self.counters.exchanges += 1
        self._settle(key, link, now)

    def _settle(self, key: _Key, link: HdlcClientLink, now: float | None = None) -> None:
        """After any event of a link: who holds the medium, and when the link needs ``expire``.

        Timers are lazy (the hot path of issue 13): a link's timer stays armed while its deadline only
        moves later, and re-arms itself when it fires early, so an exchange costs no timer-heap work.
        """
        if now is None:
            now = self._clock()
        if key in self._group_of:  # a relay link
            self._relay_active_at = now
        if link.awaiting_response:
            self._hold(key, now)
        else:
            self._release(key, now)
        deadline = link.deadline
        if deadline is None:
            return  # an armed timer finds nothing to do when it fires
        armed = self._timers.get(key)
        if armed is not None:
            if armed[1] <= deadline:
                return
            armed[0].cancel()
        self._arm(key, deadline)

    def _arm(self, key: _Key, deadline: float) -> None:
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        self._loop = loop
        handle = loop.call_at(loop.time() + max(0.0, deadline - self._clock()), self._expired, key)
        self._timers[key] = (handle, deadline)

    def _cancel_timer(self, key: _Key) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer[0].cancel()

    def _expired(self, key: _Key) -> None:
        self._timers.pop(key, None)
        entry = self._links.get(key)
        if entry is None:
            return
        deadline = entry[0].deadline
        if deadline is None:
            return
        if deadline > self._clock():  # the link moved on since the timer was armed: wait for its new deadline
            self._arm(key, deadline)
            return
        link, listener = entry
        if key in self._holders:
            self.counters.timeouts += 1
        events = link.expire(now=self._clock())
        self._settle(key, link)
        for event in events:
            listener(event)
        self.wake()

    # -- bytes from the line ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Total: whatever the bytes, every frame of the read is handled and the medium is granted again."""
        tap = self.tap if self.tap is not None and self.tap.active else None
        self._decoder.keep_raw = tap is not None
        try:
            now = self._clock()  # one reading for the whole read: its frames arrived together
            frames = self._decoder.feed(data, now=now)
            if tap is not None:  # before handling them: what they make us send comes after them in the file
                for raw, source, bad_fcs in self._decoder.raw:
                    tap.hdlc(line=self.name, direction=Direction.INBOUND, data=raw, upper=source.upper,
                             lower=source.lower, bad_fcs=bad_fcs)
                self._decoder.raw.clear()
            debug = debug_enabled()
            for frame in frames:
                self.counters.frames_received += 1
                try:
                    if debug:
                        self._log.debug("hdlc.rx", **describe(frame))
                    if FRAME_KINDS[frame.control] is None:  # no link or push handler can use it: never a meter's
                        self.counters.frames_undefined += 1
                        self._fault("line.frame_undefined", frame)
                    else:
                        self._dispatch(frame, now)
                except Exception:  # one bad frame (a bug) must not drop the others or stall the line
                    self.counters.frames_failed += 1
                    self._fault("line.frame_failed", frame, exc_info=True)
        finally:
            if self._decoder.buffered > 1:  # a frame is half in: time spent handling the others is no line gap
                self._decoder.resume(now=self._clock())
            self.wake()

    def _fault(self, event: str, frame: HdlcFrame, *, exc_info: bool = False) -> None:
        """Log a dropped frame, at most once per FAULT_LOG_INTERVAL_S (the counters say how many)."""
        now = self._clock()
        if self._fault_logged_at is not None and now - self._fault_logged_at < FAULT_LOG_INTERVAL_S:
            return
        self._fault_logged_at = now
        self._log.warning(event, control=f"{frame.control:02X}", src=f"{frame.source.upper}/{frame.source.lower}",
                          undefined=self.counters.frames_undefined, failed=self.counters.frames_failed,
                          exc_info=exc_info)

    def _dispatch(self, frame: HdlcFrame, now: float) -> None:
        server = frame.source
        key = (frame.destination.upper, server.upper, server.lower)  # as _key() makes it
        entry = self._links.get(key)
        if entry is None:
            self.counters.frames_unrouted += 1
            if self._unsolicited is not None:
                self._unsolicited(frame)
            return
        link, listener = entry
        events = link.receive(frame, now=now)
        self._settle(key, link, now)
        for event in events:
            listener(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self.current = None
        if self._transport is None:
            return
        self._transport = None
        self._log.warning("line.lost", error=str(exc) if exc else None)
        self._fail_all(LinkDownReason.LINE_LOST)

    def _fail_all(self, reason: LinkDownReason) -> None:
        self._release_all()
        while self._broadcasts:  # never sent: their HES is told
            self._broadcasts.popleft().done(None)
        for key in list(self._timers):
            self._cancel_timer(key)
        for _, listener in list(self._links.values()):
            listener(LinkDown(reason=reason))
