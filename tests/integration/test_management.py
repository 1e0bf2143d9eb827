"""SAP 1, the gateway's management logical device, and the registry behind it, end to end."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from gurux_dlms.objects import GXDLMSData, GXDLMSSapAssignment

from gateway.config import GatewayConfig
from gateway.control.discovery import identify, scan
from gateway.daemon import Gateway
from gateway.keys import create_keys
from gateway.registry.database import open_database
from gateway.registry.store import MeterRegistry
from tests.hes import GuruxHes, HesCredentials, TcpChannel
from tests.integration.conftest import SimLine, gateway_config

PUBLIC = HesCredentials(client_sap=16)


def prepopulate(state: Path, count: int) -> None:
    """``count`` registered meters beyond the simulated ones (they sit at addresses nobody answers)."""
    state.mkdir(parents=True, exist_ok=True)
    connection = open_database(state / "registry.db")
    connection.execute("PRAGMA synchronous=OFF")  # test set-up speed only; the daemon runs with FULL
    registry = MeterRegistry(connection)
    for index in range(count):
        registry.register(link="bus0", physical_address=1000 + index, name=f"FAR{index:013d}".encode(),
                          sap=100 + index + (100 + index >= 127))  # 127: all-station, never a meter's
    connection.close()


def read_sap_list(host: str, port: int, max_pdu: int) -> list[tuple[int, str]]:
    hes = GuruxHes(TcpChannel(host, port), credentials=PUBLIC, server_sap=1, max_pdu=max_pdu)
    hes.associate()
    assignment = GXDLMSSapAssignment("0.0.41.0.0.255")
    hes.read(assignment, 2)
    name = bytes(hes.read(GXDLMSData("0.0.42.0.0.255"), 2))
    hes.release()
    hes.close()
    return [(1, name.decode())] + [(sap, n) for sap, n in assignment.sapAssignmentList if sap != 1]


def read_name_through_relay(host: str, port: int, sap: int) -> bytes:
    hes = GuruxHes(TcpChannel(host, port), credentials=PUBLIC, server_sap=sap)
    hes.associate()
    name = bytes(hes.read(GXDLMSData("0.0.42.0.0.255"), 2))
    hes.release()
    hes.close()
    return name


async def test_hes_lists_2000_meters_from_sap_1_then_reads_each_through_the_relay(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path
) -> None:
    prepopulate(tmp_path / "state", 2000)
    config = gateway_config(sim_line.pty.slave_path, directory=tmp_path)
    gateway = gateway_factory(config)
    await gateway.start()
    # the four simulated meters were seeded from [[meters]] at SAPs 17-20; identify them as a scan would
    for sap in (17, 18, 19, 20):
        assert (await identify(gateway, sap)).physical_address == sap
    host, port = gateway.wan.addresses[0]

    listed = await asyncio.to_thread(read_sap_list, host, port, 512)
    assert listed[0] == (1, "DLMSGW0000000001")
    assert len(listed) == 1 + 2004
    blocks = gateway.management.device.counters.get_blocks_sent
    assert blocks > 50  # ~60 kB of SAP list in 512-byte PDUs
    names = {sap: name for sap, name in listed}
    for sap in sorted(s for s, n in listed if n.startswith("SIM")):
        assert (await asyncio.to_thread(read_name_through_relay, host, port, sap)).decode() == names[sap]


async def test_restart_keeps_every_sap_and_a_moved_meter_keeps_its_own(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path
) -> None:
    config = gateway_config(sim_line.pty.slave_path, meters=0, directory=tmp_path, response_timeout_s=0.1)
    first = gateway_factory(config)
    await first.start()
    found = await scan(first, link="bus0", first=16, last=22)
    assert [(r.address, r.note) for r in found] == [(a, "registered") for a in (17, 18, 19, 20)]
    before = {m.sap: (m.name_text, m.physical_address) for m in first.registry.meters()}
    await first.stop()

    # the meter at address 18 is re-addressed to 30 while the gateway is down
    sim_line.bus.readdress(old=18, new=30)
    second = gateway_factory(config)
    await second.start()
    assert {m.sap: m.name_text for m in second.registry.meters()} == {s: n for s, (n, _) in before.items()}
    await scan(second, link="bus0", first=16, last=31)
    moved_sap = next(s for s, (_, address) in before.items() if address == 18)
    moved = second.registry.get(moved_sap)
    assert moved is not None and moved.physical_address == 30
    assert (await identify(second, moved_sap)).name_text == before[moved_sap][0]
    assert len(second.registry) == 4


async def test_management_client_with_the_gateways_own_keys_may_remove_a_mapping_public_may_not(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path
) -> None:
    keys = create_keys(tmp_path / "keys.toml")
    gateway = gateway_factory(gateway_config(sim_line.pty.slave_path, directory=tmp_path))
    await gateway.start()
    host, port = gateway.wan.addresses[0]

    name = (await identify(gateway, 18)).name_text

    def public_tries_to_remove() -> bool:
        hes = GuruxHes(TcpChannel(host, port), credentials=PUBLIC, server_sap=1)
        hes.associate()
        try:
            hes.request(GXDLMSSapAssignment("0.0.41.0.0.255").removeSap(hes.client, name))
        except Exception:  # gurux raises on a refused ACTION
            return False
        finally:
            hes.close()
        return True

    assert await asyncio.to_thread(public_tries_to_remove) is False
    assert gateway.registry.get(18) is not None

    management = HesCredentials(client_sap=1, hls_gmac=True, block_cipher_key=keys.block_cipher_key,
                                authentication_key=keys.authentication_key, system_title=b"UTILHES1")

    def manager_removes() -> None:
        hes = GuruxHes(TcpChannel(host, port), credentials=management, server_sap=1)
        hes.associate()
        assignment = GXDLMSSapAssignment("0.0.41.0.0.255")
        hes.request(assignment.removeSap(hes.client, name))
        hes.read(assignment, 2)
        hes.release()
        hes.close()
        assert all(sap != 18 for sap, _ in assignment.sapAssignmentList)

    await asyncio.to_thread(manager_removes)
    assert gateway.registry.get(18) is None
    ceiling = sqlite3.connect(tmp_path / "state" / "registry.db").execute(
        "SELECT ceiling FROM invocation_counters WHERE key_name = 'management'").fetchone()
    assert ceiling[0] > gateway.management.device.invocation_counter > 0


@pytest.mark.parametrize("wrong", ["authentication_key", "block_cipher_key"])
async def test_wrong_gateway_keys_are_refused_with_a_dlms_answer(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path, wrong: str
) -> None:
    keys = create_keys(tmp_path / "keys.toml")
    gateway = gateway_factory(gateway_config(sim_line.pty.slave_path, directory=tmp_path))
    await gateway.start()
    host, port = gateway.wan.addresses[0]
    values = {"block_cipher_key": keys.block_cipher_key, "authentication_key": keys.authentication_key}
    values[wrong] = bytes(16)
    credentials = HesCredentials(client_sap=1, hls_gmac=True, system_title=b"UTILHES1", **values)

    def attempt() -> str:
        hes = GuruxHes(TcpChannel(host, port), credentials=credentials, server_sap=1)
        try:
            hes.associate()
        except Exception as exc:
            return type(exc).__name__
        finally:
            hes.close()
        return "associated"

    assert await asyncio.to_thread(attempt) != "associated"
    assert gateway.management.device.counters.associations == 0
    assert gateway.wan.pdus_out >= 1  # answered, not dropped
