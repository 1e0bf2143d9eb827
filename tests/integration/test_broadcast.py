"""Broadcast image transfer through the gateway: one UI frame per block to all stations, the rest end to end.

The HES sends each ciphered block (broadcast key: the gateway never sees it) to the wrapper's
all-station wPort, or in a gateway-request to one network's all-station address; the gateway
sends it once on the line and answers with its own data-notification when it has left.
"""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import Callable

from gateway.codec import apdu as apdus
from gateway.codec import axdr, xdlms
from gateway.codec import gateway as gw_pdu
from gateway.codec.wrapper import ALL_STATION_WPORT
from gateway.config import GatewayConfig, MeterConfig
from gateway.daemon import Gateway
from tests.cosem.client import Keys
from tests.firmware_channels import GatewayBroadcaster, gateway_campaign, meters_on_a_pty
from tests.firmware_hes import BroadcastSender, FirmwareImage, run_campaign
from tests.integration.conftest import gateway_config
from tests.integration.rawhes import GET_LDN, PUBLIC_AARQ, RawHes
from tests.sim.firmware_fleet import (
    AUTHENTICATION_KEY,
    BROADCAST_KEY,
    BROADCAST_KEYS,
    HES_TITLE,
    firmware_meters,
    unicast_key,
)

IMAGE = FirmwareImage(identifier=b"SIM-FW-3.3.0", data=random.Random(4060).randbytes(3000))
MANAGEMENT_CLIENT = 1  # the management client sends the broadcasts


def meter_keys(index: int) -> Keys:
    """The head-end's keys for the meter at SAP 17 + index (each meter has its own unicast key)."""
    return Keys(block_cipher_key=unicast_key(index + 1), authentication_key=AUTHENTICATION_KEY, system_title=HES_TITLE)


def sent_on(notification: xdlms.DataNotification) -> tuple[int, int]:
    """(networks, airtime ms) the gateway reports for one broadcast."""
    networks, airtime_ms = notification.body.value  # type: ignore[misc]
    return int(networks.value), int(airtime_ms.value)


async def test_a_firmware_campaign_broadcast_through_the_gateway(
    gateway_factory: Callable[[GatewayConfig], Gateway], captured_logs: io.StringIO
) -> None:
    meters = firmware_meters(6, loss=0.05)
    with meters_on_a_pty(meters, seed=11) as (pty, bus):
        gateway = gateway_factory(gateway_config(pty.slave_path, meters=len(meters)))
        await gateway.start()
        host, port = gateway.wan.addresses[0]
        campaign = gateway_campaign(host, port, count=len(meters), keys=meter_keys)
        broadcaster = GatewayBroadcaster(host, port)
        reports = await asyncio.to_thread(run_campaign, campaign, IMAGE, sender=BroadcastSender(BROADCAST_KEYS),
                                          broadcaster=broadcaster)
        broadcaster.channel.close()
        for meter, report in zip(meters, reports, strict=True):
            assert report.error is None, report
            assert report.activated and report.activated_sha256 == IMAGE.sha256
            # what each meter missed on the medium, and only that, was filled by unicast through the relay
            assert list(report.missed_broadcast) == bus.broadcasts_lost(physical_address=meter.physical_address)
        line = gateway.lines["bus0"]
        blocks = len(broadcaster.notifications)
        assert blocks == line.counters.broadcasts == gateway.broadcasts.broadcasts  # once per block, not per meter
        assert all(sent_on(n)[0] == 1 and sent_on(n)[1] >= 1 for n in broadcaster.notifications)
        logged = captured_logs.getvalue().lower()
        for key in (BROADCAST_KEY, AUTHENTICATION_KEY, *(unicast_key(index + 1) for index in range(len(meters)))):
            assert key.hex() not in logged


