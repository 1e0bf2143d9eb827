"""Meter pushes reach the HES: untouched, with the meter's SAP, in order, even across an outage."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from gurux_dlms import GXByteBuffer, GXReplyData
from gurux_dlms.enums import InterfaceType, Security
from gurux_dlms.secure import GXDLMSSecureClient

from gateway.codec import acse, axdr, security, xdlms
from gateway.codec.obis import obis
from gateway.codec.wrapper import WrapperDecoder, WrapperPdu
from gateway.config import GatewayConfig, PushConfig
from gateway.daemon import Gateway
from gateway.keys import create_keys
from gateway.sim.meter import system_title_of
from tests.integration.conftest import (
    TEST_AUTHENTICATION_KEY,
    TEST_BLOCK_CIPHER_KEY,
    SimLine,
    gateway_config,
)
from tests.integration.management_hes import MANAGEMENT_CLIENT_SAP, ManagementHes
from tests.integration.rawhes import GET_LDN, PUBLIC_AARQ, RawHes
from tests.wan.support import log_events, until

PUSH_CLIENT_SAP = 0x66  # DLMS UA 1000-2: a common pre-established push client


def data_notification(n: int) -> bytes:
    body = axdr.Data.structure(axdr.Data.double_long_unsigned(n), axdr.Data.octet_string(b"alarm"))
    return xdlms.encode_xdlms(xdlms.DataNotification(long_invoke_id=0x40000000 | n, date_time=None, body=body))


def ciphered_event_notification(*, meter_serial: int, counter: int) -> bytes:
    """glo-event-notification-request: power failure (event 1) on the standard event log filter."""
    plain = (b"\xc2\x00" + (1).to_bytes(2, "big") + obis("0.0.99.98.0.255") + b"\x02"
             + axdr.encode(axdr.Data.long_unsigned(1)))
    protected = security.protect(security_control=0x30, system_title=system_title_of(meter_serial),
                                 invocation_counter=counter, block_cipher_key=TEST_BLOCK_CIPHER_KEY,
                                 authentication_key=TEST_AUTHENTICATION_KEY, plaintext=plain)
    return security.encode_ciphered_apdu(tag=0xCA, protected=protected)


class HesListener:
    """A head-end's push listener: a TCP server collecting wrapper PDUs."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[WrapperPdu] = asyncio.Queue()
        self.server: asyncio.Server | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        decoder = WrapperDecoder()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                for pdu in decoder.feed(data):
                    self.received.put_nowait(pdu)
        writer.close()

    async def take(self, count: int, timeout: float = 20.0) -> list[WrapperPdu]:
        return [await asyncio.wait_for(self.received.get(), timeout) for _ in range(count)]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        await self.server.wait_closed()


@pytest.fixture
async def listener() -> AsyncIterator[HesListener]:
    hes = HesListener()
    await hes.start()
    yield hes
    if hes.server is not None and hes.server.is_serving():
        await hes.stop()


def push_config(device: str, directory: Path, port: int, **kwargs: Any) -> GatewayConfig:
    config = gateway_config(device, directory=directory)
    return replace(config, push=(PushConfig(name="hes", host="127.0.0.1", port=port, deliver_to_subscribed=False,
                                            reconnect_min_s=0.05, reconnect_max_s=0.2),), **kwargs)


def gurux_parse(pdu: WrapperPdu, *, ciphered: bool) -> GXReplyData:
    """The outside head-end's reading of a pushed wrapper PDU."""
    client = GXDLMSSecureClient(True, pdu.destination, pdu.source, interfaceType=InterfaceType.WRAPPER)
    if ciphered:
        client.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
        client.ciphering.blockCipherKey = bytearray(TEST_BLOCK_CIPHER_KEY)
        client.ciphering.authenticationKey = bytearray(TEST_AUTHENTICATION_KEY)
        client.serverSystemTitle = bytearray(system_title_of(1))
        client.settings.sourceSystemTitle = bytearray(system_title_of(1))  # as an AARE would have set it
    reply, notify = GXReplyData(), GXReplyData()
    frame = bytes.fromhex("0001") + pdu.source.to_bytes(2, "big") + pdu.destination.to_bytes(2, "big") \
        + len(pdu.apdu).to_bytes(2, "big") + pdu.apdu
    with contextlib.redirect_stdout(io.StringIO()):
        client.getData(GXByteBuffer(frame), reply, notify)
    return notify


