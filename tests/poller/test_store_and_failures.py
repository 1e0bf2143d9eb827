"""The readings store keeps to its age and size limits; a meter that keeps failing is retried with
back-off, marked failing and then left alone most of the time, while the others are polled on."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from gateway.config import MeterConfig
from gateway.poller.config import PollGroup
from gateway.poller.store import PollRecord, Reading, ReadingsStore
from tests.poller.conftest import Gateways, PolledLine, poller_gateway_config, write_polling_keys


def _poll(index: int, *, readings: int, finished_at: float) -> PollRecord:
    rows = tuple(Reading(source="1.0.99.1.0.255", obis="1.0.1.8.0.255", captured_at=index * 1e6 + i,
                         value="x" * 200, dlms_type="visible-string") for i in range(readings))
    return PollRecord(meter_sap=17, meter_name=None, group_name="g", started_at=finished_at, finished_at=finished_at,
                      outcome="ok", error=None, attempts=1, readings=rows)


def test_retention_by_age_then_by_size(tmp_path: Path) -> None:
    now = 1_800_000_000.0
    store = ReadingsStore(tmp_path / "readings.db", clock=lambda: now)
    try:
        store.record(_poll(0, readings=10, finished_at=now - 40 * 86400))  # older than 30 days
        for index in range(1, 41):
            store.record(_poll(index, readings=100, finished_at=now - index))
        assert store.enforce_retention(max_age_s=30 * 86400, max_bytes=1 << 30) == 1
        assert store.count() == 40 * 100
        limit = store.used_bytes() // 2
        dropped = store.enforce_retention(max_age_s=30 * 86400, max_bytes=limit)
        assert store.used_bytes() <= limit
        assert 15 <= dropped <= 25  # about half, oldest first, not everything
        remaining = [row["captured_at"] // 1e6 for row in store.readings(limit=10_000)]
        assert min(remaining) > 15 and max(remaining) == 40  # the newest polls stayed
    finally:
        store.close()
    assert sqlite3.connect(tmp_path / "readings.db").execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_a_failing_meter_is_marked_and_not_hammered(tmp_path: Path, reader_line: PolledLine,
                                                          gateways: Gateways) -> None:
    write_polling_keys(tmp_path / "polling-keys.toml")
    meters = [MeterConfig(sap=17, link="bus0", physical_address=17),
              MeterConfig(sap=40, link="bus0", physical_address=60)]  # nobody answers at 60
    group = PollGroup(name="g", meters=(17, 40), credentials="reader", interval_s=0.1, registers=("1.0.1.8.0.255",),
                      retries=1, retry_backoff_s=0.05, failure_threshold=2, failing_interval_s=5.0)
    config = poller_gateway_config(tmp_path, links=[("bus0", reader_line.pty.slave_path)], meters=meters,
                                   groups=[group])
    config = replace(config, links=(replace(config.links[0], response_timeout_s=0.05, max_retries=0),))
    gateway = await gateways.start(config)
    poller = gateway.poller
    assert poller is not None
    await poller.wait_for_polls(2, timeout_s=10)
    while poller.status()["polls_ok"] < 15:
        await poller.wait_for_polls(poller.recorded + 1, timeout_s=10)
    status = poller.status()
    health = poller.store.health(40)
    await gateways.stop(gateway)
    assert status["failing_meters"] == [40]
    assert status["polls_failed"] == 2  # then it waits five seconds, while meter 17 is polled on and on
    assert health is not None and health.consecutive_failures == 2 and health.last_success is None
    db = sqlite3.connect(tmp_path / "state" / "readings.db")
    failed = db.execute("SELECT attempts, error, consecutive_failures FROM polls WHERE meter_sap = 40").fetchall()
    assert [(a, f) for a, _, f in failed] == [(2, 1), (2, 2)]  # each poll: the try and one retry
    assert all("no data link" in error for _, error, _ in failed)


def test_failures_of_a_meter_not_yet_identified_wait_for_its_name(tmp_path: Path) -> None:
    store = ReadingsStore(tmp_path / "readings.db")
    try:
        failed = replace(_poll(0, readings=0, finished_at=1.0), meter_sap=40, outcome="failed", error="no answer")
        store.record(failed)
        store.record(replace(_poll(1, readings=2, finished_at=2.0), meter_name="SIM0000000000001"))
        assert [p["meter"] for p in store.unpublished(limit=10)] == ["SIM0000000000001"]
        assert (store.count_unpublished(), store.count_held()) == (1, 1)
        store.name_meter(meter_sap=40, meter_name="SIM0000000000024")
        assert [(p["meter_sap"], p["meter"]) for p in store.unpublished(limit=10)] == [
            (40, "SIM0000000000024"), (17, "SIM0000000000001")]  # oldest first, under its name now
        assert (store.count_unpublished(), store.count_held()) == (2, 0)
    finally:
        store.close()
