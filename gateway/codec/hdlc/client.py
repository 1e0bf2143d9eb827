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
from dataclasses import dataclass, field
from enum import Enum

from gateway.codec.errors import LocalProtocolError
from gateway.codec.hdlc.address import HdlcAddress
from gateway.codec.hdlc.control import SEQUENCE_MODULUS, FrameKind, i_control, s_control, u_control
from gateway.codec.hdlc.errors import HdlcError
from gateway.codec.hdlc.frame import HdlcFrame, encode_frame
from gateway.codec.hdlc.params import HdlcParameters, decode_parameters, encode_parameters, negotiate
from gateway.codec.hdlc.window import LLC_REQUEST, LLC_RESPONSE, MAX_APDU_LENGTH, SendWindow, segment


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """What the client proposes and how patiently it waits."""

    parameters: HdlcParameters = field(default_factory=HdlcParameters)
    response_timeout_s: float = 1.0
    max_retries: int = 3


class LinkState(Enum):
    """The data-link connection as the HES sees it."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTING = "disconnecting"


@dataclass(frozen=True, slots=True)
class LinkUp:
    """The meter accepted the SNRM; `parameters` are ours (tx = what we send)."""

    parameters: HdlcParameters


@dataclass(frozen=True, slots=True)
class ApduReceived:
    """A whole APDU from the meter, LLC header removed."""

    apdu: bytes


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The connection is gone; `reason` says why."""

    reason: str


