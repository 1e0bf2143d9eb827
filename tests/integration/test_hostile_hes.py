"""A hostile head-end on the WAN (issue 9): what it sends gets a DLMS answer, holds nothing it was refused."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

from gateway.codec import acse
from gateway.codec.wrapper import WrapperPdu, encode
from gateway.config import GatewayConfig
from gateway.daemon import Gateway
from gateway.keys import create_keys
from tests.integration.conftest import SimLine, gateway_config
from tests.integration.management_hes import MANAGEMENT_CLIENT_SAP, ManagementHes
from tests.integration.rawhes import GET_LDN, PUBLIC_AARQ, RawHes
from tests.integration.test_push import STRANGER_AARQ
from tests.integration.test_relay import associate_and_read_name
from tests.wan.support import log_events, until

# PUBLIC_AARQ asking for short-name referencing: the gateway's public client is LN only.
SN_AARQ = PUBLIC_AARQ[:10] + bytes([acse.APPLICATION_CONTEXT_SN_NO_CIPHERING]) + PUBLIC_AARQ[11:]
# The shortest AARQ whose application-context-name ends in an arc >= 0x80 (cannot be echoed in one octet).
ODD_CONTEXT_AARQ = bytes.fromhex("600ba109060760857405080180")


def result_of(aare: bytes) -> acse.AssociationResult:
    return acse.decode_aare(aare).result


async def test_a_refused_management_aarq_holds_nothing_the_manager_associates_while_it_stays_connected(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path
) -> None:
    keys = create_keys(tmp_path / "keys.toml")
    gateway = gateway_factory(gateway_config(sim_line.pty.slave_path, directory=tmp_path))
    await gateway.start()
    host, port = gateway.wan.addresses[0]
    stranger = await RawHes.connect(host, port)
    refused = await stranger.request(client_sap=MANAGEMENT_CLIENT_SAP, meter_sap=1, apdu=STRANGER_AARQ)
    assert result_of(refused.apdu) is acse.AssociationResult.REJECTED_PERMANENT

    manager = await asyncio.to_thread(ManagementHes.connect, host, port, keys)
    await asyncio.to_thread(manager.associate_with_hls)  # not rejected-transient as "held by another"
    assert gateway.router.push_subscriber() is not None
    manager.close()
    await until(lambda: MANAGEMENT_CLIENT_SAP not in gateway.router.management_owners)  # released on disconnect
    assert gateway.router.push_subscriber() is None
    await stranger.close()


async def test_a_refused_public_aarq_holds_nothing(gateway: Gateway) -> None:
    host, port = gateway.wan.addresses[0]
    stranger = await RawHes.connect(host, port)
    refused = await stranger.request(client_sap=16, meter_sap=1, apdu=SN_AARQ)
    assert result_of(refused.apdu) is acse.AssociationResult.REJECTED_PERMANENT
    reader = await RawHes.connect(host, port)
    accepted = await reader.request(client_sap=16, meter_sap=1, apdu=PUBLIC_AARQ)
    assert result_of(accepted.apdu) is acse.AssociationResult.ACCEPTED
    await reader.close()
    await stranger.close()


async def test_an_aarq_from_a_client_wport_beyond_seven_bits_is_rejected_not_cut_off(gateway: Gateway) -> None:
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    for client_sap in (0x80, 0xFFFF):
        aare = await hes.request(client_sap=client_sap, meter_sap=17, apdu=PUBLIC_AARQ)
        assert (aare.source, aare.destination) == (17, client_sap)
        assert result_of(aare.apdu) is acse.AssociationResult.REJECTED_PERMANENT
    assert await associate_and_read_name(hes, meter_sap=17)  # the same connection still relays
    await hes.close()


async def test_an_aarq_with_a_context_name_that_cannot_be_echoed_gets_a_rejection_in_the_ln_context(
    gateway: Gateway,
) -> None:
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    aare = await hes.request(client_sap=16, meter_sap=999, apdu=ODD_CONTEXT_AARQ)
    decoded = acse.decode_aare(aare.apdu)
    assert decoded.result is acse.AssociationResult.REJECTED_PERMANENT
    assert decoded.application_context == acse.APPLICATION_CONTEXT_LN_NO_CIPHERING
    answer = await hes.request(client_sap=16, meter_sap=999, apdu=GET_LDN)
    assert answer.apdu[0] == 0xD8  # still connected, still answered
    await hes.close()


async def test_a_hes_pipelining_past_the_limit_gets_an_answer_each_and_a_bounded_number_of_log_lines(
    gateway: Gateway, captured_logs: io.StringIO
) -> None:
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    assert await associate_and_read_name(hes, meter_sap=17)
    loop = asyncio.get_running_loop()
    started = loop.time()
    flood = 400
    hes.writer.write(encode(WrapperPdu(source=16, destination=17, apdu=GET_LDN)) * flood)
    answers = [await hes.receive() for _ in range(flood)]
    seconds = loop.time() - started
    refused = sum(answer.apdu[0] == 0xD8 for answer in answers)
    assert refused > flood // 2  # MAX_OUTSTANDING were relayed at a time, the rest refused one by one
    lines = log_events(captured_logs, "session.too_many_outstanding")
    assert 1 <= len(lines) <= seconds + 1  # one line per HES address and second, not one per refusal
    assert len(lines) + sum(line["suppressed_before"] for line in lines) <= refused
    await hes.close()
