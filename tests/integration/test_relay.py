"""The relay end to end: HES over TCP wrapper -> gateway -> HDLC on a pty -> simulated meters."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import replace

from gateway.codec import acse, axdr, xdlms
from gateway.config import GatewayConfig, MeterConfig
from gateway.daemon import Gateway
from tests.integration.conftest import SimLine, gateway_config
from tests.integration.rawhes import GET_LDN, PUBLIC_AARQ, RLRQ, RawHes


def ldn_of(get_response: bytes) -> bytes:
    pdu = xdlms.decode_xdlms(get_response)
    assert isinstance(pdu, xdlms.GetResponseNormal)
    assert isinstance(pdu.result, axdr.Data)
    value = pdu.result.value
    assert isinstance(value, bytes)
    return value


async def associate_and_read_name(hes: RawHes, *, meter_sap: int, client_sap: int = 16) -> bytes:
    aare = await hes.request(client_sap=client_sap, meter_sap=meter_sap, apdu=PUBLIC_AARQ)
    assert (aare.source, aare.destination) == (meter_sap, client_sap)
    assert acse.decode_aare(aare.apdu).result is acse.AssociationResult.ACCEPTED
    answer = await hes.request(client_sap=client_sap, meter_sap=meter_sap, apdu=GET_LDN)
    return ldn_of(answer.apdu)


async def test_public_read_through_the_gateway(gateway: Gateway, sim_line: SimLine) -> None:
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    name = await associate_and_read_name(hes, meter_sap=18)
    assert name == sim_line.meters[1].device.name  # meter at physical address 18
    rlre = await hes.request(client_sap=16, meter_sap=18, apdu=RLRQ)
    assert rlre.apdu[0] == 0x63
    await hes.close()
    for _ in range(100):  # DISC goes out after the RLRE; the session ends with the data link
        if not gateway.router.sessions:
            break
        await asyncio.sleep(0.01)
    assert gateway.router.sessions == {}


async def test_unknown_sap_gets_a_permanent_rejection_not_silence(gateway: Gateway) -> None:
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    aare = await hes.request(client_sap=16, meter_sap=999, apdu=PUBLIC_AARQ)
    assert (aare.source, aare.destination) == (999, 16)
    decoded = acse.decode_aare(aare.apdu)
    assert decoded.result is acse.AssociationResult.REJECTED_PERMANENT
    answer = await hes.request(client_sap=16, meter_sap=999, apdu=GET_LDN)
    assert answer.apdu[0] == 0xD8  # exception-response
    await hes.close()


async def test_get_without_association_is_refused(gateway: Gateway) -> None:
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    answer = await hes.request(client_sap=16, meter_sap=17, apdu=GET_LDN)
    assert answer.apdu[0] == 0xD8
    assert gateway.router.sessions == {}
    await hes.close()


async def test_second_hes_on_a_busy_association_is_rejected_transient(gateway: Gateway) -> None:
    first = await RawHes.connect(*gateway.wan.addresses[0])
    second = await RawHes.connect(*gateway.wan.addresses[0])
    await associate_and_read_name(first, meter_sap=17)
    aare = await second.request(client_sap=16, meter_sap=17, apdu=PUBLIC_AARQ)
    assert acse.decode_aare(aare.apdu).result is acse.AssociationResult.REJECTED_TRANSIENT
    # the first association is untouched
    answer = await first.request(client_sap=16, meter_sap=17, apdu=GET_LDN)
    assert ldn_of(answer.apdu).startswith(b"SIM")
    await first.close()
    await second.close()


async def test_two_hes_read_two_meters_on_one_line_at_once(gateway: Gateway, sim_line: SimLine) -> None:
    async def reads(meter_sap: int) -> list[bytes]:
        hes = await RawHes.connect(*gateway.wan.addresses[0])
        names = [await associate_and_read_name(hes, meter_sap=meter_sap)]
        for _ in range(20):
            answer = await hes.request(client_sap=16, meter_sap=meter_sap, apdu=GET_LDN)
            names.append(ldn_of(answer.apdu))
        await hes.close()
        return names

    first, second = await asyncio.gather(reads(17), reads(19))
    assert set(first) == {sim_line.meters[0].device.name}
    assert set(second) == {sim_line.meters[2].device.name}
    assert len(first) == len(second) == 21


async def test_silent_meter_gets_exception_in_time_and_others_are_undisturbed(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    ghost = MeterConfig(sap=40, link="bus0", physical_address=40)  # nobody answers at address 40
    gw = gateway_factory(gateway_config(sim_line.pty.slave_path, extra_meters=(ghost,), exchange_timeout_s=3.0,
                                        response_timeout_s=0.2))
    await gw.start()
    hes = await RawHes.connect(*gw.wan.addresses[0])
    other = await RawHes.connect(*gw.wan.addresses[0])
    loop = asyncio.get_running_loop()
    started = loop.time()
    hes.send(client_sap=16, meter_sap=40, apdu=PUBLIC_AARQ)
    # meanwhile another HES reads a live meter on the same line
    name = await associate_and_read_name(other, meter_sap=17)
    assert name == sim_line.meters[0].device.name
    aare = await hes.receive(timeout=5.0)
    elapsed = loop.time() - started
    assert acse.decode_aare(aare.apdu).result is acse.AssociationResult.REJECTED_TRANSIENT
    assert elapsed < 3.0 + 0.5
    line = gw.lines["bus0"]
    assert line.counters.timeouts >= 3  # SNRM sent 1 + max_retries 2 times, each timed out
    assert (40, 16) not in gw.router.sessions
    answer = await other.request(client_sap=16, meter_sap=17, apdu=GET_LDN)
    assert ldn_of(answer.apdu) == name
    await hes.close()
    await other.close()


async def test_bad_wrapper_version_closes_only_that_connection(gateway: Gateway) -> None:
    good = await RawHes.connect(*gateway.wan.addresses[0])
    await associate_and_read_name(good, meter_sap=17)
    bad = await RawHes.connect(*gateway.wan.addresses[0])
    bad.writer.write(bytes.fromhex("0002001000110005") + GET_LDN[:5])
    assert await bad.closed_by_peer()
    answer = await good.request(client_sap=16, meter_sap=17, apdu=GET_LDN)
    assert ldn_of(answer.apdu).startswith(b"SIM")
    await good.close()
    await bad.close()


async def test_oversized_wrapper_length_closes_only_that_connection(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    config = gateway_config(sim_line.pty.slave_path)
    gw = gateway_factory(replace(config, wan=replace(config.wan, max_apdu=1024)))
    await gw.start()
    good = await RawHes.connect(*gw.wan.addresses[0])
    await associate_and_read_name(good, meter_sap=17)
    bad = await RawHes.connect(*gw.wan.addresses[0])
    bad.writer.write(bytes.fromhex("00010010001107D0"))  # 2000 bytes announced, limit 1024
    assert await bad.closed_by_peer()
    answer = await good.request(client_sap=16, meter_sap=17, apdu=GET_LDN)
    assert ldn_of(answer.apdu).startswith(b"SIM")
    await good.close()
    await bad.close()


async def test_hes_disconnect_releases_the_meter_link(gateway: Gateway) -> None:
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    await associate_and_read_name(hes, meter_sap=20)
    assert (20, 16) in gateway.router.sessions
    await hes.close()
    for _ in range(200):
        if (20, 16) not in gateway.router.sessions:
            break
        await asyncio.sleep(0.01)
    assert (20, 16) not in gateway.router.sessions
    # and the meter can be associated again at once
    again = await RawHes.connect(*gateway.wan.addresses[0])
    assert (await associate_and_read_name(again, meter_sap=20)).startswith(b"SIM")
    await again.close()


async def test_line_noise_is_dropped_and_counted(gateway: Gateway, sim_line: SimLine) -> None:
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    await associate_and_read_name(hes, meter_sap=17)
    decoder = gateway.lines["bus0"].decoder
    before = decoder.discarded_bytes
    os.write(sim_line.pty.master_fd, b"\x00\xff noise \x7e\x7e\x01\x02")
    answer = await hes.request(client_sap=16, meter_sap=17, apdu=GET_LDN)
    assert ldn_of(answer.apdu).startswith(b"SIM")
    assert decoder.discarded_bytes > before
    await hes.close()


async def test_empty_and_oversized_apdus_on_an_open_association_get_exceptions(gateway: Gateway) -> None:
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    await associate_and_read_name(hes, meter_sap=17)
    empty = await hes.request(client_sap=16, meter_sap=17, apdu=b"")
    assert empty.apdu == b"\xd8\x01\x03"
    huge = await hes.request(client_sap=16, meter_sap=17, apdu=b"\xc0" + bytes(65534))
    assert huge.apdu == b"\xd8\x01\x04"  # pdu-too-long
    answer = await hes.request(client_sap=16, meter_sap=17, apdu=GET_LDN)  # the association still works
    assert ldn_of(answer.apdu).startswith(b"SIM")
    await hes.close()


async def test_an_idle_association_is_released_after_the_link_inactivity_timeout(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    config = gateway_config(sim_line.pty.slave_path)
    link = replace(config.links[0], inactivity_timeout_s=0.3)
    gw = gateway_factory(replace(config, links=(link,)))
    await gw.start()
    hes = await RawHes.connect(*gw.wan.addresses[0])
    await associate_and_read_name(hes, meter_sap=17)
    device = sim_line.meters[0].device
    releases = device.counters.releases  # type: ignore[attr-defined]
    started = asyncio.get_running_loop().time()
    while (17, 16) in gw.router.sessions:
        assert asyncio.get_running_loop().time() - started < 3.0
        await asyncio.sleep(0.02)
    assert device.counters.releases == releases + 1  # type: ignore[attr-defined]  # the meter saw the DISC
    await hes.close()


async def test_a_hes_over_ipv6_and_one_over_ipv4_on_the_same_port(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    config = gateway_config(sim_line.pty.slave_path)
    gw = gateway_factory(replace(config, wan=replace(config.wan, listen=("127.0.0.1", "::1"))))
    await gw.start()
    ports = {port for _, port in gw.wan.addresses}
    assert len(gw.wan.addresses) == 2 and len(ports) == 1  # both families, one port
    hosts = {host for host, _ in gw.wan.addresses}
    assert hosts == {"127.0.0.1", "::1"}
    v6 = await RawHes.connect("::1", ports.pop())
    assert (await associate_and_read_name(v6, meter_sap=17)) == sim_line.meters[0].device.name
    await v6.close()
