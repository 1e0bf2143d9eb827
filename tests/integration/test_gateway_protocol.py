"""The DLMS gateway protocol (E6/E7) beside SAP addressing, against the gurux client and raw bytes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from gurux_dlms import GXByteBuffer, GXDLMSGateway, GXReplyData
from gurux_dlms.enums import InterfaceType
from gurux_dlms.objects import GXDLMSClock, GXDLMSData, GXDLMSRegister
from gurux_dlms.secure import GXDLMSSecureClient

from gateway.codec import acse, axdr
from gateway.codec import apdu as apdus
from gateway.codec import gateway as gw_pdu
from gateway.codec.acse import Mechanism
from gateway.codec.obis import obis
from gateway.codec.wrapper import WrapperDecoder, WrapperPdu, encode
from gateway.config import GatewayConfig, PushConfig, RelayConfig
from gateway.daemon import Gateway
from tests.cosem.client import Keys, TestClient
from tests.hes import GuruxHes, HesCredentials, TcpChannel
from tests.integration.conftest import (
    TEST_AUTHENTICATION_KEY,
    TEST_BLOCK_CIPHER_KEY,
    SimLine,
    gateway_config,
)
from tests.integration.rawhes import GET_LDN, PUBLIC_AARQ, RawHes
from tests.integration.test_push import PUSH_CLIENT_SAP, HesListener, data_notification, listener  # noqa: F401

NETWORK = 1  # bus0, the first [[links]]: its network id by default


def e6(address: int | bytes, apdu: bytes, *, network: int = NETWORK) -> bytes:
    physical = address if isinstance(address, bytes) else gw_pdu.hdlc_address_bytes(address)
    return gw_pdu.encode(gw_pdu.GatewayPdu(network_id=network, physical_address=physical, apdu=apdu))


def public_read(hes: GuruxHes) -> dict[str, object]:
    """What the public client may read: name, clock, energy with its scaler and unit."""
    hes.associate()
    out: dict[str, object] = {"name": bytes(hes.read(GXDLMSData("0.0.42.0.0.255"), 2))}
    out["clock"] = hes.read(GXDLMSClock("0.0.1.0.0.255"), 2).value.astimezone(dt.UTC)
    register = GXDLMSRegister("1.0.1.8.0.255")
    hes.read(register, 3)
    out["scaler_unit"] = (register.scaler, int(register.unit))
    out["energy"] = hes.read(register, 2)
    hes.release()
    hes.close()
    return out


async def test_gurux_by_gateway_request_reads_exactly_what_it_reads_by_sap(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    # gurux-dlms 1.0.203 puts its gateway prefix INSIDE the ciphered APDU (it assumes a gateway that
    # deciphers), which no key-less gateway can relay: its gateway mode is checked here without
    # ciphering; HLS-GMAC and AES-GCM through gateway-requests are checked with our own client below.
    gateway = gateway_factory(gateway_config(sim_line.pty.slave_path))
    await gateway.start()
    host, port = gateway.wan.addresses[0]

    def read(**addressing: object) -> dict[str, object]:
        return public_read(GuruxHes(TcpChannel(host, port), credentials=HesCredentials(), max_pdu=256, **addressing))

    by_sap = await asyncio.to_thread(read, server_sap=18)
    # Green Book gateway: wPort 1 (the gateway's own logical device), network 1, the meter's HDLC address
    by_gateway = await asyncio.to_thread(read, server_sap=1, gateway=(NETWORK, b"\x12"))
    assert by_gateway == by_sap
    assert by_sap["name"] == sim_line.meters[1].device.name  # type: ignore[attr-defined]
    assert gateway.gateway_protocol.requests >= 5 and gateway.gateway_protocol.refusals == 0


@dataclass
class WireClient(TestClient):
    """Our codec-built client on a real TCP connection, by SAP or by gateway-request (E6/E7)."""

    channel: TcpChannel | None = None
    meter_sap: int = 17
    gateway: tuple[int, bytes] | None = None
    decoder: WrapperDecoder = field(default_factory=WrapperDecoder)
    answered_from: set[int] = field(default_factory=set)

    def send(self, apdu: bytes) -> bytes:
        assert self.channel is not None
        destination = self.meter_sap
        if self.gateway is not None:
            apdu = e6(self.gateway[1], apdu, network=self.gateway[0])
            destination = gw_pdu.GATEWAY_WPORT
        self.channel.send(encode(WrapperPdu(source=self.client_sap, destination=destination, apdu=apdu)))
        pdus: list[WrapperPdu] = []
        while not pdus:
            pdus = self.decoder.feed(self.channel.receive())
        (answer,) = pdus
        self.answered_from.add(answer.source)
        if self.gateway is None:
            return answer.apdu
        prefix = gw_pdu.decode(answer.apdu)
        assert (prefix.response, prefix.network_id, prefix.physical_address) == (True, *self.gateway)
        return prefix.apdu


def ciphered_read(host: str, port: int, *, counter: int, **addressing: object) -> tuple[list[object], set[int]]:
    """HLS-GMAC (pass 1 to 4) and AES-GCM ciphered GETs: the gateway holds no key and relays every byte."""
    keys = Keys(block_cipher_key=TEST_BLOCK_CIPHER_KEY, authentication_key=TEST_AUTHENTICATION_KEY,
                system_title=b"UTILHES1")
    client = WireClient(device=None, client_sap=1, keys=keys, channel=TcpChannel(host, port),  # type: ignore[arg-type]
                        invocation_counter=counter, **addressing)  # the meter refuses a counter it has seen
    aare = client.associate(mechanism=Mechanism.HLS_GMAC)
    assert aare.result is acse.AssociationResult.ACCEPTED
    client.hls(aare)
    disconnect_control = obis("0.0.96.3.10.255")
    values: list[object] = [client.get(1, obis("0.0.42.0.0.255"), 2), client.get(8, obis("0.0.1.0.0.255"), 2),
                            client.get(3, obis("1.0.1.8.0.255"), 2), client.get(3, obis("1.0.1.8.0.255"), 3)]
    for method in (1, 2):  # remote_disconnect, then remote_reconnect: the meter is controlled, not only read
        values.append(client.action(70, disconnect_control, method, axdr.Data.integer(0)).result)
        values.append(client.get(70, disconnect_control, 2))
    client.release()
    assert client.channel is not None
    client.channel.close()
    return values, client.answered_from


async def test_hls_gmac_and_ciphering_by_gateway_request_read_what_they_read_by_sap(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    gateway = gateway_factory(gateway_config(sim_line.pty.slave_path))
    await gateway.start()
    host, port = gateway.wan.addresses[0]
    by_sap, sap_sources = await asyncio.to_thread(ciphered_read, host, port, counter=0, meter_sap=19)
    by_gateway, gateway_sources = await asyncio.to_thread(ciphered_read, host, port, counter=1000,
                                                          gateway=(NETWORK, b"\x13"))
    assert by_gateway == by_sap
    assert by_sap[0] == axdr.Data.octet_string(sim_line.meters[2].device.name)  # type: ignore[attr-defined]
    assert by_sap[5] == axdr.Data.boolean(False) and by_sap[7] == axdr.Data.boolean(True)  # disconnected, back
    assert (sap_sources, gateway_sources) == ({19}, {1})


async def test_a_sap_session_and_a_gateway_session_on_one_connection(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    gateway = gateway_factory(gateway_config(sim_line.pty.slave_path))
    await gateway.start()
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    by_sap = await hes.request(client_sap=16, meter_sap=17, apdu=PUBLIC_AARQ)
    by_gateway = await hes.request(client_sap=16, meter_sap=1, apdu=e6(19, PUBLIC_AARQ))
    assert (by_sap.source, by_sap.destination) == (17, 16)
    assert acse.decode_aare(by_sap.apdu).result is acse.AssociationResult.ACCEPTED
    assert (by_gateway.source, by_gateway.destination) == (1, 16)
    answer = gw_pdu.decode(by_gateway.apdu)
    assert (answer.response, answer.network_id, answer.physical_address) == (True, NETWORK, b"\x13")
    assert acse.decode_aare(answer.apdu).result is acse.AssociationResult.ACCEPTED
    names = []
    for _ in range(3):  # interleaved on the one connection
        names.append((await hes.request(client_sap=16, meter_sap=17, apdu=GET_LDN)).apdu)
        names.append(gw_pdu.decode((await hes.request(client_sap=16, meter_sap=1, apdu=e6(19, GET_LDN))).apdu).apdu)
    assert {n[-16:] for n in names[0::2]} == {sim_line.meters[0].device.name}  # type: ignore[attr-defined]
    assert {n[-16:] for n in names[1::2]} == {sim_line.meters[2].device.name}  # type: ignore[attr-defined]
    sessions = {(s.meter_sap, s.client_sap): s for s in gateway.router.sessions.values()}
    assert set(sessions) == {(17, 16), (19, 16)}
    await hes.close()


@pytest.mark.parametrize(("apdu", "answer"), [
    (e6(19, PUBLIC_AARQ, network=9), "rejected"),  # no network 9
    (e6(0x30, PUBLIC_AARQ), "rejected"),  # a valid address nobody registered
    (e6(0x3FFF, PUBLIC_AARQ), "rejected"),  # the all-station address: never a meter
    (e6(b"NO-SUCH-METER-NAME", GET_LDN), "exception"),  # a name we do not know
    (bytes.fromhex("e601050011"), "exception"),  # truncated address
    (bytes.fromhex("e60141") + bytes(65) + PUBLIC_AARQ, "exception"),  # oversized address
])
async def test_what_names_no_meter_gets_a_dlms_refusal_and_nothing_on_the_line(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], apdu: bytes, answer: str
) -> None:
    gateway = gateway_factory(gateway_config(sim_line.pty.slave_path))
    await gateway.start()
    line = gateway.lines["bus0"]
    sent_before = line.counters.frames_sent
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    reply = await hes.request(client_sap=16, meter_sap=1, apdu=apdu)
    assert (reply.source, reply.destination) == (1, 16)
    inner = reply.apdu
    if reply.apdu[0] == gw_pdu.GATEWAY_RESPONSE:  # the prefix was readable: the answer names the same meter
        prefix, request = gw_pdu.decode(reply.apdu), gw_pdu.decode(apdu)
        assert (prefix.network_id, prefix.physical_address) == (request.network_id, request.physical_address)
        inner = prefix.apdu
    if answer == "rejected":
        assert acse.decode_aare(inner).result is acse.AssociationResult.REJECTED_PERMANENT
    else:
        assert apdus.kind_of(inner) is apdus.ApduKind.EXCEPTION_RESPONSE
    assert line.counters.frames_sent == sent_before  # not a frame for an address that names no meter
    assert (await hes.request(client_sap=16, meter_sap=17, apdu=PUBLIC_AARQ)).source == 17  # the connection goes on
    assert gateway.gateway_protocol.refusals == 1
    await hes.close()


async def test_with_any_address_allowed_an_unregistered_meter_is_registered_and_read(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    config = gateway_config(sim_line.pty.slave_path, meters=2)  # 19 and 20 answer but are not registered
    gateway = gateway_factory(replace(config, relay=replace(config.relay, gateway_any_address=True)))
    await gateway.start()
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    reply = await hes.request(client_sap=16, meter_sap=1, apdu=e6(19, PUBLIC_AARQ))
    assert acse.decode_aare(gw_pdu.decode(reply.apdu).apdu).result is acse.AssociationResult.ACCEPTED
    meter = gateway.registry.by_place(link="bus0", physical_address=19)
    assert meter is not None and meter.registered_by == "discovery"  # the HES discovered it
    await hes.close()


def gurux_parse_gateway_push(pdu: WrapperPdu) -> tuple[GXReplyData, GXDLMSSecureClient]:
    """An outside head-end that knows meters by gateway address reads a push in gateway form."""
    client = GXDLMSSecureClient(True, pdu.destination, pdu.source, interfaceType=InterfaceType.WRAPPER)
    settings = GXDLMSGateway()
    settings.networkId, settings.physicalDeviceAddress = NETWORK, bytearray(b"\x11")
    client.gateway = settings
    reply, notify = GXReplyData(), GXReplyData()
    frame = bytes.fromhex("0001") + pdu.source.to_bytes(2, "big") + pdu.destination.to_bytes(2, "big") \
        + len(pdu.apdu).to_bytes(2, "big") + pdu.apdu
    with contextlib.redirect_stdout(io.StringIO()):
        client.getData(GXByteBuffer(frame), reply, notify)
    return notify, client


async def test_pushes_in_gateway_form_name_their_meter_and_gurux_reads_them(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path,
    listener: HesListener,  # noqa: F811
) -> None:
    config = gateway_config(sim_line.pty.slave_path, directory=tmp_path)
    gateway = gateway_factory(replace(config, push=(
        PushConfig(name="by-sap", host="127.0.0.1", port=listener.port, deliver_to_subscribed=False),
        PushConfig(name="by-address", host="127.0.0.1", port=listener.port, deliver_to_subscribed=False,
                   form="gateway"))))
    await gateway.start()
    sim_line.bus.push(physical_address=17, client_sap=PUSH_CLIENT_SAP, apdu=data_notification(7))
    received = await listener.take(2)
    by_sap = next(p for p in received if p.source == 17)
    by_address = next(p for p in received if p.source == 1)
    assert by_sap.apdu == data_notification(7)
    prefix = gw_pdu.decode(by_address.apdu)
    assert (prefix.response, prefix.network_id, prefix.physical_address, prefix.apdu) == \
        (True, NETWORK, b"\x11", data_notification(7))
    parsed, _ = gurux_parse_gateway_push(by_address)
    assert [int(v) if not isinstance(v, bytes | bytearray) else bytes(v) for v in parsed.value] == [7, b"alarm"]


def test_the_relay_config_default_keeps_unregistered_addresses_out() -> None:
    assert RelayConfig().gateway_any_address is False
