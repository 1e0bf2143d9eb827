"""A client link and a server link joined by a lossy, instantaneous half-duplex line, with a fake clock."""

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.codec.hdlc import (
    ApduFromClient,
    FrameKind,
    HdlcAddress,
    HdlcClientLink,
    HdlcFrame,
    HdlcFrameDecoder,
    HdlcParameters,
    HdlcServerLink,
    LinkEvent,
    LinkSettings,
    ServerEvent,
    ServerSettings,
    encode_frame,
)

METER = HdlcAddress.server(logical_device=1, physical_address=17)
CLIENT_SAP = 16
STEP_S = 0.01  # time one exchange takes on the line


def reverse(apdu: bytes) -> bytes:
    """The test meter's application: answer with the request reversed."""
    return apdu[::-1]


@dataclass
class Loop:
    """Drives the client as the line driver would and lets the server answer every poll."""

    proposed: HdlcParameters = field(default_factory=HdlcParameters)
    supported: HdlcParameters = field(default_factory=HdlcParameters)
    max_retries: int = 3
    answer: Callable[[bytes], bytes | None] = reverse
    drop_to_server: set[int] = field(default_factory=set)  # indexes of frames lost on the way
    drop_to_client: set[int] = field(default_factory=set)
    now: float = 0.0
    to_server: list[HdlcFrame] = field(default_factory=list)  # every frame put on the line, lost or not
    to_client: list[HdlcFrame] = field(default_factory=list)
    transmissions: list[bytes] = field(default_factory=list)
    client_events: list[LinkEvent] = field(default_factory=list)
    server_events: list[ServerEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        settings = LinkSettings(parameters=self.proposed, response_timeout_s=1.0, max_retries=self.max_retries)
        self.client = HdlcClientLink(client_sap=CLIENT_SAP, server_address=METER, settings=settings)
        self.server = HdlcServerLink(server_address=METER, settings=ServerSettings(supported=self.supported))
        self._client_line = HdlcFrameDecoder()
        self._server_line = HdlcFrameDecoder()

    def _carry(self, data: bytes, *, log: list[HdlcFrame], drop: set[int], line: HdlcFrameDecoder) -> list[HdlcFrame]:
        """Split `data` into frames, lose the ones to drop, and let the far end's decoder read the rest."""
        survivors = b""
        for frame in HdlcFrameDecoder().feed(data, now=self.now):
            if len(log) not in drop:
                survivors += encode_frame(frame)
            log.append(frame)
        return line.feed(survivors, now=self.now)

    def step(self) -> bool:
        """Grant the medium once, or let the client's timer expire; False when there is nothing to do."""
        if self.client.wants_medium:
            self.now += STEP_S
            data = self.client.transmit(now=self.now)
            self.transmissions.append(data)
            for frame in self._carry(data, log=self.to_server, drop=self.drop_to_server, line=self._server_line):
                for event in self.server.receive(frame, now=self.now):
                    self.server_events.append(event)
                    if isinstance(event, ApduFromClient) and (reply := self.answer(event.apdu)) is not None:
                        self.server.send_apdu(client_sap=event.client_sap, apdu=reply)
                for answer in self.server.respond(now=self.now):
                    for reply_frame in self._carry(
                        answer, log=self.to_client, drop=self.drop_to_client, line=self._client_line
                    ):
                        self.client_events += self.client.receive(reply_frame, now=self.now)
            return True
        if self.client.deadline is not None:
            self.now = max(self.now, self.client.deadline)
            self.client_events += self.client.expire(now=self.now)
            return True
        return False

    def run(self, *, limit: int = 20_000) -> None:
        """Step until idle."""
        for _ in range(limit):
            if not self.step():
                return
        raise AssertionError("the loop did not settle")

    def sent(self, kind: FrameKind, *, to_server: bool) -> list[HdlcFrame]:
        """Frames of one kind that went on the line in one direction."""
        return [frame for frame in (self.to_server if to_server else self.to_client) if frame.kind is kind]
