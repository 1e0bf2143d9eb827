"""Unicast paths from a head-end to one meter, and a broadcaster for a simulated bus (tests and bench).

``HdlcBusChannel`` drives our HDLC client link straight against a ``SimulatedBus`` (no gateway,
no pty, no clock: every poll is answered within ``feed``). ``GatewayChannel`` speaks the
wrapper to a gateway, which relays to the meter behind ``meter_sap``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from gateway.codec import xdlms
from gateway.codec.hdlc import (
    ApduReceived,
    HdlcAddress,
    HdlcClientLink,
    HdlcFrameDecoder,
    LinkDown,
    LinkEvent,
    LinkSettings,
    LinkUp,
    encode_broadcast,
)
from gateway.codec.wrapper import ALL_STATION_WPORT, WrapperDecoder, WrapperPdu, encode
from gateway.sim.bus import SimMeter, SimulatedBus
from gateway.sim.pty import PtyPair, open_pty
from tests.cosem.client import Keys
from tests.firmware_hes import CampaignMeter, MeterClient
from tests.hes import TcpChannel

MANAGEMENT_CLIENT_SAP = 1


class HdlcBusChannel:
    """One data link from client SAP 1 to one meter on a simulated bus."""

    def __init__(self, bus: SimulatedBus, *, physical_address: int, logical_device: int = 1) -> None:
        self._bus = bus
        self._address = HdlcAddress.server(logical_device=logical_device, physical_address=physical_address)
        self._link: HdlcClientLink | None = None
        self._decoder = HdlcFrameDecoder()
        self.octets = 0  # both ways on the line: the airtime of this meter's unicast traffic

    def open(self) -> None:
        self._link = HdlcClientLink(client_sap=MANAGEMENT_CLIENT_SAP, server_address=self._address,
                                    settings=LinkSettings())
        self._link.connect()
        self._until(LinkUp)

    def request(self, apdu: bytes) -> bytes:
        assert self._link is not None
        self._link.send_apdu(apdu)
        received = self._until(ApduReceived)
        assert isinstance(received, ApduReceived)
        return received.apdu

    def close(self) -> None:
        if self._link is not None:
            self._link.disconnect()
            self._until(LinkDown)
            self._link = None

    def _until(self, kind: type[LinkUp] | type[ApduReceived] | type[LinkDown]) -> LinkEvent:
        link = self._link
        assert link is not None
        while link.wants_medium:
            events = []
            sent = link.transmit(now=0.0)
            answer = self._bus.feed(sent)
            self.octets += len(sent) + len(answer)
            for frame in self._decoder.feed(answer, now=0.0):
                events += link.receive(frame, now=0.0)
            if link.awaiting_response:
                raise ConnectionError(f"meter {self._address.lower} did not answer")
            for event in events:
                if isinstance(event, kind):
                    return event
                if isinstance(event, LinkDown):
                    raise ConnectionError(f"link down: {event.reason}")
        raise ConnectionError(f"link idle before {kind.__name__}")


class BusBroadcaster:
    """Writes each broadcast APDU onto a simulated bus as a UI frame to all stations; counts the octets."""

    def __init__(self, bus: SimulatedBus, *, client_sap: int = MANAGEMENT_CLIENT_SAP) -> None:
        self._bus = bus
        self._client_sap = client_sap
        self.frames = 0
        self.octets = 0

    def __call__(self, apdu: bytes) -> None:
        frame = encode_broadcast(client_sap=self._client_sap, apdu=apdu)
        self.frames += 1
        self.octets += len(frame)
        assert self._bus.feed(frame) == b""  # nobody answers a broadcast


class CorruptingBroadcaster(BusBroadcaster):
    """Flips one ciphertext bit of the chosen broadcasts after protection: the FCS is right, the GCM tag is not."""

    def __init__(self, bus: SimulatedBus, *, corrupt: set[int]) -> None:
        super().__init__(bus)
        self._corrupt = corrupt
        self._number = 0

    def __call__(self, apdu: bytes) -> None:
        if self._number in self._corrupt:
            apdu = apdu[:-20] + bytes([apdu[-20] ^ 0x01]) + apdu[-19:]
        self._number += 1
        super().__call__(apdu)


class GatewayChannel:
    """The wrapper relay of a gateway to the meter at ``meter_sap`` (blocking; pushes are dropped)."""

    def __init__(self, host: str, port: int, *, meter_sap: int) -> None:
        self._where = (host, port)
        self._meter_sap = meter_sap
        self._tcp: TcpChannel | None = None
        self._decoder = WrapperDecoder()

    def open(self) -> None:
        self._tcp = TcpChannel(*self._where)

    def request(self, apdu: bytes) -> bytes:
        assert self._tcp is not None
        self._tcp.send(encode(WrapperPdu(source=MANAGEMENT_CLIENT_SAP, destination=self._meter_sap, apdu=apdu)))
        while True:
            for pdu in self._decoder.feed(self._tcp.receive()):
                if pdu.source == self._meter_sap and pdu.destination == MANAGEMENT_CLIENT_SAP:
                    return pdu.apdu

    def close(self) -> None:
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None


class GatewayBroadcaster:
    """The HES side: each broadcast APDU to the all-station wPort, then the gateway's word that it has left."""

    def __init__(self, host: str, port: int) -> None:
        self.channel = TcpChannel(host, port)
        self.decoder = WrapperDecoder()
        self.notifications: list[xdlms.DataNotification] = []

    def __call__(self, apdu: bytes) -> None:
        self.channel.send(encode(WrapperPdu(source=MANAGEMENT_CLIENT_SAP, destination=ALL_STATION_WPORT,
                                            apdu=apdu)))
        pdus: list[WrapperPdu] = []
        while not pdus:
            pdus = self.decoder.feed(self.channel.receive())
        (answer,) = pdus
        assert (answer.source, answer.destination) == (ALL_STATION_WPORT, MANAGEMENT_CLIENT_SAP)
        notification = xdlms.decode_xdlms(answer.apdu)
        assert isinstance(notification, xdlms.DataNotification), answer.apdu.hex()
        self.notifications.append(notification)


def gateway_campaign(host: str, port: int, *, count: int, keys: Callable[[int], Keys]) -> list[CampaignMeter]:
    """``count`` meters at SAPs 17, 18, ... of a gateway, each with its own unicast keys (by index)."""
    return [CampaignMeter(f"sap-{17 + index}", MeterClient.over(GatewayChannel(host, port, meter_sap=17 + index),
                                                                keys(index)))
            for index in range(count)]


@contextlib.contextmanager
def meters_on_a_pty(meters: list[SimMeter], *, seed: int) -> Iterator[tuple[PtyPair, SimulatedBus]]:
    """Simulated meters serving a pty's master side (call from the event loop's thread); closed afterwards."""
    pty = open_pty()
    bus = SimulatedBus(meters=meters, seed=seed)
    bus.attach(pty.master_fd)
    try:
        yield pty, bus
    finally:
        bus.detach()
        pty.close()
