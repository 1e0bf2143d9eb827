"""An independent head-end (gurux-dlms, GPL, tests only) through the gateway to our simulated meter.

HLS-GMAC authentication and AES-GCM ciphering end to end: the gateway holds no key and passes
every APDU through. The same client reading a twin meter directly over HDLC on a pty must see
the same values (a differential check of our simulator and relay against an outside client).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gurux_dlms import GXDateTime
from gurux_dlms.enums import DataType
from gurux_dlms.objects import (
    GXDLMSClock,
    GXDLMSData,
    GXDLMSDisconnectControl,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)

from gateway.config import GatewayConfig, MeshConfig, MeterConfig
from gateway.daemon import Gateway
from gateway.sim.meter import build_meter
from gateway.sim.udp_meter import SimUdpMeter
from tests.hes import GuruxHes, HesCredentials, SerialChannel, TcpChannel
from tests.integration.conftest import (
    FIXED_NOW,
    TEST_AUTHENTICATION_KEY,
    TEST_BLOCK_CIPHER_KEY,
    SimLine,
    fixed_clock,
    gateway_config,
    make_sim_line,
    meter_settings,
)

MANAGEMENT = HesCredentials(client_sap=1, hls_gmac=True, block_cipher_key=TEST_BLOCK_CIPHER_KEY,
                            authentication_key=TEST_AUTHENTICATION_KEY, system_title=b"GURUXHES")


CHALLENGES: list[bytes] = []  # the HES's HLS challenges (CtoS): authentication values that must not leak


def full_read(hes: GuruxHes) -> dict[str, Any]:
    """Everything the issue asks a head-end to do, in one association."""
    hes.associate()
    CHALLENGES.append(bytes(hes.client.settings.ctoSChallenge))
    out: dict[str, Any] = {"name": bytes(hes.read(GXDLMSData("0.0.42.0.0.255"), 2))}
    clock = GXDLMSClock("0.0.1.0.0.255")
    out["clock"] = hes.read(clock, 2).value.astimezone(dt.UTC)
    register = GXDLMSRegister("1.0.1.8.0.255")
    hes.read(register, 3)
    out["scaler_unit"] = (register.scaler, int(register.unit))
    out["energy"] = hes.read(register, 2)
    profile = GXDLMSProfileGeneric("1.0.99.1.0.255")
    hes.read(profile, 3)  # capture objects
    rows = hes.read(profile, 2)
    out["profile"] = [(row[0].value.astimezone(dt.UTC), row[1]) for row in rows]
    start = GXDateTime(FIXED_NOW - dt.timedelta(hours=3))
    end = GXDateTime(FIXED_NOW - dt.timedelta(hours=2))
    ranged = hes.read_rows_by_range(profile, start, end)
    out["profile_range"] = [(row[0].value.astimezone(dt.UTC), row[1]) for row in ranged]
    disconnect = GXDLMSDisconnectControl("0.0.96.3.10.255")
    out["output_before"] = hes.read(disconnect, 2)
    hes.method(disconnect, 1, 0, DataType.INT8)  # remote_disconnect
    out["output_disconnected"] = hes.read(disconnect, 2)
    hes.method(disconnect, 2, 0, DataType.INT8)  # remote_reconnect
    out["output_reconnected"] = hes.read(disconnect, 2)
    hes.release()
    hes.close()
    return out


async def test_gurux_hes_with_hls_and_ciphering_through_the_gateway_matches_a_direct_read(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], captured_logs: io.StringIO,
) -> None:
    config = gateway_config(sim_line.pty.slave_path)
    gateway = gateway_factory(config)
    await gateway.start()
    host, port = gateway.wan.addresses[0]
    line = gateway.lines["bus0"]

    relayed = await asyncio.to_thread(
        lambda: full_read(GuruxHes(TcpChannel(host, port), credentials=MANAGEMENT, server_sap=17, max_pdu=256))
    )

    # The profile spans several HDLC frames and several GET blocks.
    assert len(relayed["profile"]) == 96
    assert line.counters.frames_received > 40
    profile_pdus = gateway.wan.pdus_out - 14  # AARE, HLS, 2 x name/clock/register, range, 6 x disconnect, RLRE
    assert profile_pdus > 3, gateway.wan.pdus_out  # GetResponseWithDataBlock: one PDU per block
    device = sim_line.meters[0].device
    assert relayed["name"] == device.name  # type: ignore[attr-defined]
    assert relayed["clock"] == FIXED_NOW
    assert relayed["scaler_unit"][1] == 30  # Wh
    assert 0 < len(relayed["profile_range"]) < len(relayed["profile"])
    assert relayed["output_before"] is True
    assert relayed["output_disconnected"] is False
    assert relayed["output_reconnected"] is True

    # The same outside client, directly over HDLC to an identical meter on its own pty.
    twin = make_sim_line(1)
    try:
        direct = await asyncio.to_thread(
            lambda: full_read(GuruxHes(SerialChannel(twin.pty.slave_path), credentials=MANAGEMENT, server_sap=1,
                                       physical_address=17, max_pdu=256))
        )
    finally:
        twin.bus.detach()
        twin.pty.close()
    assert direct == relayed

    # The gateway never saw a key or an authentication value: not in its configuration, not in its logs.
    logs = captured_logs.getvalue()
    assert "hdlc.link_up" in logs  # the capture did see the relay's log lines
    assert "hdlc.rx" in logs and "<60, " in logs  # frames logged at debug, the AARQ's content left out
    assert len(CHALLENGES[0]) >= 8
    secrets = [TEST_BLOCK_CIPHER_KEY, TEST_AUTHENTICATION_KEY, CHALLENGES[0]]
    for secret in secrets:
        for form in (secret.hex(), secret.hex().upper(), secret.hex(" "), repr(secret)):
            assert form not in logs
            assert form not in repr(config)


async def test_gurux_hes_with_hls_and_ciphering_to_a_udp_meter_reads_what_it_reads_from_its_serial_twin(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway],
) -> None:
    udp_meter = SimUdpMeter(devices={1: build_meter(meter_settings(1), clock=fixed_clock)})  # bus0 address 17's twin
    await udp_meter.start("::1", 0)
    try:
        host, port = udp_meter.address[:2]
        config = gateway_config(sim_line.pty.slave_path)
        config = replace(config, meshes=(MeshConfig(name="wisun0", source_address="::1", port=0),),
                         meters=(*config.meters, MeterConfig(sap=40, link="wisun0", address=f"[{host}]:{port}")))
        gateway = gateway_factory(config)
        await gateway.start()
        wan_host, wan_port = gateway.wan.addresses[0]

        def read(sap: int) -> dict[str, Any]:
            return full_read(GuruxHes(TcpChannel(wan_host, wan_port), credentials=MANAGEMENT, server_sap=sap,
                                      max_pdu=256))

        over_mesh = await asyncio.to_thread(read, 40)
        over_line = await asyncio.to_thread(read, 17)
    finally:
        udp_meter.stop()
    assert len(over_mesh["profile"]) == 96 and over_mesh["output_disconnected"] is False
    assert over_mesh == over_line
    counters = gateway.meshes["wisun0"].network.counters
    assert counters.answers == counters.datagrams_sent == udp_meter.counters.requests  # one datagram each way
    assert counters.timeouts == 0
