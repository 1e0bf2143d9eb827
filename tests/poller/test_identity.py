"""One identity per polled meter: identified before its first poll, one MQTT topic for life, every
reading stored under its name; and its link statistics in the registry are the frames that
crossed the line (counted by the simulated meters' side), frames sent again and bad FCS."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from pathlib import Path

from gateway.codec.hdlc import FrameKind, HdlcFrameDecoder
from gateway.codec.hdlc.frame import split_frames
from gateway.config import MeterConfig
from gateway.control.commands import Commands
from gateway.poller.config import MqttConfig, PollGroup
from gateway.registry.store import MeterState
from gateway.sim.bus import SimulatedBus
from tests.poller.broker import Broker, Subscriber
from tests.poller.conftest import Gateways, PolledLine, poller_gateway_config, until, write_polling_keys
from tests.poller.meters import READING_CLIENT, reader_settings

PREFIX = "utility-a/dc"
CLIENT_ID = "DLMSGW-TEST-0002"


def name_of(sap: int) -> str:
    return reader_settings(sap - 16).logical_device_name.decode()


async def test_a_polled_meter_has_one_name_and_one_topic_from_its_first_reading(
        tmp_path: Path, reader_line: PolledLine, gateways: Gateways) -> None:
    broker = Broker(tmp_path)
    broker.start()
    subscriber = Subscriber(port=broker.port, prefix=PREFIX)
    subscriber.connect()
    try:
        write_polling_keys(tmp_path / "polling-keys.toml")
        config = poller_gateway_config(
            tmp_path, links=[("bus0", reader_line.pty.slave_path)],
            meters=[MeterConfig(sap=17 + i, link="bus0", physical_address=17 + i) for i in range(4)],
            groups=[PollGroup(name="g", meters=(17, 18, 19, "SIM0000000000004"), credentials="reader",
                              interval_s=0.3, registers=("1.0.1.8.0.255",), profiles=("1.0.99.1.0.255",))],
            mqtt=MqttConfig(host="127.0.0.1", port=broker.port, topic_prefix=PREFIX, client_id=CLIENT_ID))
        # as deployed: the identify worker reads names at start too, racing the first polls
        config = replace(config, registry=replace(config.registry, identify=True))
        gateway = await gateways.start(config)
        poller = gateway.poller
        assert poller is not None and poller.uplink is not None
        uplink = poller.uplink
        await poller.wait_for_polls(12, timeout_s=20)
        await until(lambda: uplink.connected and uplink.status()["buffered"] == 0)
        registry = {sap: gateway.registry.get(sap) for sap in (17, 18, 19, 20)}
        status = poller.status()
        store = poller.store
        by_name = store.count(meter_name=name_of(18))
        by_sap = store.count(meter_sap=18)
        await gateways.stop(gateway)
    finally:
        subscriber.close()
        broker.stop()

    assert status["polls_ok"] >= 12 and status["polls_failed"] == 0
    topics: dict[int, set[str]] = {}
    for topic, payload, _ in subscriber.messages:
        if isinstance(payload, dict):
            assert payload["meter"] == name_of(payload["meter_sap"])
            topics.setdefault(payload["meter_sap"], set()).add(topic)
    assert topics == {sap: {f"{PREFIX}/{CLIENT_ID}/meters/{name_of(sap)}/readings"} for sap in (17, 18, 19, 20)}
    db = sqlite3.connect(tmp_path / "state" / "readings.db")
    assert db.execute("SELECT count(*) FROM readings WHERE meter_name IS NULL OR meter_name = ''").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM polls WHERE meter_name IS NULL OR meter_name = ''").fetchone() == (0,)
    assert by_name == by_sap >= 98  # the first poll's day of profile, clock and register: all under its name
    for sap, meter in registry.items():
        assert meter is not None and meter.name_text == name_of(sap)
        assert meter.state is MeterState.ONLINE and meter.last_seen is not None


class LineWitness:
    """The meters' side of the line: frames each meter exchanged with the reading client, and one FCS spoiled."""

    def __init__(self, bus: SimulatedBus, *, spoil_from: int) -> None:
        self.frames: dict[int, int] = {}  # physical address -> frames to and from the reading client
        self.spoiled: dict[int, int] = {}
        self._spoil_from = spoil_from
        self._heard = HdlcFrameDecoder()
        original = bus.feed

        def feed(data: bytes) -> bytes:
            for frame in self._heard.feed(data, now=time.monotonic()):
                if frame.source.upper == READING_CLIENT and frame.destination.lower is not None:
                    self._count(frame.destination.lower)
            return self._answer(original(data))

        bus.feed = feed  # type: ignore[method-assign]

    def _count(self, address: int) -> None:
        self.frames[address] = self.frames.get(address, 0) + 1

    def _answer(self, data: bytes) -> bytes:
        return b"".join(self._spoil_once(sent) for sent in split_frames(data))

    def _spoil_once(self, sent: bytes) -> bytes:
        (frame,) = HdlcFrameDecoder().feed(sent, now=0.0)
        meter = frame.source.lower
        if frame.destination.upper != READING_CLIENT or meter is None:
            return sent
        self._count(meter)
        if meter != self._spoil_from or frame.kind is not FrameKind.I or self.spoiled:
            return sent
        self.spoiled[meter] = 1
        return sent[:-3] + bytes([sent[-3] ^ 0xFF]) + sent[-2:]  # the FCS: the HCS still vouches for the address


async def test_poll_statistics_are_the_frames_that_crossed_the_line(
        tmp_path: Path, reader_line: PolledLine, gateways: Gateways) -> None:
    witness = LineWitness(reader_line.bus, spoil_from=18)
    write_polling_keys(tmp_path / "polling-keys.toml")
    config = poller_gateway_config(
        tmp_path, links=[("bus0", reader_line.pty.slave_path)],
        meters=[MeterConfig(sap=17, link="bus0", physical_address=17),
                MeterConfig(sap=18, link="bus0", physical_address=18)],
        groups=[PollGroup(name="g", meters=(17, 18), credentials="reader", interval_s=3600,
                          registers=("1.0.1.8.0.255",), profiles=("1.0.99.1.0.255",))])
    gateway = await gateways.start(config)
    assert gateway.poller is not None
    await gateway.poller.wait_for_polls(2, timeout_s=20)
    commands = Commands(gateway)
    details = {sap: await commands.meter({"meter": sap}, lambda _: None) for sap in (17, 18)}
    await gateways.stop(gateway)

    assert witness.spoiled == {18: 1}
    clean, spoiled = details[17], details[18]
    assert (clean["frames"], clean["retries"], clean["crc_errors"]) == (witness.frames[17], 0, 0)
    # the spoiled answer never reached the data link; the request went again, and its answer came
    assert (spoiled["frames"], spoiled["retries"], spoiled["crc_errors"]) == (witness.frames[18] - 1, 1, 1)
    assert clean["frames"] > 20  # a whole poll: SNRM, association with HLS, GETs in blocks, release, DISC
    for detail in details.values():
        assert detail["state"] == "online" and detail["last_seen"] is not None
