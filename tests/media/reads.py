"""Public-client reads through a mesh channel: plain APDUs from our codecs, answers awaited as events."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import cast

from gateway.codec import acse, xdlms
from gateway.codec.axdr import Data
from gateway.cosem.server import LogicalDevice
from gateway.media.channel import ApduReceived, Association, ChannelDown, ChannelEvent, DownReason, Push
from gateway.media.mesh import MeshEndpoint
from gateway.sim.meter import LOGICAL_DEVICE_NAME, PUBLIC_CLIENT, PUBLIC_CONFORMANCE, SimMeterSettings, build_meter
from gateway.sim.udp_meter import SimUdpMeter
from tests.cosem.client import TestClient

EVENT_WAIT_S = 10.0  # a guard against a hang only: every exchange ends in an answer or a timeout event


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def sim_udp_meter(serial_number: int) -> tuple[SimUdpMeter, SimMeterSettings]:
    settings = SimMeterSettings.demo(serial_number=serial_number)
    return SimUdpMeter(devices={1: build_meter(settings, clock=utc_now)}), settings


def public_aarq() -> bytes:
    return TestClient(device=cast(LogicalDevice, None), client_sap=PUBLIC_CLIENT).aarq(conformance=PUBLIC_CONFORMANCE)


def get_request(invoke_id: int, attribute_id: int) -> bytes:
    descriptor = xdlms.AttributeDescriptor(1, LOGICAL_DEVICE_NAME, attribute_id)
    return xdlms.encode_xdlms(xdlms.GetRequestNormal(0xC0 | invoke_id, descriptor))


def expected_value(settings: SimMeterSettings, attribute_id: int) -> Data:
    """Attribute 1 is the logical name, 2 the meter's own name: two requests, two different answers."""
    return Data.octet_string(LOGICAL_DEVICE_NAME if attribute_id == 1 else settings.logical_device_name)


@dataclass
class MeshReader:
    """One association over a mesh channel; reopens the channel after a timeout, as a relay session would."""

    endpoint: MeshEndpoint
    association: Association
    events: asyncio.Queue[ChannelEvent] = field(default_factory=asyncio.Queue)
    pushes: list[bytes] = field(default_factory=list)
    timeouts: int = 0
    sent: int = 0
    _pushed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._open()

    def _open(self) -> None:
        self.channel = self.endpoint.open(self.association, self._listen)

    def _listen(self, event: ChannelEvent) -> None:
        if isinstance(event, Push):
            self.pushes.append(event.apdu)
            self._pushed.set()
        else:
            self.events.put_nowait(event)

    async def exchange(self, apdu: bytes) -> bytes | None:
        """The answer, or None after a timeout (the channel is reopened for the next exchange)."""
        self.channel.send_apdu(apdu)
        self.sent += 1
        async with asyncio.timeout(EVENT_WAIT_S):
            event = await self.events.get()
        if isinstance(event, ApduReceived):
            return event.apdu
        assert isinstance(event, ChannelDown) and event.reason is DownReason.TIMEOUT, event
        self.timeouts += 1
        self._open()
        return None

    async def wait_for_pushes(self, count: int) -> list[bytes]:
        """Until `count` pushes arrived on the channel."""
        async with asyncio.timeout(EVENT_WAIT_S):
            while len(self.pushes) < count:
                self._pushed.clear()
                await self._pushed.wait()
        return self.pushes

    async def associate(self) -> None:
        while (answer := await self.exchange(public_aarq())) is None:
            pass
        assert acse.decode_aare(answer).result is acse.AssociationResult.ACCEPTED

    async def read_checked(self, settings: SimMeterSettings, *, count: int) -> int:
        """`count` GETs, alternating two attributes and invoke ids; every answer checked. Returns answers."""
        answered = 0
        for index in range(count):
            invoke_id, attribute_id = index % 16, 1 + index % 2
            answer = await self.exchange(get_request(invoke_id, attribute_id))
            if answer is None:
                continue
            response = xdlms.decode_xdlms(answer)
            assert response == xdlms.GetResponseNormal(0xC0 | invoke_id, expected_value(settings, attribute_id))
            answered += 1
        return answered