async def test_pushes_arrive_untouched_with_the_meter_sap_and_gurux_reads_them(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path, listener: HesListener
) -> None:
    gateway = gateway_factory(push_config(sim_line.pty.slave_path, tmp_path, listener.port))
    await gateway.start()
    event = ciphered_event_notification(meter_serial=1, counter=7)
    notification = data_notification(42)
    sim_line.bus.push(physical_address=17, client_sap=PUSH_CLIENT_SAP, apdu=event)
    sim_line.bus.push(physical_address=17, client_sap=PUSH_CLIENT_SAP, apdu=notification)
    first, second = await listener.take(2)
    assert (first.source, first.destination, first.apdu) == (17, PUSH_CLIENT_SAP, event)  # byte-identical
    assert (second.source, second.destination, second.apdu) == (17, PUSH_CLIENT_SAP, notification)
    parsed = gurux_parse(second, ciphered=False)
    assert [int(v) if not isinstance(v, bytes | bytearray) else bytes(v) for v in parsed.value] == [42, b"alarm"]
    parsed_event = gurux_parse(first, ciphered=True)
    assert parsed_event.command == 0xC2  # deciphered by the outside head-end into an event-notification
    expected_body = (1).to_bytes(2, "big") + obis("0.0.99.98.0.255") + b"\x02" + axdr.encode(axdr.Data.long_unsigned(1))
    assert bytes(parsed_event.data.array()) == b"\x00" + expected_body  # time absent, then the body
    assert gateway.pushes.depth == 0


async def test_fifty_pushes_survive_a_hes_outage_and_a_daemon_restart_in_order(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path, listener: HesListener
) -> None:
    port = listener.port
    await listener.stop()  # the HES is down
    config = push_config(sim_line.pty.slave_path, tmp_path, port)
    first = gateway_factory(config)
    await first.start()
    for n in range(50):
        sim_line.bus.push(physical_address=18 + n % 2, client_sap=PUSH_CLIENT_SAP, apdu=data_notification(n))
    for _ in range(3000):  # generous: the queue commits durably, and CI disks can be slow
        if first.pushes.depth == 50:
            break
        await asyncio.sleep(0.01)
    assert first.pushes.depth == 50
    await first.stop()

    second = gateway_factory(config)
    await second.start()
    assert second.pushes.depth == 50  # nothing lost across the restart
    await listener.start(port)  # the HES comes back
    received = await listener.take(50)
    assert [pdu.apdu for pdu in received] == [data_notification(n) for n in range(50)]
    assert [pdu.source for pdu in received] == [18 + n % 2 for n in range(50)]
    for _ in range(3000):
        if second.pushes.depth == 0:
            break
        await asyncio.sleep(0.01)
    assert second.pushes.depth == 0


# A stranger's AARQ to SAP 1 as the management client: no authentication, so rejected-permanent (issue 9, D1).
STRANGER_AARQ = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400007E1FFFFF")

async def test_the_authenticated_management_client_takes_the_pushes(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path
) -> None:
    keys = create_keys(tmp_path / "keys.toml")
    config = gateway_config(sim_line.pty.slave_path, directory=tmp_path)
    gateway = gateway_factory(replace(config, push=(PushConfig(name="hes"),)))
    await gateway.start()
    host, port = gateway.wan.addresses[0]
    manager = await asyncio.to_thread(ManagementHes.connect, host, port, keys)
    await asyncio.to_thread(manager.associate_with_hls)
    sim_line.bus.push(physical_address=19, client_sap=PUSH_CLIENT_SAP, apdu=data_notification(1))
    (pushed,) = await asyncio.to_thread(manager.receive_pushes, 1)
    assert (pushed.source, pushed.destination, pushed.apdu) == (19, PUSH_CLIENT_SAP, data_notification(1))
    await until(lambda: gateway.pushes.depth == 0)  # taken off the queue once written whole to the kernel
    manager.close()


