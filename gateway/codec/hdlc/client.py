"""The primary station of one HDLC data-link connection (IEC 62056-46), sans-IO.

Theory of operation. The line is shared and half-duplex, so a driver pulls: it picks a link that
`wants_medium`, calls `transmit(now=...)`, and keeps the medium while the link is
`awaiting_response` (polled, waiting for the frame with the F bit). The response timer starts at
`transmit`, never when an APDU is queued. What `transmit` sends next, in order:

    timed out            -> the very bytes of the last transmission (same N(S)), up to max_retries
    not yet connected    -> SNRM (CONNECTING) or DISC (DISCONNECTING)
    meter holds segments -> RR, to pull the next one
    APDU segments left   -> up to `window` I-frames, P on the last
    disconnect() called  -> DISC, once everything queued before it has gone

Frames the meter did not acknowledge when it sets F are sent again (go-back-N). The link never
queues an APDU twice: retransmission stays at this layer.
"""

from __future__ import annotations

from collections import deque
from enum import Enum

from gateway.codec.errors import LocalProtocolError
from gateway.codec.hdlc.address import HdlcAddress, shared_address
from gateway.codec.hdlc.control import (
    FRAME_KINDS,
    SEQUENCE_MODULUS,
    FrameKind,
    i_control,
    recv_seq_of,
    s_control,
    send_seq_of,
    u_control,
)
from gateway.codec.hdlc.errors import HdlcError
from gateway.codec.hdlc.events import (
    ApduReceived,
    LinkDown,
    LinkDownReason,
    LinkEvent,
    LinkSettings,
    LinkState,
    LinkUp,
)
from gateway.codec.hdlc.exchange import Exchange, Expiry
from gateway.codec.hdlc.frame import HdlcFrame, LinkFrames
from gateway.codec.hdlc.params import (
    DEFAULT_PARAMETERS,
    HdlcParameters,
    decode_parameters,
    encode_parameters,
    negotiate,
)
from gateway.codec.hdlc.window import (
    LLC_REQUEST,
    LLC_RESPONSE,
    MAX_APDU_LENGTH,
    Reassembly,
    SendWindow,
    segment,
    strip_llc,
)

__all__ = [
    "ApduReceived",
    "HdlcClientLink",
    "LinkDown",
    "LinkDownReason",
    "LinkEvent",
    "LinkSettings",
    "LinkState",
    "LinkUp",
]


class _Action(Enum):
    NONE = "none"
    RETRANSMIT = "retransmit"
    SNRM = "snrm"
    DISC = "disc"
    POLL = "poll"
    DATA = "data"


