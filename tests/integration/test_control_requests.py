"""The control socket against malformed and out-of-range requests: a clear refusal, never a traceback."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.codec import acse
from gateway.config import GatewayConfig, RegistryConfig
from gateway.daemon import Gateway
from gateway.registry.database import open_database
from gateway.registry.store import MeterState
from tests.integration.conftest import SimLine, gateway_config
from tests.integration.rawhes import PUBLIC_AARQ, RawHes


async def ask(gateway: Gateway, line: bytes) -> dict[str, Any]:
    """One raw request line on the real control socket; the answer."""
    reader, writer = await asyncio.open_unix_connection(str(gateway.runtime_directory / "control.sock"),
                                                        limit=1 << 20)
    try:
        writer.write(line + b"\n")
        await writer.drain()
        answer: dict[str, Any] = json.loads(await asyncio.wait_for(reader.readline(), 10))
        return answer
    finally:
        writer.close()
        await writer.wait_closed()


def request(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


MALFORMED = [  # (request line, what the error must name)
    (b'{"command": "meter", "meter": ' + b"[" * 20000 + b"]" * 20000 + b"}", "nested"),
    (b'{"command": "meter", "meter": ' + b"9" * 5000 + b"}", "number"),
    (b'{"command": "meters.remove", "sap": ' + b"9" * 5000 + b"}", "number"),
    (request(command="meters.add", link=["bus0"], address=40), "'link'"),
    (request(command="meters.add", link="bus0", address="40"), "'address'"),
    (request(command="meters.add", link="bus0", address=40, logical_device="x"), "'logical_device'"),
    (request(command="meters.add", link="bus0", address=40, logical_device=[1]), "'logical_device'"),
    (request(command="meters.add", link="bus0", address=40, sap=10**30), "'sap'"),
    (request(command="meters.add", link="bus\0", address=40), "'link'"),
    (request(command="meter", meter="\u00b2"), "no meter"),  # a digit str.isdigit() knows, int() does not
    (request(command="meter", meter={"sap": 17}), "'meter'"),
    (request(command="meters", state=["online"]), "'state'"),
    (request(command="meters.scan", link="bus0", first=16.5, last=20), "'first'"),
    (request(command=["status"]), "'command'"),
    (b'{"command": "status"\x00}', "JSON"),
    (b"\x00" * 100, "JSON"),
    (b"[1, 2]", "object"),
    (b'{"command": "meter", "meter": "' + b"x" * 70000 + b'"}', "longer than 65536 bytes"),
]


@pytest.mark.parametrize(("line", "named"), MALFORMED, ids=range(len(MALFORMED)))
async def test_a_malformed_request_gets_a_clear_refusal_naming_the_field(
    captured_logs: io.StringIO, gateway: Gateway, line: bytes, named: str
) -> None:
    answer = await ask(gateway, line)
    assert answer["ok"] is False
    assert named in answer["error"]
    assert "internal error" not in answer["error"]
    assert len(answer["error"]) < 200
    logs = captured_logs.getvalue()
    assert "Traceback" not in logs and "control.handler_failed" not in logs
    assert (await ask(gateway, request(command="status")))["ok"] is True  # the daemon serves on


BAD_PLACES = [{"address": 999999}, {"address": -1}, {"address": 0}, {"address": 16382}, {"address": 16383},
              {"address": 40, "logical_device": 99999}, {"address": 40, "logical_device": 0}]


async def test_meters_add_refuses_what_the_configuration_refuses_and_identification_goes_on(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path
) -> None:
    config = gateway_config(sim_line.pty.slave_path, meters=2, directory=tmp_path)
    gateway = gateway_factory(replace(config, registry=RegistryConfig(identify=True)))
    await gateway.start()
    for place in BAD_PLACES:
        answer = await ask(gateway, request(command="meters.add", link="bus0", **place))
        assert answer["ok"] is False, place
        assert "IEC 62056-46" in answer["error"]
    assert len(gateway.registry) == 2
    added = await ask(gateway, request(command="meters.add", link="bus0", address=19))
    assert added["ok"] is True
    await asyncio.wait_for(gateway.identify_queue.join(), 30)  # the identity worker is alive and done
    meter = gateway.registry.get(added["result"]["sap"])
    assert meter is not None and meter.name_text == "SIM0000000000003"


def old_registry_row(state: Path, *, sap: int, physical_address: int) -> None:
    """A registry written by a gateway that did not check addresses yet."""
    state.mkdir(parents=True)
    database = open_database(state / "registry.db")
    database.execute("INSERT INTO meters (sap, link, physical_address, logical_device, state, registered_by)"
                     " VALUES (?, 'bus0', ?, 1, 'registered', 'provisioning')", (sap, physical_address))
    database.close()


async def test_a_row_from_before_the_address_rule_is_refused_to_a_hes_not_a_crash(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path
) -> None:
    config = gateway_config(sim_line.pty.slave_path, meters=2, directory=tmp_path)
    old_registry_row(Path(config.paths.state_directory), sap=50, physical_address=999999)
    gateway = gateway_factory(replace(config, registry=RegistryConfig(identify=True)))
    await gateway.start()
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    aare = await hes.request(client_sap=16, meter_sap=50, apdu=PUBLIC_AARQ)
    assert acse.decode_aare(aare.apdu).result is acse.AssociationResult.REJECTED_PERMANENT
    assert (await hes.request(client_sap=16, meter_sap=17, apdu=PUBLIC_AARQ)).apdu[0] == 0x61  # same connection
    await hes.close()
    await asyncio.wait_for(gateway.identify_queue.join(), 30)  # its identity read failed, the worker goes on
    assert {m.sap for m in gateway.registry.meters(state=MeterState.ONLINE)} == {17, 18}
