"""`dlms-gateway status` as text says what `status --json` says about polling: the MQTT uplink's
state, what waits for it, and the meters that keep failing."""

from __future__ import annotations

import asyncio
import contextlib
import io
from dataclasses import replace
from pathlib import Path

from gateway.cli.client import call, readable
from gateway.cli.technician import _render_status
from gateway.config import MeterConfig
from gateway.poller.config import MqttConfig, PollGroup
from tests.poller.broker import free_port
from tests.poller.conftest import Gateways, PolledLine, poller_gateway_config, write_polling_keys


async def test_status_text_shows_the_uplink_and_failing_meters(tmp_path: Path, reader_line: PolledLine,
                                                               gateways: Gateways) -> None:
    write_polling_keys(tmp_path / "polling-keys.toml")
    broker_port = free_port()  # no broker there: the uplink stays disconnected, polls wait in the store
    config = poller_gateway_config(
        tmp_path, links=[("bus0", reader_line.pty.slave_path)],
        meters=[MeterConfig(sap=17, link="bus0", physical_address=17),
                MeterConfig(sap=40, link="bus0", physical_address=60)],  # nobody answers at 60
        groups=[PollGroup(name="g", meters=(17, 40), credentials="reader", interval_s=0.2,
                          registers=("1.0.1.8.0.255",), retries=0, failure_threshold=1, failing_interval_s=60)],
        mqtt=MqttConfig(host="127.0.0.1", port=broker_port, reconnect_min_s=60, reconnect_max_s=60))
    config = replace(config, links=(replace(config.links[0], response_timeout_s=0.05, max_retries=0),))
    gateway = await gateways.start(config)
    poller = gateway.poller
    assert poller is not None
    while not (poller.failing and poller.polls_ok >= 2):
        await poller.wait_for_polls(poller.recorded + 1, timeout_s=10)
    status = await asyncio.to_thread(call, gateway.runtime_directory / "control.sock", "status")
    await gateways.stop(gateway)

    polling = status["polling"]
    uplink = polling["uplink"]
    assert polling["failing_meters"] == [40] and uplink["connected"] is False
    assert uplink["buffered"] >= 2 and uplink["held_until_identified"] >= 1  # 17's polls; 40 was never identified
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        _render_status(readable(status))
    lines = text.getvalue().splitlines()
    assert f"Polling uplink: MQTT 127.0.0.1:{broker_port} NOT connected; {uplink['buffered']} buffered, " \
           f"{uplink['held_until_identified']} held until identified, 0 published" in lines
    assert "Failing meters: SAP 40" in lines
    assert any(line.startswith(f"Polling: running; {polling['polls_ok']} ok, 0 partial, ") for line in lines)
