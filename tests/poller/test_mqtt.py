"""Readings reach a real Mosquitto broker; with the broker stopped they wait in the store and arrive
after it restarts; the retained status says online, and offline after a clean stop."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from gateway.config import MeterConfig
from gateway.poller.config import MqttConfig, PollGroup
from tests.poller.broker import Broker, Subscriber
from tests.poller.conftest import Gateways, PolledLine, poller_gateway_config, until, write_polling_keys
from tests.poller.meters import reader_settings

PREFIX = "utility-a/dc"
CLIENT_ID = "DLMSGW-TEST-0001"


async def test_every_reading_reaches_the_broker_and_waits_while_it_is_away(
        tmp_path: Path, reader_line: PolledLine, gateways: Gateways) -> None:
    broker = Broker(tmp_path)
    broker.start()
    first = Subscriber(port=broker.port, prefix=PREFIX)
    second = Subscriber(port=broker.port, prefix=PREFIX)
    first.connect()
    try:
        write_polling_keys(tmp_path / "polling-keys.toml")
        config = poller_gateway_config(
            tmp_path, links=[("bus0", reader_line.pty.slave_path)],
            meters=[MeterConfig(sap=17 + i, link="bus0", physical_address=17 + i) for i in range(4)],
            groups=[PollGroup(name="g", meters=(17, 18, 19, 20), credentials="reader", interval_s=0.3,
                              registers=("1.0.1.8.0.255",), profiles=("1.0.99.1.0.255",))],
            mqtt=MqttConfig(host="127.0.0.1", port=broker.port, topic_prefix=PREFIX, client_id=CLIENT_ID,
                            reconnect_min_s=1.0, reconnect_max_s=2.0, keepalive_s=5))
        gateway = await gateways.start(config)
        poller = gateway.poller
        assert poller is not None and poller.uplink is not None
        uplink = poller.uplink
        await poller.wait_for_polls(8, timeout_s=15)
        await until(lambda: uplink.connected and uplink.status()["buffered"] == 0)
        assert (f"{PREFIX}/{CLIENT_ID}/status", "online", False) in first.snapshot()

        broker.stop()  # the broker goes away: polling goes on, readings wait in the store
        first.close()
        await until(lambda: not uplink.connected)
        before = poller.recorded
        await poller.wait_for_polls(before + 8, timeout_s=15)
        buffered = uplink.status()["buffered"]
        assert buffered >= 8

        broker.start()
        second.connect()  # before the gateway's reconnect (at least a second later)
        await until(lambda: uplink.connected and uplink.status()["buffered"] == 0)
        await gateways.stop(gateway)
        await until(lambda: (f"{PREFIX}/{CLIENT_ID}/status", "offline", False) in second.snapshot())
        # A late subscriber gets the retained status.
        late = Subscriber(port=broker.port, prefix=PREFIX)
        late.connect()
        await until(lambda: any(t.endswith("/status") for t, _, _ in late.snapshot()))
        assert (f"{PREFIX}/{CLIENT_ID}/status", "offline", True) in late.snapshot()
        late.close()
    finally:
        first.close()
        second.close()
        broker.stop()

    db = sqlite3.connect(tmp_path / "state" / "readings.db")
    (unpublished,) = db.execute("SELECT count(*) FROM polls WHERE published = 0").fetchone()
    assert unpublished == 0
    stored: dict[int, set[tuple[str, float, str]]] = {}
    for (poll_id,) in db.execute("SELECT id FROM polls"):
        stored[poll_id] = {(obis, captured_at, value) for obis, captured_at, value in db.execute(
            "SELECT obis, captured_at, value FROM readings WHERE poll_id = ?", (poll_id,))}
    received: dict[int, set[tuple[str, float, str]]] = {}
    for topic, payload, _ in first.messages + second.messages:
        if isinstance(payload, dict):
            name = reader_settings(payload["meter_sap"] - 16).logical_device_name.decode()  # identified first
            assert (topic, payload["meter"]) == (f"{PREFIX}/{CLIENT_ID}/meters/{name}/readings", name)
            received[payload["poll_id"]] = {(r["obis"], r["captured_at"], json.dumps(r["value"]))
                                            for r in payload["readings"]}
    assert received == stored  # every poll, with every reading, exactly as stored
    assert sum(len(r) for r in received.values()) > 4 * 96  # the profiles too
