"""Daemon-side functions that see raw peer input, one fuzz target each: bytes in, invariant checked.

Theory of operation. Every target is a plain function ``one_input(data: bytes) -> None`` that
feeds ``data`` to a part of the running gateway the way a hostile peer could (a HES on the WAN,
a device on the meter line) and returns when the invariant holds; anything else (an unexpected
exception, an AssertionError) is a finding. The same function runs under hypothesis in the
normal suite (``test_targets.py``) and under atheris, coverage-guided, for as long as you like
(``python -m tests.fuzz TARGET --seconds N``, see README.md). Seeds live in ``corpus/TARGET/``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.codec import acse
from gateway.codec import gateway as gateway_pdu
from gateway.codec.apdu import PUSH_TAGS
from gateway.codec.hdlc import HdlcAddress, HdlcClientLink, HdlcFrame, LinkSettings, encode_frame
from gateway.codec.wrapper import WrapperDecoder, WrapperError, WrapperPdu
from gateway.config import LinkConfig, RelayConfig
from gateway.core.broadcast import BroadcastRelay
from gateway.core.gateway_protocol import GatewayProtocol, GatewayRefusal
from gateway.core.management import ManagementDevice
from gateway.core.rejections import aare_rejected
from gateway.core.router import MeterRoute, Router
from gateway.keys import GatewayKeys
from gateway.link.line import MeterLine
from gateway.link.medium import SerialMedium, push_apdu
from gateway.registry.database import open_database
from gateway.registry.store import MeterRegistry

# Tags a logical device or the relay may answer a HES with (Green Book 9.5).
DATA_NOTIFICATION_TAG = 0x0F  # the gateway's own word that a broadcast has left
ANSWER_TAGS = frozenset({0x61, 0x63, 0xC4, 0xC5, 0xC7, 0xCC, 0xCD, 0xCF, 0xD8, 0xDB})
MAX_LINE_BUFFER = 4096  # the HDLC decoder may hold at most about one largest frame between reads
METER = HdlcAddress.server(logical_device=1, physical_address=17)
KEYS = GatewayKeys(system_title=b"GWY00001", block_cipher_key=bytes(range(16)),
                   authentication_key=bytes(range(16, 32)))


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    one_input: Callable[[bytes], None]


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Targets that need a running loop (timers) get a fresh one per input: no state leaks between inputs."""
    asyncio.run(coroutine)


# -- aare_rejected: any AARQ bytes a HES sends must get a rejecting AARE -------------------------


def aare_for_any_aarq(data: bytes) -> None:
    transient = bool(data[:1]) and data[0] & 1 == 1
    answer = aare_rejected(aarq=data[1:], transient=transient)
    aare = acse.decode_aare(answer)
    expected = acse.AssociationResult.REJECTED_TRANSIENT if transient else acse.AssociationResult.REJECTED_PERMANENT
    assert aare.result is expected, aare


# -- the meter line: bytes from the medium into MeterLine, a relayed link and the push intake -----


class _MemoryTransport(asyncio.Transport):
    """The serial port's place: keeps what the line writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


@dataclass
class _LineRig:
    line: MeterLine
    transport: _MemoryTransport
    link: HdlcClientLink
    events: list[object] = field(default_factory=list)
    pushes: list[bytes] = field(default_factory=list)


async def _line_rig() -> _LineRig:
    transport = _MemoryTransport()

    async def opener(factory: Callable[[], asyncio.Protocol]) -> asyncio.Transport:
        factory().connection_made(transport)
        return transport

    config = LinkConfig(name="fuzz", device="/dev/null", response_timeout_s=30.0)
    line = MeterLine(config=config, opener=opener)
    await line.open()
    link = HdlcClientLink(client_sap=16, server_address=METER, settings=LinkSettings(response_timeout_s=30.0))
    rig = _LineRig(line=line, transport=transport, link=link)

    def unsolicited(frame: HdlcFrame) -> None:
        apdu = push_apdu(frame)
        if apdu is not None:
            rig.pushes.append(apdu)

    line.on_unsolicited(unsolicited)
    line.attach(link, rig.events.append, client_sap=16, server_address=METER)
    link.connect()
    line.wake()  # SNRM goes out: the link holds the medium and waits for UA
    return rig


async def _meter_line(data: bytes) -> None:
    rig = await _line_rig()
    protocol = rig.line.current
    assert protocol is not None
    chunk = max(1, data[0] if data else 1)
    for start in range(1, len(data), chunk):
        protocol.data_received(data[start:start + chunk])  # nothing a meter sends may raise out of here
    assert rig.line.decoder.buffered <= MAX_LINE_BUFFER
    for push in rig.pushes:
        assert push[0] in PUSH_TAGS
    rig.line.close()


def meter_line(data: bytes) -> None:
    _run(_meter_line(data))


def ua_from_meter() -> bytes:
    """The UA a meter answers the rig's SNRM with (no parameters: the defaults)."""
    return encode_frame(HdlcFrame(destination=HdlcAddress.client(16), source=METER, control=0x73, info=b""))


def push_from(physical_address: int, apdu: bytes) -> bytes:
    """A UI frame from a meter carrying a push APDU, LLC header included."""
    source = HdlcAddress.server(logical_device=1, physical_address=physical_address)
    return encode_frame(HdlcFrame(destination=HdlcAddress.client(16), source=source,
                                  control=0x13, info=b"\xe6\xe7\x00" + apdu))


# -- SAP 1: the management logical device ------------------------------------------------------


