"""The secondary station (IEC 62056-46): every data-link connection of one server address, sans-IO.

A secondary speaks only when polled. `receive` takes one frame and returns what the application
must know; `respond` then returns the frames that answer the poll, so an APDU the application
queued with `send_apdu` in between rides in the answer. An I-frame whose N(S) was already taken
(the client retransmitted because our answer was lost) is not delivered again: the answer re-sends
what the client has not acknowledged, which is how an ACTION is kept from running twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.codec.errors import LocalProtocolError
from gateway.codec.hdlc.address import HdlcAddress
from gateway.codec.hdlc.control import FrameKind, i_control, s_control, u_control
from gateway.codec.hdlc.errors import HdlcError
from gateway.codec.hdlc.events import (
    ApduFromClient,
    ClientConnected,
    ClientDisconnected,
    ServerEvent,
    ServerSettings,
)
from gateway.codec.hdlc.frame import HdlcFrame, encode_frame
from gateway.codec.hdlc.params import HdlcParameters, decode_parameters, encode_parameters, negotiate
from gateway.codec.hdlc.window import LLC_REQUEST, LLC_RESPONSE, MAX_APDU_LENGTH, Reassembly, SendWindow, segment

__all__ = ["ApduFromClient", "ClientConnected", "ClientDisconnected", "HdlcServerLink", "ServerEvent", "ServerSettings"]


@dataclass(slots=True)
class _Connection:
    parameters: HdlcParameters  # the server's side: tx = what the server sends
    last_activity: float
    window: SendWindow = field(default_factory=SendWindow)
    received: Reassembly = field(default_factory=lambda: Reassembly(llc=LLC_REQUEST))


class HdlcServerLink:
    """All data-link connections of one server address, one per client SAP."""

    def __init__(self, *, server_address: HdlcAddress, settings: ServerSettings) -> None:
        self._address = server_address
        self._settings = settings
        self._connections: dict[int, _Connection] = {}
        self._answers: list[tuple[int, bytes | None]] = []  # None: build from the connection at respond()

    @property
    def connected_clients(self) -> list[int]:
        """The client SAPs with an open connection."""
        return sorted(self._connections)

    def expire(self, *, now: float) -> list[ServerEvent]:
        """Close connections idle for longer than the inactivity timeout."""
        limit = self._settings.inactivity_timeout_s
        idle = [sap for sap, link in self._connections.items() if now - link.last_activity > limit]
        for client_sap in idle:
            del self._connections[client_sap]
        return [ClientDisconnected(client_sap) for client_sap in idle]

    def receive(self, frame: HdlcFrame, *, now: float) -> list[ServerEvent]:
        """Take one frame from the line; frames for another address are ignored."""
        events = self.expire(now=now)
        if frame.destination != self._address or frame.source.size != 1:
            return events
        client_sap = frame.source.upper
        poll = frame.poll_final
        try:
            kind = frame.kind
        except HdlcError:
            return events + self._reject(client_sap, poll=poll)
        if kind is FrameKind.SNRM:
            try:
                proposed = decode_parameters(frame.info)
            except HdlcError:
                return events + self._reject(client_sap, poll=poll)
            parameters = negotiate(proposed=proposed, supported=self._settings.supported)
            self._connections[client_sap] = _Connection(parameters, last_activity=now)
            self._answer(client_sap, FrameKind.UA, poll=poll, info=encode_parameters(parameters))
            return [*events, ClientConnected(client_sap)]
        connection = self._connections.get(client_sap)
        if kind is FrameKind.DISC:
            self._answer(client_sap, FrameKind.DM if connection is None else FrameKind.UA, poll=poll)
            if connection is None:
                return events
            del self._connections[client_sap]
            return [*events, ClientDisconnected(client_sap)]
        if kind not in (FrameKind.I, FrameKind.RR, FrameKind.RNR):
            return events  # UI, or a response a primary never sends
        if connection is None:
            self._answer(client_sap, FrameKind.DM, poll=poll)
            return events
        connection.last_activity = now
        if kind is FrameKind.I and frame.send_seq != connection.received.recv_seq:
            pass  # a retransmission already taken, or a gap: N(R) of our answer says where to resume
        elif connection.window.acknowledge(frame.recv_seq) is None:
            return events + self._reject(client_sap, poll=poll)
        elif kind is FrameKind.I:
            try:
                apdu = connection.received.accept(frame.info, more=frame.segmented)
            except HdlcError:
                return events + self._reject(client_sap, poll=poll)
            if apdu is not None:
                events.append(ApduFromClient(client_sap, apdu))
        if poll and kind is FrameKind.RNR:  # the client cannot take I-frames now
            control = s_control(FrameKind.RR, recv_seq=connection.received.recv_seq, poll=True)
            self._answers.append((client_sap, self._frame(client_sap, control)))
        elif poll:
            connection.window.go_back()  # resume at the client's N(R): lost frames go again
            self._answers.append((client_sap, None))
        return events

    def _reject(self, client_sap: int, *, poll: bool) -> list[ServerEvent]:
        """Answer FRMR and drop the connection (DM without one): the client must start with SNRM."""
        connection = self._connections.pop(client_sap, None)
        self._answer(client_sap, FrameKind.DM if connection is None else FrameKind.FRMR, poll=poll)
        return [] if connection is None else [ClientDisconnected(client_sap)]

    def _answer(self, client_sap: int, kind: FrameKind, *, poll: bool, info: bytes = b"") -> None:
        if poll:
            self._answers.append((client_sap, self._frame(client_sap, u_control(kind, poll=True), info)))

    def _frame(self, client_sap: int, control: int, info: bytes = b"", *, segmented: bool = False) -> bytes:
        destination = HdlcAddress.client(client_sap)
        return encode_frame(HdlcFrame(destination, self._address, control, info, segmented=segmented))

    def send_apdu(self, *, client_sap: int, apdu: bytes) -> None:
        """Queue an answer for `client_sap`; it goes out, segmented, when that client polls."""
        connection = self._connections.get(client_sap)
        if connection is None:
            raise LocalProtocolError(f"no connection with client {client_sap}")
        if not apdu or len(LLC_RESPONSE) + len(apdu) > MAX_APDU_LENGTH:
            raise LocalProtocolError(f"APDU of {len(apdu)} bytes")
        max_info = connection.parameters.max_info_tx
        connection.window.queue(segment(LLC_RESPONSE + apdu, max_info=max_info))

    def send_ui(self, *, client_sap: int, apdu: bytes) -> bytes:
        """Return an unsolicited UI frame (a push) for the caller to write."""
        connection = self._connections.get(client_sap)
        max_info = connection.parameters.max_info_tx if connection else HdlcParameters().max_info_tx
        info = LLC_RESPONSE + apdu
        if not apdu or len(info) > max_info:
            raise LocalProtocolError(f"UI information field of {len(info)} bytes, at most {max_info}")
        return self._frame(client_sap, u_control(FrameKind.UI, poll=True), info)

    def respond(self, *, now: float) -> list[bytes]:
        """Return the frames answering the polls received since the last call."""
        frames: list[bytes] = []
        for client_sap, ready in self._answers:
            connection = self._connections.get(client_sap)
            if ready is not None:
                frames.append(ready)
            elif connection is not None:
                connection.last_activity = now
                frames.extend(self._information_answer(client_sap, connection))
        self._answers.clear()
        return frames

    def _information_answer(self, client_sap: int, connection: _Connection) -> list[bytes]:
        taken = connection.window.take(window=connection.parameters.window_tx)
        if not taken:
            return [self._frame(client_sap, s_control(FrameKind.RR, recv_seq=connection.received.recv_seq, poll=True))]
        return [
            self._frame(
                client_sap,
                i_control(send_seq=send_seq, recv_seq=connection.received.recv_seq, poll=index == len(taken) - 1),
                item.info,
                segmented=item.more,
            )
            for index, (send_seq, item) in enumerate(taken)
        ]