async def test_a_rejected_stranger_and_a_public_reader_of_sap_1_never_receive_a_push(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path, listener: HesListener
) -> None:
    create_keys(tmp_path / "keys.toml")
    config = push_config(sim_line.pty.slave_path, tmp_path, listener.port)
    gateway = gateway_factory(replace(config, push=(replace(config.push[0], deliver_to_subscribed=True),)))
    await gateway.start()
    host, port = gateway.wan.addresses[0]
    stranger = await RawHes.connect(host, port)
    refused = await stranger.request(client_sap=MANAGEMENT_CLIENT_SAP, meter_sap=1, apdu=STRANGER_AARQ)
    assert acse.decode_aare(refused.apdu).result is acse.AssociationResult.REJECTED_PERMANENT
    reader = await RawHes.connect(host, port)
    accepted = await reader.request(client_sap=16, meter_sap=1, apdu=PUBLIC_AARQ)
    assert acse.decode_aare(accepted.apdu).result is acse.AssociationResult.ACCEPTED

    for n in range(20):
        sim_line.bus.push(physical_address=17, client_sap=PUSH_CLIENT_SAP, apdu=data_notification(n))
    received = await listener.take(20, timeout=10.0)  # the configured destination gets every one
    assert [pdu.apdu for pdu in received] == [data_notification(n) for n in range(20)]
    # neither peer got a push in between: the next thing each reads is the answer to its own request
    answer = await reader.request(client_sap=16, meter_sap=1, apdu=GET_LDN)
    assert (answer.source, answer.apdu[:1]) == (1, b"\xc4")
    answer = await stranger.request(client_sap=MANAGEMENT_CLIENT_SAP, meter_sap=1, apdu=GET_LDN)
    assert (answer.source, answer.apdu[:1]) == (1, b"\xd8")  # no association: an exception-response
    await stranger.close()
    await reader.close()


async def test_a_push_during_the_reconnect_back_off_waits_for_it_and_a_subscriber_is_served_at_once(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path,
    listener: HesListener, captured_logs: io.StringIO
) -> None:
    keys = create_keys(tmp_path / "keys.toml")
    port = listener.port
    await listener.stop()  # the destination is down and stays down
    config = push_config(sim_line.pty.slave_path, tmp_path, port)
    backoff = replace(config.push[0], deliver_to_subscribed=True, reconnect_min_s=600.0, reconnect_max_s=600.0)
    gateway = gateway_factory(replace(config, push=(backoff,)))
    await gateway.start()
    sim_line.bus.push(physical_address=17, client_sap=PUSH_CLIENT_SAP, apdu=data_notification(0))
    await until(lambda: len(log_events(captured_logs, "push.connect_failed")) == 1)
    for n in range(1, 21):  # each one wakes the forwarder during its back-off
        sim_line.bus.push(physical_address=17, client_sap=PUSH_CLIENT_SAP, apdu=data_notification(n))
    await until(lambda: gateway.pushes.depth == 21)

    host, wan_port = gateway.wan.addresses[0]
    manager = await asyncio.to_thread(ManagementHes.connect, host, wan_port, keys)
    await asyncio.to_thread(manager.associate_with_hls)
    received = await asyncio.to_thread(manager.receive_pushes, 21)  # not held back by the back-off
    assert [pdu.apdu for pdu in received] == [data_notification(n) for n in range(21)]
    manager.close()
    assert len(log_events(captured_logs, "push.connect_failed")) == 1  # one attempt: the back-off was honoured


async def test_a_push_from_an_unknown_meter_registers_it_and_is_delivered(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path, listener: HesListener
) -> None:
    config = push_config(sim_line.pty.slave_path, tmp_path, listener.port)
    gateway = gateway_factory(replace(config, meters=config.meters[:2]))  # addresses 19 and 20 unknown
    await gateway.start()
    assert gateway.registry.by_place(link="bus0", physical_address=20) is None
    sim_line.bus.push(physical_address=20, client_sap=PUSH_CLIENT_SAP, apdu=data_notification(5))
    (pdu,) = await listener.take(1)
    meter = gateway.registry.by_place(link="bus0", physical_address=20)
    assert meter is not None and meter.registered_by == "push"
    assert pdu.source == meter.sap
    assert pdu.apdu == data_notification(5)


async def test_a_meter_pushing_as_fast_as_the_line_carries_gets_every_push_queued_and_a_bounded_log(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path, listener: HesListener,
    captured_logs: io.StringIO,
) -> None:
    await listener.stop()  # the pushes stay queued: what is counted is the intake
    gw = gateway_factory(push_config(sim_line.pty.slave_path, tmp_path, listener.port))
    await gw.start()
    for n in range(300):
        sim_line.bus.push(physical_address=17, client_sap=PUSH_CLIENT_SAP, apdu=data_notification(n))
    await until(lambda: gw.pushes.depth == 300, timeout=30.0)
    queued = log_events(captured_logs, "push.queued")
    assert 1 <= len(queued) <= 3  # one line per meter per second, not one per push (issue 9, D7)
    assert all(line["sap"] == 17 for line in queued)
