"""The serial HDLC line as a MeterMedium: one HDLC data link per channel, on the line's fair token.

Theory of operation. `open` builds an `HdlcClientLink` for (client SAP, HDLC server address built
from the meter's logical device and physical address), attaches it to the `MeterLine` and queues
its SNRM; APDUs sent before the UA wait in the link. The line keeps scheduling exactly as before:
one exchange at a time, round-robin over the links that want the medium. Link events map as

    hdlc.LinkUp                  -> nothing (logged)
    hdlc.ApduReceived(apdu)      -> Push if the tag is a notification, else ApduReceived
    hdlc.LinkDown(reason)        -> ChannelDown(DownReason), then the link leaves the line

`close` queues a DISC behind what is queued when the link is established (ChannelDown(RELEASED)
follows its UA), else detaches at once. `abort` detaches at once: the meter's inactivity timeout,
or the next SNRM, ends its side. Frames no link takes become `UnsolicitedPush`es.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import structlog

from gateway.codec import apdu as apdus
from gateway.codec.errors import LocalProtocolError
from gateway.codec.hdlc import (
    ApduReceived,
    FrameKind,
    HdlcAddress,
    HdlcClientLink,
    HdlcFrame,
    HdlcParameters,
    LinkDown,
    LinkDownReason,
    LinkEvent,
    LinkSettings,
    LinkState,
    LinkUp,
    client_sap_fits,
    llc_payload,
)
from gateway.codec.hdlc.params import capped, meter_limit
from gateway.codec.hdlc.window import LLC_REQUEST, MAX_APDU_LENGTH
from gateway.config import LinkConfig
from gateway.core import channel
from gateway.core.channel import Association, ChannelDown, ChannelError, ChannelListener, DownReason, UnsolicitedPush
from gateway.link.line import MeterLine

log = structlog.get_logger(__name__)

PROBE_RETRIES = 1  # a scan's probe: an empty address costs two response timeouts, not four

_DOWN_REASONS = {
    LinkDownReason.DISCONNECTED: DownReason.RELEASED,
    LinkDownReason.REFUSED: DownReason.REFUSED,
    LinkDownReason.METER_DISCONNECTED: DownReason.DROPPED,
    LinkDownReason.FRAME_REJECTED: DownReason.PROTOCOL_ERROR,
    LinkDownReason.PROTOCOL_ERROR: DownReason.PROTOCOL_ERROR,
    LinkDownReason.NO_RESPONSE: DownReason.TIMEOUT,
    LinkDownReason.METER_BUSY: DownReason.BUSY,
    LinkDownReason.NO_PROGRESS: DownReason.BUSY,  # it answers, acknowledging nothing: as good as busy
    LinkDownReason.LINE_CLOSED: DownReason.MEDIUM_LOST,
    LinkDownReason.LINE_LOST: DownReason.MEDIUM_LOST,
}


class Learned(Protocol):
    """What a meter accepted in its last UA, and its limits known so far (the gateway's view)."""

    @property
    def accepted(self) -> HdlcParameters: ...

    @property
    def limit(self) -> HdlcParameters: ...


class LinkMemory(Protocol):
    """Where the HDLC parameters each meter accepted are remembered across associations and restarts."""

    def learned_link(self, *, link: str, physical_address: int, logical_device: int = 1) -> Learned | None: ...

    def learn_link(self, *, link: str, physical_address: int, logical_device: int = 1,
                   accepted: HdlcParameters, limit: HdlcParameters) -> bool: ...


def link_settings(config: LinkConfig) -> LinkSettings:
    """HDLC settings for links on a line, from its configuration."""
    return LinkSettings(
        parameters=HdlcParameters(
            max_info_tx=config.max_info,
            max_info_rx=config.max_info,
            window_tx=config.window,
            window_rx=config.window,
        ),
        response_timeout_s=config.response_timeout_s,
        max_retries=config.max_retries,
    )


def push_apdu(frame: HdlcFrame) -> bytes | None:
    """The APDU of an unsolicited frame if it is a meter push, else None (any frame: never raises)."""
    if frame.defined_kind not in (FrameKind.UI, FrameKind.I) or not frame.info:
        return None
    payload = llc_payload(frame.info)
    info = frame.info if payload is None else payload  # a push without LLC header is tolerated
    return info if info and info[0] in apdus.PUSH_TAGS else None


def server_address(association: Association) -> HdlcAddress:
    """The meter's HDLC address for an association. Raises ChannelError."""
    if not isinstance(association.meter, int) or isinstance(association.meter, bool):
        raise ChannelError(f"{association.meter!r} is not an HDLC physical address")
    if not client_sap_fits(association.client_sap):
        raise ChannelError(f"client SAP {association.client_sap} does not fit an HDLC client address")
    try:
        return HdlcAddress.server(logical_device=association.logical_device, physical_address=association.meter)
    except LocalProtocolError as exc:
        raise ChannelError(str(exc)) from None


class SerialMedium:
    """A `MeterMedium` over one serial line."""

    def __init__(self, line: MeterLine, *, settings: LinkSettings | None = None,
                 memory: LinkMemory | None = None) -> None:
        self.line = line
        self._settings = settings if settings is not None else link_settings(line.config)
        self._memory = memory
        self._released: list[Callable[[Association], None]] = []
        self._unsolicited: list[Callable[[UnsolicitedPush], None]] = []
        line.on_link_released(self._link_released)
        line.on_unsolicited(self._frame_unsolicited)

    @property
    def name(self) -> str:
        return self.line.name

    @property
    def idle_timeout_s(self) -> float:
        return self.line.config.inactivity_timeout_s

    def usable(self) -> bool:
        return self.line.is_open

    def congested(self) -> bool:
        """The queue is full: as many links wait as configured, or the next would wait longer than max_wait_s."""
        config = self.line.config
        return self.line.congested(max_waiting=config.max_waiting, max_wait_s=config.max_wait_s)

    def busy(self, association: Association) -> bool:
        """One data link per physical meter at a time (issue 13): many meters keep one HDLC connection only,
        and a second one (another client SAP, or the gateway's own read) would drop the first."""
        meter = association.meter
        return isinstance(meter, int) and self.line.has_link_to(meter)

    def open(self, association: Association, listener: ChannelListener, *, probe: bool = False,
             background: bool = False, group: str = "") -> LineChannel:
        server = server_address(association)
        settings = self._proposal(association)
        if probe:
            settings = replace(settings, max_retries=PROBE_RETRIES)
        link = HdlcClientLink(client_sap=association.client_sap, server_address=server, settings=settings)
        opened = LineChannel(self.line, association, link, listener, learned=self._learned)
        try:
            self.line.attach(link, opened.link_event, client_sap=association.client_sap, server_address=server,
                             background=background, group=group)
        except ValueError as exc:
            raise ChannelError(str(exc)) from None
        link.connect()
        self.line.wake()
        return opened

    def _proposal(self, association: Association) -> LinkSettings:
        """The configured settings, with the SNRM proposal lowered to what this meter accepted before."""
        if self._memory is None or not isinstance(association.meter, int):
            return self._settings
        learned = self._memory.learned_link(link=self.line.name, physical_address=association.meter,
                                            logical_device=association.logical_device)
        if learned is None:
            return self._settings
        return replace(self._settings, parameters=capped(learned.limit, self._settings.parameters))

    def _learned(self, association: Association, accepted: HdlcParameters, proposed: HdlcParameters) -> None:
        """A UA came: remember what the meter took, and what that says of its limits."""
        if self._memory is None or not isinstance(association.meter, int):
            return
        meter, logical_device = association.meter, association.logical_device
        before = self._memory.learned_link(link=self.line.name, physical_address=meter, logical_device=logical_device)
        limit = meter_limit(previous=None if before is None else before.limit, proposed=proposed, accepted=accepted)
        self._memory.learn_link(link=self.line.name, physical_address=meter, logical_device=logical_device,
                                accepted=accepted, limit=limit)

    def on_released(self, listener: Callable[[Association], None]) -> None:
        self._released.append(listener)

    def on_unsolicited(self, listener: Callable[[UnsolicitedPush], None]) -> None:
        self._unsolicited.append(listener)

    def _link_released(self, client_sap: int, upper: int, lower: int | None) -> None:
        association = Association(client_sap=client_sap, logical_device=upper, meter=lower)
        for listener in list(self._released):
            listener(association)

    def _frame_unsolicited(self, frame: HdlcFrame) -> None:
        apdu = push_apdu(frame)
        if apdu is None:
            return
        push = UnsolicitedPush(network=self.line.name, meter=frame.source.lower, logical_device=frame.source.upper,
                               client_sap=frame.destination.upper, apdu=apdu)
        for listener in self._unsolicited:
            listener(push)


class LineChannel:
    """One association's HDLC data link on the line."""

    max_apdu = MAX_APDU_LENGTH - len(LLC_REQUEST)  # what one link carries after its LLC header

    def __init__(self, line: MeterLine, association: Association, link: HdlcClientLink,
                 listener: ChannelListener,
                 learned: Callable[[Association, HdlcParameters, HdlcParameters], None] | None = None) -> None:
        self._line = line
        self._association = association
        self.link = link
        self._listener = listener
        self._learned = learned
        self._attached = True

    @property
    def association(self) -> Association:
        return self._association

    @property
    def last_heard(self) -> float | None:
        return self.link.last_heard  # every frame of a segmented answer counts: the meter is not silent

    def send_apdu(self, apdu: bytes) -> None:
        if not self._attached:
            raise ChannelError("the channel is down")
        try:
            self.link.send_apdu(apdu)
        except LocalProtocolError as exc:
            raise ChannelError(str(exc)) from None
        self._line.wake()

    def prioritize(self) -> None:
        if self._attached:
            self._line.prioritize(self.link)
            self._line.wake()

    def close(self) -> bool:
        if self._attached and self.link.state is LinkState.CONNECTED and self._line.is_open:
            self.link.disconnect()
            self._line.wake()
            return False
        self.abort()
        return True

    def abort(self) -> None:
        if self._attached:
            self._attached = False
            self._line.detach(self.link)

    def link_event(self, event: LinkEvent) -> None:
        """What the line reports for this channel's link."""
        if not self._attached:
            return
        if isinstance(event, ApduReceived):
            self._listener(channel.Push(event.apdu) if apdus.is_push(event.apdu) else channel.ApduReceived(event.apdu))
        elif isinstance(event, LinkUp):
            log.debug("hdlc.link_up", line=self._line.name, client_sap=self._association.client_sap,
                      max_info_tx=event.parameters.max_info_tx, window_tx=event.parameters.window_tx)
            if self._learned is not None:
                self._learned(self._association, event.parameters, self.link.proposed)
        elif isinstance(event, LinkDown):
            self._attached = False
            self._listener(ChannelDown(_DOWN_REASONS[event.reason], event.detail))
            self._line.detach(self.link)  # after the listener: its session leaves the router first