async def test_relayed_reads_keep_their_share_of_the_line_during_a_burst_of_broadcasts(
    gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    with meters_on_a_pty(firmware_meters(2, loss=0.0), seed=1) as (pty, _bus):
        gateway = gateway_factory(gateway_config(pty.slave_path, meters=2))
        await gateway.start()
        host, port = gateway.wan.addresses[0]
        sender = BroadcastSender(BROADCAST_KEYS)
        burst = [sender.action(2, axdr.Data.structure(axdr.Data.double_long_unsigned(n),
                                                      axdr.Data.octet_string(bytes(64)))) for n in range(40)]
        broadcasting = await RawHes.connect(host, port)
        reader = await RawHes.connect(host, port)
        await reader.request(client_sap=16, meter_sap=17, apdu=PUBLIC_AARQ)
        for apdu in burst:  # 40 frames of ~130 octets: ~0.45 s of airtime at 115,200 bit/s
            broadcasting.send(client_sap=MANAGEMENT_CLIENT, meter_sap=ALL_STATION_WPORT, apdu=apdu)
        reads = 0
        while gateway.lines["bus0"].counters.broadcasts < len(burst):
            await reader.request(client_sap=16, meter_sap=17, apdu=GET_LDN)
            reads += 1
        assert reads >= 5  # the reader was served between broadcast frames, not after all of them
        answers = [await broadcasting.receive() for _ in burst]
        assert all(xdlms.decode_xdlms(a.apdu).__class__ is xdlms.DataNotification for a in answers)
        await reader.close()
        await broadcasting.close()


async def test_a_broadcast_to_one_network_by_gateway_request_and_what_cannot_be_broadcast(
    gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    with meters_on_a_pty(firmware_meters(2, loss=0.0), seed=1) as (pty, _bus):
        gateway = gateway_factory(gateway_config(pty.slave_path, meters=2))
        await gateway.start()
        hes = await RawHes.connect(*gateway.wan.addresses[0])
        block = BroadcastSender(BROADCAST_KEYS).action(2, axdr.Data.structure(
            axdr.Data.double_long_unsigned(0), axdr.Data.octet_string(bytes(16))))

        def to_network(network: int, apdu: bytes) -> bytes:
            return gw_pdu.encode(gw_pdu.GatewayPdu(network_id=network, physical_address=gw_pdu.ALL_STATION_ADDRESS,
                                                   apdu=apdu))

        answer = await hes.request(client_sap=MANAGEMENT_CLIENT, meter_sap=1, apdu=to_network(1, block))
        prefix = gw_pdu.decode(answer.apdu)
        assert (prefix.response, prefix.network_id, prefix.physical_address) == (True, 1, gw_pdu.ALL_STATION_ADDRESS)
        notification = xdlms.decode_xdlms(prefix.apdu)
        assert isinstance(notification, xdlms.DataNotification) and sent_on(notification)[0] == 1

        unknown = await hes.request(client_sap=MANAGEMENT_CLIENT, meter_sap=1, apdu=to_network(9, block))
        assert apdus.kind_of(gw_pdu.decode(unknown.apdu).apdu) is apdus.ApduKind.EXCEPTION_RESPONSE
        too_long = await hes.request(client_sap=MANAGEMENT_CLIENT, meter_sap=ALL_STATION_WPORT, apdu=bytes(200))
        assert too_long.apdu == apdus.exception_response(state_error=apdus.STATE_ERROR_SERVICE_NOT_ALLOWED,
                                                         service_error=apdus.SERVICE_ERROR_PDU_TOO_LONG)
        assert gateway.lines["bus0"].counters.broadcasts == 1  # only the first one reached the line
        await hes.close()


async def test_a_meter_configured_at_sap_127_keeps_it_and_broadcasts_go_by_gateway_request(
    gateway_factory: Callable[[GatewayConfig], Gateway], captured_logs: io.StringIO
) -> None:
    # a configuration from before broadcasts (or the anchors' probe, SAPs 17 upwards) names SAP 127
    with meters_on_a_pty(firmware_meters(2, loss=0.0), seed=1) as (pty, _bus):
        config = gateway_config(pty.slave_path, meters=1,
                                extra_meters=(MeterConfig(sap=ALL_STATION_WPORT, link="bus0", physical_address=18),))
        gateway = gateway_factory(config)
        await gateway.start()
        assert "meters.all_station_wport_held" in captured_logs.getvalue()
        hes = await RawHes.connect(*gateway.wan.addresses[0])
        aare = await hes.request(client_sap=16, meter_sap=ALL_STATION_WPORT, apdu=PUBLIC_AARQ)
        assert aare.apdu[:1] == b"\x61" and aare.source == ALL_STATION_WPORT
        answer = await hes.request(client_sap=16, meter_sap=ALL_STATION_WPORT, apdu=GET_LDN)
        assert answer.apdu[:1] == b"\xc4"  # the meter's own answer, relayed: not a broadcast notification
        assert gateway.lines["bus0"].counters.broadcasts == 0
        block = BroadcastSender(BROADCAST_KEYS).action(2, axdr.Data.structure(
            axdr.Data.double_long_unsigned(0), axdr.Data.octet_string(bytes(16))))
        by_e6 = gw_pdu.encode(gw_pdu.GatewayPdu(network_id=1, physical_address=gw_pdu.ALL_STATION_ADDRESS, apdu=block))
        sent = await hes.request(client_sap=MANAGEMENT_CLIENT, meter_sap=1, apdu=by_e6)
        assert isinstance(xdlms.decode_xdlms(gw_pdu.decode(sent.apdu).apdu), xdlms.DataNotification)
        assert gateway.lines["bus0"].counters.broadcasts == 1
        await hes.close()


async def test_a_firmware_campaign_to_a_hundred_meters_completes_end_to_end(
    gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    meters = firmware_meters(100, loss=0.02)
    image = FirmwareImage(identifier=b"SIM-FW-100", data=random.Random(100).randbytes(1500))
    with meters_on_a_pty(meters, seed=100) as (pty, bus):
        gateway = gateway_factory(gateway_config(pty.slave_path, meters=len(meters)))
        await gateway.start()
        host, port = gateway.wan.addresses[0]
        campaign = gateway_campaign(host, port, count=len(meters), keys=meter_keys)
        broadcaster = GatewayBroadcaster(host, port)
        reports = await asyncio.to_thread(run_campaign, campaign, image, sender=BroadcastSender(BROADCAST_KEYS),
                                          broadcaster=broadcaster)
        broadcaster.channel.close()
        assert [report.error for report in reports] == [None] * 100
        assert all(report.activated and report.activated_sha256 == image.sha256 for report in reports)
        blocks = len(broadcaster.notifications)
        assert gateway.lines["bus0"].counters.broadcasts == blocks  # each block once for the hundred meters
        assert sum(report.unicast_blocks for report in reports) == sum(
            len(bus.broadcasts_lost(physical_address=meter.physical_address)) for meter in meters)
