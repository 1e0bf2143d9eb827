"""The gateway polls 20 meters (19 of ours with HLS-GMAC and ciphering, one gurux-dlms server with
LLS) on two real ptys; stored readings equal the meters' values and profiles continue without
gaps or duplicates."""

from __future__ import annotations

import datetime as dt
import itertools
import sqlite3
from pathlib import Path

from gateway.codec.axdr import parse_date_time
from gateway.config import MeterConfig
from gateway.poller.config import PollGroup
from gateway.sim.meter import profile_rows
from tests.poller.conftest import START, Gateways, polled_line, poller_gateway_config, write_polling_keys
from tests.poller.gurux_meter import GURUX_PASSWORD, GuruxMeter
from tests.poller.meters import (
    MovableClock,
    build_polled_meter,
    event_rows,
    export_energy_at,
    reader_settings,
)

OURS = 19
GURUX_SAP = 17 + OURS
ADVANCE_S = 2.5 * 3600


def _iso(stamp: bytes) -> float:
    moment = parse_date_time(stamp)
    assert moment is not None
    return moment.replace(tzinfo=dt.UTC).timestamp()


async def test_twenty_meters_polled_and_profiles_continue(
        tmp_path: Path, meter_clock: MovableClock, gateways: Gateways) -> None:
    ours = polled_line([build_polled_meter(reader_settings(1 + i), clock=meter_clock) for i in range(OURS)])
    gurux = GuruxMeter(reader_settings(OURS + 1), clock=meter_clock)
    theirs = polled_line([gurux])
    try:
        write_polling_keys(tmp_path / "polling-keys.toml",
                           extra=f'[credentials.gurux]\nmechanism = "lls"\npassword = "{GURUX_PASSWORD.decode()}"\n')
        meters = [MeterConfig(sap=17 + i, link="bus0", physical_address=17 + i) for i in range(OURS)]
        meters.append(MeterConfig(sap=GURUX_SAP, link="bus1", physical_address=17))
        groups = [
            PollGroup(name="residential", meters=tuple(range(17, 17 + OURS)), credentials="reader", interval_s=1.0,
                      registers=("1.0.1.8.0.255", "1.0.2.8.0.255"), profiles=("1.0.99.1.0.255",),
                      event_logs=("0.0.99.98.0.255",)),
            PollGroup(name="gurux", meters=(GURUX_SAP,), credentials="gurux", interval_s=1.0,
                      registers=("1.0.1.8.0.255", "1.0.2.8.0.255")),
        ]
        config = poller_gateway_config(tmp_path, links=[("bus0", ours.pty.slave_path), ("bus1", theirs.pty.slave_path)],
                                       meters=meters, groups=groups)
        gateway = await gateways.start(config)
        poller = gateway.poller
        assert poller is not None
        await poller.wait_for_polls(2 * (OURS + 1), timeout_s=40)  # every meter at least once
        first_round = poller.recorded
        meter_clock.advance(ADVANCE_S)
        await poller.wait_for_polls(first_round + 2 * (OURS + 1), timeout_s=40)
        status = poller.status()
        await gateways.stop(gateway)
        assert status["polls_failed"] == 0 and status["polls_partial"] == 0, status
        assert status["counter_rejections"] == 0
        for line in (ours, theirs):
            for device in line.devices:
                counters = getattr(device, "counters", None)
                assert counters is None or (counters.replay_rejections, counters.decrypt_failures) == (0, 0)
        assert gurux.requests > 0
    finally:
        ours.close()
        theirs.close()

    db = sqlite3.connect(tmp_path / "state" / "readings.db")
    final = START + dt.timedelta(seconds=ADVANCE_S)
    for index in range(OURS):
        sap, settings = 17 + index, reader_settings(1 + index)
        values = dict(db.execute("SELECT obis, value FROM readings WHERE meter_sap = ? AND source = obis AND"
                                 " captured_at = ?", (sap, START.timestamp())))
        assert values["1.0.1.8.0.255"] == str(settings.energy_at(START))
        assert values["1.0.2.8.0.255"] == str(export_energy_at(settings, START))
        assert values["0.0.1.0.0.255"] == f'"{START.isoformat()}"'
        # The load profile: a day back from the first poll, then on from there after the clock moved.
        stored = db.execute("SELECT captured_at, value FROM readings WHERE meter_sap = ? AND source = ?"
                            " ORDER BY captured_at", (sap, "1.0.99.1.0.255")).fetchall()
        rows = profile_rows(settings, START) + profile_rows(settings, final)
        expected = {_iso(t.value): str(v.value) for t, v in rows}
        expected = {t: v for t, v in expected.items() if t >= (START - dt.timedelta(days=1)).timestamp()}
        assert [t for t, _ in stored] == sorted(expected), f"meter {sap}: gaps or duplicates"
        assert dict(stored) == expected
        steps = {b - a for (a, _), (b, _) in itertools.pairwise(stored)}
        assert steps == {900.0}
        events = db.execute("SELECT captured_at, value FROM readings WHERE meter_sap = ? AND source = ?"
                            " ORDER BY captured_at", (sap, "0.0.99.98.0.255")).fetchall()
        wanted = {_iso(t.value): str(c.value) for t, c in event_rows(settings, START) + event_rows(settings, final)
                  if _iso(t.value) >= (START - dt.timedelta(days=1)).timestamp()}
        assert dict(events) == wanted and len(events) == len(wanted)
    gurux_values = dict(db.execute("SELECT obis, value FROM readings WHERE meter_sap = ? AND captured_at = ?",
                                   (GURUX_SAP, final.timestamp())))
    settings = reader_settings(OURS + 1)
    assert gurux_values == {"0.0.1.0.0.255": f'"{final.isoformat()}"', "1.0.1.8.0.255": str(settings.energy_at(final)),
                        "1.0.2.8.0.255": str(export_energy_at(settings, final))}
    (duplicates,) = db.execute("SELECT count(*) - count(DISTINCT meter_sap || source || obis || captured_at)"
                               " FROM readings").fetchone()
    assert duplicates == 0