LinkEvent = LinkUp | ApduReceived | LinkDown


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
        self._client_address = HdlcAddress.client(client_sap)
        self._server_address = server_address
        self._settings = settings
        self._state = LinkState.DISCONNECTED
        self.parameters: HdlcParameters | None = None
        self.frames_sent = 0
        self.frames_received = 0
        self.retries = 0
        self._reset()

    def _reset(self) -> None:
        self.parameters = None
        self._queue: deque[bytes] = deque()
        self._window = SendWindow()
        self._recv_seq = 0  # V(R)
        self._reassembly = bytearray()
        self._pull = False  # the meter said more segments follow
        self._poll = False  # a back-off ended: ask with RR whether the meter is ready
        self._command: FrameKind | None = None  # SNRM or DISC sent and not yet answered
        self._established = False
        self._awaiting = False
        self._retransmit = False
        self._last_transmission = b""
        self._last_frame_count = 0
        self._deadline: float | None = None
        self._attempts = 0  # exchanges in a row that timed out or made no progress
        self._progress = False

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
        return self._awaiting

    @property
    def deadline(self) -> float | None:
        """When `expire` must be called: a response timeout, or the end of a busy back-off."""
        return self._deadline

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
        if self._state is LinkState.DISCONNECTED or self._awaiting:
            return _Action.NONE
        if self._retransmit:
            return _Action.RETRANSMIT
        if self._deadline is not None:  # backing off: the meter said it is busy
            return _Action.NONE
        if not self._established:
            return _Action.SNRM if self._state is LinkState.CONNECTING else _Action.DISC
        if self._pull or self._poll:
            return _Action.POLL
        if self._window.waiting or self._queue:
            return _Action.DATA
        return _Action.DISC if self._state is LinkState.DISCONNECTING else _Action.NONE

    def _frame(self, control: int, info: bytes = b"", *, segmented: bool = False) -> bytes:
        return encode_frame(HdlcFrame(self._server_address, self._client_address, control, info, segmented=segmented))

    def transmit(self, *, now: float) -> bytes:
        """Return the next frame(s) to put on the line and start the response timer."""
        action = self._next_action()
        frames: list[bytes] = []
        if action is _Action.NONE:
            raise LocalProtocolError("transmit() with nothing to send")
        if action is _Action.RETRANSMIT:
            data, count = self._last_transmission, self._last_frame_count
        else:
            if action is _Action.SNRM or action is _Action.DISC:
                self._command = FrameKind.SNRM if action is _Action.SNRM else FrameKind.DISC
                info = encode_parameters(self._settings.parameters) if action is _Action.SNRM else b""
                frames.append(self._frame(u_control(self._command, poll=True), info))
            elif action is _Action.POLL:
                self._poll = False
                frames.append(self._frame(s_control(FrameKind.RR, recv_seq=self._recv_seq, poll=True)))
            else:
                frames.extend(self._information_frames())
            data, count = b"".join(frames), len(frames)
        self._last_transmission, self._last_frame_count = data, count
        self._retransmit = False
        self._awaiting = True
        self._deadline = now + self._settings.response_timeout_s
        self.frames_sent += count
        return data

    def _information_frames(self) -> list[bytes]:
        parameters = self._negotiated()
        if not self._window.waiting:
            apdu = LLC_REQUEST + self._queue.popleft()
            self._window.queue(segment(apdu, max_info=parameters.max_info_tx))
        taken = self._window.take(window=parameters.window_tx)
        return [
            self._frame(
                i_control(send_seq=send_seq, recv_seq=self._recv_seq, poll=index == len(taken) - 1),
                item.info,
                segmented=item.more,
            )
            for index, (send_seq, item) in enumerate(taken)
        ]

    def _negotiated(self) -> HdlcParameters:
        if self.parameters is None:
            raise LocalProtocolError("no negotiated parameters before UA")
        return self.parameters

    def receive(self, frame: HdlcFrame, *, now: float) -> list[LinkEvent]:
        """Take a frame the driver routed to this link; return what it means."""
        if frame.destination != self._client_address or frame.source != self._server_address:
            return []
        self.frames_received += 1
        if self._state is LinkState.DISCONNECTED:
            return []
        try:
            kind = frame.kind
        except HdlcError as error:
            return self._down(f"protocol error: {error}")
        if kind is FrameKind.UI:  # a push: it does not answer our poll
            return [ApduReceived(_strip_llc(frame.info))] if frame.info else []
        if kind in (FrameKind.UA, FrameKind.DM) and self._command is not None:
            return self._on_command_answer(kind, frame.info, now=now)
        if not self._established:
            return []
        if kind is FrameKind.DM:
            return self._down("meter disconnected")
        if kind is FrameKind.FRMR:
            return self._down("frame rejected")
        if kind is FrameKind.I:
            return self._on_information(frame, now=now)
        if kind in (FrameKind.RR, FrameKind.RNR):
            return self._on_supervisory(frame, busy=kind is FrameKind.RNR, now=now)
        return []  # a late UA, or a command a secondary station never sends

    def _on_command_answer(self, kind: FrameKind, info: bytes, *, now: float) -> list[LinkEvent]:
        command, self._command = self._command, None
        self._end_exchange()
        self._attempts = 0
        if command is FrameKind.DISC:
            return self._down("disconnected")
        if kind is FrameKind.DM:
            return self._down("refused")
        try:
            offered = decode_parameters(info)
        except HdlcError as error:
            return self._down(f"protocol error: {error}")
        # The server's UA holds its own tx/rx; capping ours by them is the server's rule mirrored.
        self.parameters = negotiate(proposed=offered, supported=self._settings.parameters)
        self._established = True
        if self._state is LinkState.CONNECTING:
            self._state = LinkState.CONNECTED
            return [LinkUp(self.parameters)]
        return []

    def _on_information(self, frame: HdlcFrame, *, now: float) -> list[LinkEvent]:
        events: list[LinkEvent] = []
        if frame.send_seq == self._recv_seq:
            if self._window.acknowledge(frame.recv_seq) is None:
                return self._down("protocol error: N(R) out of range")
            if len(self._reassembly) + len(frame.info) > MAX_APDU_LENGTH:
                return self._down("protocol error: APDU too long")
            self._recv_seq = (self._recv_seq + 1) % SEQUENCE_MODULUS
            self._reassembly += frame.info
            self._pull = frame.segmented
            self._progress = True
            if not frame.segmented:
                events.append(ApduReceived(_strip_llc(bytes(self._reassembly))))
                self._reassembly.clear()
        elif frame.send_seq == (self._recv_seq - 1) % SEQUENCE_MODULUS:
            return []  # a late copy of a frame already taken, answering our retransmission
        elif self._negotiated().window_rx == 1:
            return self._down("protocol error: N(S) out of sequence")
        # else: a frame of the window was lost; the next RR asks the meter to go back to N(R)
        return events + self._after_response_frame(frame, busy=False, now=now)

    def _on_supervisory(self, frame: HdlcFrame, *, busy: bool, now: float) -> list[LinkEvent]:
        acknowledged = self._window.acknowledge(frame.recv_seq)
        if acknowledged is None:
            return self._down("protocol error: N(R) out of range")
        self._progress = self._progress or acknowledged > 0
        # RR while the meter owes us segments means it has nothing yet: as busy as an RNR
        return self._after_response_frame(frame, busy=busy or self._pull, now=now)

    def _after_response_frame(self, frame: HdlcFrame, *, busy: bool, now: float) -> list[LinkEvent]:
        if not (self._awaiting or self._retransmit):
            return []  # not an answer to a poll of ours: nothing to end
        if not frame.poll_final:
            if self._awaiting:
                self._deadline = now + self._settings.response_timeout_s
            return []
        progress = self._progress
        self._end_exchange()
        self._window.go_back()  # what the meter did not acknowledge goes again, same N(S)
        if progress:
            self._attempts = 0
        else:
            self._attempts += 1
            if self._attempts > self._settings.max_retries:
                return self._down("meter busy" if busy else "no progress")
        if busy:
            self._deadline = now + self._settings.response_timeout_s
        return []

    def _end_exchange(self) -> None:
        self._awaiting = False
        self._retransmit = False
        self._deadline = None
        self._progress = False

    def expire(self, *, now: float) -> list[LinkEvent]:
        """Handle the deadline: retransmit, end a back-off, or give up after max_retries."""
        if self._deadline is None or now < self._deadline:
            return []
        self._deadline = None
        if not self._awaiting:
            self._poll = True
            return []
        self._awaiting = False
        self._attempts += 1
        if self._attempts > self._settings.max_retries:
            return self._down("no response")
        self.retries += 1
        self._retransmit = True
        return []

    def _down(self, reason: str) -> list[LinkEvent]:
        self._reset()
        self._state = LinkState.DISCONNECTED
        return [LinkDown(reason)]


def _strip_llc(info: bytes) -> bytes:
    return info[len(LLC_RESPONSE) :] if info.startswith(LLC_RESPONSE) else info