class HdlcClientLink:
    """One (client SAP, server address) data-link connection; returns bytes and events, does no I/O."""

    def __init__(self, *, client_sap: int, server_address: HdlcAddress, settings: LinkSettings) -> None:
        # the decoder's own instances: frames in match by identity
        self._client_address = shared_address(HdlcAddress.client(client_sap))
        self._server_address = shared_address(server_address)
        self._frames = LinkFrames(server_address.encode() + self._client_address.encode())  # addresses fixed
        self._settings = settings
        self._state = LinkState.DISCONNECTED
        self.parameters: HdlcParameters | None = None
        self.frames_sent = 0
        self.frames_received = 0  # addressed to this link, whatever their state
        self.last_heard: float | None = None  # when the meter last sent this link a frame (an answer still arriving)
        self.retries = 0  # exchanges sent again after a response timeout
        self.retransmissions = 0  # frames sent again: after a timeout, or go-back-N after the meter's F
        self._reset()

    def _reset(self) -> None:
        self.parameters = None
        self._queue: deque[bytes] = deque()
        self._window = SendWindow()
        self._received = Reassembly(llc=LLC_RESPONSE)  # .more: the meter holds segments for us
        self._poll = False  # a back-off ended: ask with RR whether the meter is ready
        self._command: FrameKind | None = None  # SNRM or DISC sent and not yet answered
        self._established = False
        # The meter refused our SNRM's proposal (DM): the next SNRM carries none, so IEC 62056-46's defaults apply.
        # Some meters refuse a proposal they cannot take instead of answering the values they can.
        self._defaults_only = False
        self._exchange = Exchange(
            response_timeout_s=self._settings.response_timeout_s, max_retries=self._settings.max_retries
        )

    @property
    def proposed(self) -> HdlcParameters:
        """What this link's SNRM proposes (tx = what the client sends), first: a meter that refused it is
        answered with the defaults (``requested``), and what it took is learned against this."""
        return self._settings.parameters

    @property
    def requested(self) -> HdlcParameters:
        """What the last SNRM asked for: the proposal, or the defaults once the meter refused the proposal."""
        return DEFAULT_PARAMETERS if self._defaults_only else self._settings.parameters

    @property
    def state(self) -> LinkState:
        """Where the connection stands."""
        return self._state

    @property
    def wants_medium(self) -> bool:
        """Whether the link has something to transmit now."""
        return self._next_action() is not _Action.NONE

    @property
    def awaiting_response(self) -> bool:
        """Whether the link has polled and waits for the meter's final frame."""
        return self._exchange.awaiting

    @property
    def deadline(self) -> float | None:
        """When `expire` must be called: a response timeout, or the end of a busy back-off."""
        return self._exchange.deadline

    def connect(self) -> None:
        """Queue an SNRM."""
        if self._state is not LinkState.DISCONNECTED:
            raise LocalProtocolError(f"connect() while {self._state.value}")
        self._reset()
        self._state = LinkState.CONNECTING

    def send_apdu(self, apdu: bytes) -> None:
        """Queue an APDU; the link adds the LLC header and segments it."""
        if self._state not in (LinkState.CONNECTING, LinkState.CONNECTED):
            raise LocalProtocolError(f"send_apdu() while {self._state.value}")
        if not apdu or len(LLC_REQUEST) + len(apdu) > MAX_APDU_LENGTH:
            raise LocalProtocolError(f"APDU of {len(apdu)} bytes")
        self._queue.append(apdu)

    def disconnect(self) -> None:
        """Queue a DISC after what is already queued; an unopened link drops its queue."""
        if self._state in (LinkState.DISCONNECTED, LinkState.DISCONNECTING):
            return
        if not self._established:
            self._queue.clear()
        self._state = LinkState.DISCONNECTING

    def _next_action(self) -> _Action:
        exchange = self._exchange
        if exchange.awaiting or self._state is LinkState.DISCONNECTED:
            return _Action.NONE
        if exchange.retransmit:
            return _Action.RETRANSMIT
        if exchange.deadline is not None:  # not awaiting, a deadline: backing off, the meter said it is busy
            return _Action.NONE
        if not self._established:
            return _Action.SNRM if self._state is LinkState.CONNECTING else _Action.DISC
        if self._received.more or self._poll:
            return _Action.POLL
        if self._window.waiting or self._queue:
            return _Action.DATA
        return _Action.DISC if self._state is LinkState.DISCONNECTING else _Action.NONE

    def _frame(self, control: int, info: bytes = b"", *, segmented: bool = False) -> bytes:
        return self._frames.encode(control, info, segmented=segmented)

    def transmit(self, *, now: float) -> bytes:
        """Return the next frame(s) to put on the line and start the response timer."""
        action = self._next_action()
        if action is _Action.DATA:  # most transmissions
            data, count = self._information_frames()
        elif action is _Action.NONE:
            raise LocalProtocolError("transmit() with nothing to send")
        elif action is _Action.RETRANSMIT:
            data, count = self._exchange.last_transmission, self._exchange.last_frame_count
            self.retransmissions += count
        elif action is _Action.POLL:
            self._poll = False
            data, count = self._frame(s_control(FrameKind.RR, recv_seq=self._received.recv_seq, poll=True)), 1
        else:
            self._command = FrameKind.SNRM if action is _Action.SNRM else FrameKind.DISC
            requested = self.requested  # the defaults go without an information field, as every meter takes them
            info = encode_parameters(requested) if action is _Action.SNRM and requested != DEFAULT_PARAMETERS else b""
            data, count = self._frame(u_control(self._command, poll=True), info), 1
        self._exchange.polled(data, count, now=now)
        self.frames_sent += count
        return data

    def _information_frames(self) -> tuple[bytes, int]:
        """Up to a window of I-frames, P on the last, and how many."""
        parameters = self._negotiated()
        window = self._window
        if not window.waiting:
            apdu = LLC_REQUEST + self._queue.popleft()
            send_seq = window.take_one(apdu) if len(apdu) <= parameters.max_info_tx else None
            if send_seq is not None:  # most requests: one I-frame, and nothing else in flight
                control = i_control(send_seq=send_seq, recv_seq=self._received.recv_seq, poll=True)
                return self._frames.encode(control, apdu), 1
            window.queue(segment(apdu, max_info=parameters.max_info_tx))
        taken = window.take(window=parameters.window_tx)
        recv_seq, last, encode = self._received.recv_seq, len(taken) - 1, self._frames.encode
        frames = [
            encode(i_control(send_seq=send_seq, recv_seq=recv_seq, poll=index == last), item.info, segmented=item.more)
            for index, (send_seq, item) in enumerate(taken)
        ]
        return (frames[0] if len(frames) == 1 else b"".join(frames)), len(frames)

    def _negotiated(self) -> HdlcParameters:
        if self.parameters is None:
            raise LocalProtocolError("no negotiated parameters before UA")
        return self.parameters

    def receive(self, frame: HdlcFrame, *, now: float) -> list[LinkEvent]:
        """Take a frame the driver routed to this link; return what it means."""
        destination, source = frame.destination, frame.source
        if (destination is not self._client_address and destination != self._client_address) or \
                (source is not self._server_address and source != self._server_address):
            return []
        self.frames_received += 1
        self.last_heard = now
        if self._state is LinkState.DISCONNECTED:
            return []
        kind = FRAME_KINDS[frame.control]
        if kind is FrameKind.I:  # most frames; an I-frame is never the answer to a command
            return self._on_information(frame, now=now) if self._established else []
        if kind is None:
            return self._down(LinkDownReason.PROTOCOL_ERROR, f"undefined HDLC control field 0x{frame.control:02X}")
        if kind is FrameKind.UI:  # a push: it does not answer our poll
            return [ApduReceived(strip_llc(frame.info, LLC_RESPONSE))] if frame.info else []
        if kind in (FrameKind.UA, FrameKind.DM) and self._command is not None:
            return self._on_command_answer(kind, frame.info)
        if not self._established:
            return []
        if kind is FrameKind.DM:
            return self._down(LinkDownReason.METER_DISCONNECTED)
        if kind is FrameKind.FRMR:
            return self._down(LinkDownReason.FRAME_REJECTED)
        if kind in (FrameKind.RR, FrameKind.RNR):
            return self._on_supervisory(frame, busy=kind is FrameKind.RNR, now=now)
        return []  # a late UA, or a command a secondary station never sends

    def _on_command_answer(self, kind: FrameKind, info: bytes) -> list[LinkEvent]:
        command, self._command = self._command, None
        self._exchange.succeeded()
        if command is FrameKind.DISC:
            return self._down(LinkDownReason.DISCONNECTED)
        if kind is FrameKind.DM:
            if command is FrameKind.SNRM and self.requested != DEFAULT_PARAMETERS:
                self._defaults_only = True  # ask once more without a proposal: the defaults every meter takes
                return []
            return self._down(LinkDownReason.REFUSED)
        try:
            offered = decode_parameters(info)
        except HdlcError as error:
            return self._down(LinkDownReason.PROTOCOL_ERROR, str(error))
        # The server's UA holds its own tx/rx; capping ours by them is the server's rule mirrored.
        self.parameters = negotiate(proposed=offered, supported=self.requested)
        self._established = True
        if self._state is LinkState.CONNECTING:
            self._state = LinkState.CONNECTED
            return [LinkUp(self.parameters)]
        return []

    def _on_information(self, frame: HdlcFrame, *, now: float) -> list[LinkEvent]:
        events: list[LinkEvent] = []
        send_seq = send_seq_of(frame.control)  # the frame is an I-frame: no need to ask its kind again
        if send_seq == self._received.recv_seq:
            if self._window.acknowledge(recv_seq_of(frame.control)) is None:
                return self._down(LinkDownReason.PROTOCOL_ERROR, "N(R) out of range")
            try:
                apdu = self._received.accept(frame.info, more=frame.segmented)
            except HdlcError as error:
                return self._down(LinkDownReason.PROTOCOL_ERROR, str(error))
            self._exchange.progress = True
            if apdu is not None:
                events.append(ApduReceived(apdu))
        elif send_seq == (self._received.recv_seq - 1) % SEQUENCE_MODULUS:
            return []  # a late copy of a frame already taken, answering our retransmission
        elif self._negotiated().window_rx == 1:
            return self._down(LinkDownReason.PROTOCOL_ERROR, "N(S) out of sequence")
        # else: a frame of the window was lost; the next RR asks the meter to go back to N(R)
        return events + self._after_response_frame(frame, busy=False, now=now)

    def _on_supervisory(self, frame: HdlcFrame, *, busy: bool, now: float) -> list[LinkEvent]:
        acknowledged = self._window.acknowledge(frame.recv_seq)
        if acknowledged is None:
            return self._down(LinkDownReason.PROTOCOL_ERROR, "N(R) out of range")
        self._exchange.progress = self._exchange.progress or acknowledged > 0
        # RR while the meter owes us segments means it has nothing yet: as busy as an RNR
        return self._after_response_frame(frame, busy=busy or self._received.more, now=now)

    def _after_response_frame(self, frame: HdlcFrame, *, busy: bool, now: float) -> list[LinkEvent]:
        if not (self._exchange.awaiting or self._exchange.retransmit):
            return []  # not an answer to a poll of ours: nothing to end
        if not frame.poll_final:
            self._exchange.frame_received(now=now)
            return []
        self.retransmissions += self._window.go_back()  # what the meter did not acknowledge goes again, same N(S)
        if not self._exchange.answered(busy=busy, now=now):
            return self._down(LinkDownReason.METER_BUSY if busy else LinkDownReason.NO_PROGRESS)
        return []

    def expire(self, *, now: float) -> list[LinkEvent]:
        """Handle the deadline: retransmit, end a back-off, or give up after max_retries."""
        expiry = self._exchange.expire(now=now)
        if expiry is Expiry.GIVE_UP:
            return self._down(LinkDownReason.NO_RESPONSE)
        if expiry is Expiry.RETRANSMIT:
            self.retries += 1
        self._poll = self._poll or expiry is Expiry.POLL
        return []

    def _down(self, reason: LinkDownReason, detail: str = "") -> list[LinkEvent]:
        self._reset()
        self._state = LinkState.DISCONNECTED
        return [LinkDown(reason, detail)]
