"""`dlms-gateway readings` through a real control socket: filters, formats, paging with progress."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
from pathlib import Path

import pytest

from gateway.cli.client import common_options, readable
from gateway.cli.readings import add_readings_command, parse_since, run_readings
from gateway.config import MeterConfig
from gateway.control.server import ControlServer
from gateway.poller.config import PollGroup
from gateway.poller.control import readings_handlers
from gateway.poller.store import PollRecord, Reading
from tests.poller.conftest import START, Gateways, PolledLine, poller_gateway_config, write_polling_keys


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_readings_command(parser.add_subparsers(dest="command"), common_options(argparse.ArgumentParser))
    return parser.parse_args(["readings", *argv])


async def test_export_formats_filters_and_progress(tmp_path: Path, reader_line: PolledLine, gateways: Gateways,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    write_polling_keys(tmp_path / "polling-keys.toml")
    config = poller_gateway_config(
        tmp_path, links=[("bus0", reader_line.pty.slave_path)],
        meters=[MeterConfig(sap=17 + i, link="bus0", physical_address=17 + i) for i in range(4)],
        groups=[PollGroup(name="g", meters=(17, 18, 19, 20), credentials="reader", interval_s=3600,
                          registers=("1.0.1.8.0.255",), profiles=("1.0.99.1.0.255",))])
    gateway = await gateways.start(config)
    assert gateway.poller is not None
    await gateway.poller.wait_for_polls(4, timeout_s=15)
    socket = tmp_path / "readings.sock"
    server = ControlServer(path=socket, handlers=readings_handlers(poller=gateway.poller, registry=gateway.registry))
    await server.start()
    try:
        out = tmp_path / "meter18.csv"
        since = (START.replace(hour=6, minute=0, second=0)).isoformat()
        code = await asyncio.to_thread(run_readings, _args("--meter", "18", "--since", since, "--format", "csv",
                                                           "--output", str(out), "--socket", str(socket)))
        assert code == 0
        with out.open() as exported_csv:
            rows = list(csv.DictReader(exported_csv))
        store = gateway.poller.store
        expected = store.readings(meter_sap=18, since=parse_since(since, now=0), limit=10_000)
        assert [r["id"] for r in rows] == [str(e["id"]) for e in expected]
        assert len(rows) == 2 + 25  # clock, register, and the profile's 06:00..12:00 quarter hours
        assert {r["meter_sap"] for r in rows} == {"18"}
        assert (rows[0]["obis"], rows[0]["captured_at"]) == ("0.0.1.0.0.255", "2026-11-21T12:07:30Z")
        assert (rows[-1]["source"], rows[-1]["captured_at"]) == ("1.0.99.1.0.255", "2026-11-21T12:00:00Z")

        out = tmp_path / "all.json"
        code = await asyncio.to_thread(run_readings, _args("--format", "json", "--output", str(out),
                                                           "--socket", str(socket)))
        assert code == 0
        exported = json.loads(out.read_text())
        assert exported == [readable(row) for row in store.readings(limit=10_000)] and len(exported) == 4 * 98
        assert exported[0]["captured_at"] == "2026-11-21T12:07:30Z"  # ISO times, as in CSV

        # A large export: pages of 5000 with a progress bar on stderr.
        many = tuple(Reading(source="1.0.99.2.0.255", obis="1.0.1.29.0.255", captured_at=float(i), value=i,
                             dlms_type="double-long-unsigned") for i in range(25_000))
        store.record(PollRecord(meter_sap=99, meter_name="BIG", group_name="g", started_at=0.0, finished_at=1.0,
                                outcome="ok", error=None, attempts=1, readings=many))
        capsys.readouterr()
        code = await asyncio.to_thread(run_readings, _args("--meter", "BIG", "--format", "table",
                                                           "--socket", str(socket)))
        captured = capsys.readouterr()
        assert code == 0
        assert len(captured.out.splitlines()) == 2 + 25_000
        assert "25000/25000" in captured.err and "5000/25000" in captured.err

        code = await asyncio.to_thread(run_readings, _args("--since", "yesterday", "--socket", str(socket)))
        assert code == 2
    finally:
        await server.stop()


async def test_a_meter_that_does_not_exist_is_an_error_not_an_empty_export(
        tmp_path: Path, reader_line: PolledLine, gateways: Gateways, capsys: pytest.CaptureFixture[str]) -> None:
    write_polling_keys(tmp_path / "polling-keys.toml")
    config = poller_gateway_config(
        tmp_path, links=[("bus0", reader_line.pty.slave_path)],
        meters=[MeterConfig(sap=17 + i, link="bus0", physical_address=17 + i) for i in range(2)],
        groups=[PollGroup(name="g", meters=(17,), credentials="reader", interval_s=3600,
                          registers=("1.0.1.8.0.255",))])
    gateway = await gateways.start(config)
    assert gateway.poller is not None
    await gateway.poller.wait_for_polls(1, timeout_s=15)
    socket = tmp_path / "readings.sock"
    server = ControlServer(path=socket, handlers=readings_handlers(poller=gateway.poller, registry=gateway.registry))
    await server.start()
    try:
        for meter, message in (("99", "no meter with SAP 99"), ("NOBODY", "no meter named 'NOBODY'")):
            capsys.readouterr()
            code = await asyncio.to_thread(run_readings, _args("--meter", meter, "--socket", str(socket)))
            captured = capsys.readouterr()
            assert code != 0 and message in captured.err and captured.out == ""
            code = await asyncio.to_thread(run_readings, _args("--meter", meter, "--json", "--socket", str(socket)))
            answer = json.loads(capsys.readouterr().out)
            assert code != 0 and answer["ok"] is False and message in answer["error"]
        # registered meters, by SAP (not polled: no rows) and by name (polled): exports, not errors
        for meter in ("18", "SIM0000000000001"):
            code = await asyncio.to_thread(run_readings, _args("--meter", meter, "--json", "--socket", str(socket)))
            rows = json.loads(capsys.readouterr().out)
            assert code == 0 and len(rows) == (2 if meter == "SIM0000000000001" else 0)
    finally:
        await server.stop()


def test_since_accepts_dates_and_ages() -> None:
    assert parse_since("2026-11-21", now=0) == START.replace(hour=0, minute=0, second=0).timestamp()
    assert parse_since("2026-11-21T10:00Z", now=0) == START.replace(hour=10, minute=0, second=0).timestamp()
    assert parse_since("24h", now=100_000.0) == 100_000.0 - 86_400
    with pytest.raises(ValueError, match="expected"):
        parse_since("last week", now=0)