@functools.cache
def _registry() -> MeterRegistry:
    """One in-memory registry per fuzzing process (a migration per input would dwarf the target)."""
    registry = MeterRegistry(open_database(Path(":memory:")))
    registry.register(link="bus0", physical_address=17, logical_device=1, registered_by="config")
    return registry


def _management() -> ManagementDevice:
    registry = _registry()
    return ManagementDevice(name=b"GWY00001", registry=registry, keys=KEYS, management_sap=1, counter=None)


def split_apdus(data: bytes) -> list[tuple[int, bytes]]:
    """Input as (client SAP, length, APDU) records: one byte, one byte, then that many bytes."""
    records = []
    offset = 0
    while offset + 2 <= len(data):
        client_sap, size = data[offset], data[offset + 1]
        records.append((client_sap, data[offset + 2:offset + 2 + size]))
        offset += 2 + size
    return records


def join_apdus(records: list[tuple[int, bytes]]) -> bytes:
    return b"".join(bytes([sap, len(apdu)]) + apdu for sap, apdu in records)


def management(data: bytes) -> None:
    device = _management()
    for client_sap, apdu in split_apdus(data):
        answer = device.handle(client_sap=client_sap, apdu=apdu)
        assert answer is None or (answer and answer[0] in ANSWER_TAGS), answer


# -- the router: wrapper PDUs from one HES connection ------------------------------------------


@dataclass
class _Peer:
    peer: str = "203.0.113.9:40000"
    peer_address: str = "203.0.113.9"
    sent: list[WrapperPdu] = field(default_factory=list)

    def send(self, pdu: WrapperPdu) -> None:
        self.sent.append(pdu)


async def _router(data: bytes) -> None:
    transport = _MemoryTransport()

    async def opener(factory: Callable[[], asyncio.Protocol]) -> asyncio.Transport:
        factory().connection_made(transport)
        return transport

    config = LinkConfig(name="bus0", device="/dev/null", response_timeout_s=30.0)
    line = MeterLine(config=config, opener=opener)
    await line.open()
    routes = {17: MeterRoute(sap=17, network="bus0", address=17)}
    router = Router(lookup=routes.get, media={"bus0": SerialMedium(line)}, relay=RelayConfig(exchange_timeout_s=30.0),
                    scheduler=asyncio.get_running_loop(), management=_management())
    hes = _Peer()
    decoder = WrapperDecoder()
    try:
        pdus = decoder.feed(data)
    except WrapperError:
        pdus = []  # the connection would be closed: a clean end
    for pdu in pdus:
        before = len(hes.sent)
        router.pdu_from_hes(hes, pdu)
        if pdu.destination not in (1, 17):  # nothing to wait for: the answer is due at once
            assert len(hes.sent) == before + 1, pdu
            assert hes.sent[-1].apdu[0] in ANSWER_TAGS
    for answer in hes.sent:
        assert answer.apdu and answer.apdu[0] in ANSWER_TAGS, answer
    router.hes_disconnected(hes)
    line.close()


def router(data: bytes) -> None:
    _run(_router(data))


# -- the gateway protocol (E6/E7) and the broadcast path in front of the router -----------------------


def _answer_or_notification(apdu: bytes) -> bool:
    """A DLMS answer, the gateway's broadcast notification, or either inside a gateway-response."""
    if apdu[:1] == bytes((gateway_pdu.GATEWAY_RESPONSE,)):
        return _answer_or_notification(gateway_pdu.decode(apdu).apdu)
    return bool(apdu) and (apdu[0] in ANSWER_TAGS or apdu[0] == DATA_NOTIFICATION_TAG)


async def _gateway_protocol(data: bytes) -> None:
    transport = _MemoryTransport()

    async def opener(factory: Callable[[], asyncio.Protocol]) -> asyncio.Transport:
        factory().connection_made(transport)
        return transport

    config = LinkConfig(name="bus0", device="/dev/null", baudrate=10_000_000, response_timeout_s=30.0)
    line = MeterLine(config=config, opener=opener)
    await line.open()
    routes = {17: MeterRoute(sap=17, network="bus0", address=17)}
    router = Router(lookup=routes.get, media={"bus0": SerialMedium(line)}, relay=RelayConfig(exchange_timeout_s=30.0),
                    scheduler=asyncio.get_running_loop(), management=_management())

    def lookup(network_id: int, address: bytes, logical_device: int) -> int | GatewayRefusal:
        if network_id != 1:
            return GatewayRefusal.UNKNOWN_NETWORK
        return 17 if (address, logical_device) == (b"\x11", 1) else GatewayRefusal.UNKNOWN_METER

    layer = GatewayProtocol(router=router, lookup=lookup, broadcasts=BroadcastRelay(networks={1: line}))
    hes = _Peer()
    try:
        pdus = WrapperDecoder().feed(data)
    except WrapperError:
        pdus = []
    for pdu in pdus:
        layer.pdu_from_hes(hes, pdu)
    await asyncio.sleep(0)  # broadcasts that left answer from a timer: let them
    for answer in hes.sent:
        assert _answer_or_notification(answer.apdu), answer
    layer.hes_disconnected(hes)
    line.close()


def gateway_protocol(data: bytes) -> None:
    _run(_gateway_protocol(data))


TARGETS = {target.name: target for target in (
    Target("aare_rejected", aare_for_any_aarq),
    Target("meter_line", meter_line),
    Target("management", management),
    Target("router", router),
    Target("gateway_protocol", gateway_protocol),
)}
