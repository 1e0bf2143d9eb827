"""The registry: a real SQLite file, stable SAPs, quarantine, moves, migrations."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import ConfigError, parse_config
from gateway.registry.database import SCHEMA_VERSION, DatabaseError, open_database
from gateway.registry.store import MeterRegistry, MeterState, RegistryError, SapPolicy

FIXTURES = Path(__file__).parent.parent / "vectors"
DAY = 24 * 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "registry.db"


@pytest.fixture
def registry(db_path: Path, clock: Clock) -> Iterator[MeterRegistry]:
    connection = open_database(db_path)
    yield MeterRegistry(connection, policy=SapPolicy(first=17, last=100, quarantine_s=7 * DAY), clock=clock)
    connection.close()


def reopen(db_path: Path, clock: Clock) -> MeterRegistry:
    return MeterRegistry(open_database(db_path), policy=SapPolicy(first=17, last=100, quarantine_s=7 * DAY),
                         clock=clock)


def test_saps_are_allocated_from_the_range_and_survive_a_restart(
    registry: MeterRegistry, db_path: Path, clock: Clock
) -> None:
    saps = [registry.register(link="bus0", physical_address=a).sap for a in (40, 17, 33)]
    assert saps == [17, 18, 19]
    chosen = registry.register(link="bus0", physical_address=50, sap=77)
    assert chosen.sap == 77
    again = reopen(db_path, clock)
    assert [(m.sap, m.physical_address) for m in again.meters()] == [(17, 40), (18, 17), (19, 33), (77, 50)]


def test_registering_the_same_place_twice_is_idempotent(registry: MeterRegistry) -> None:
    first = registry.register(link="bus0", physical_address=40)
    assert registry.register(link="bus0", physical_address=40) == first
    with pytest.raises(RegistryError, match="already registered with SAP 17"):
        registry.register(link="bus0", physical_address=40, sap=30)


def test_a_meter_that_moves_keeps_its_sap(registry: MeterRegistry, db_path: Path, clock: Clock) -> None:
    meter = registry.register(link="bus0", physical_address=40, name=b"SIM0000000000001")
    registry.register(link="bus0", physical_address=41, name=b"SIM0000000000002")
    moved = registry.register(link="bus1", physical_address=90, name=b"SIM0000000000001", registered_by="discovery")
    assert moved.sap == meter.sap
    assert moved.place == ("bus1", 90, 1)
    assert registry.by_place(link="bus0", physical_address=40) is None
    assert reopen(db_path, clock).get(meter.sap).place == ("bus1", 90, 1)  # type: ignore[union-attr]


def test_identity_read_at_a_new_address_merges_into_the_known_meter(registry: MeterRegistry) -> None:
    known = registry.register(link="bus0", physical_address=40, name=b"SIM0000000000001")
    found = registry.register(link="bus0", physical_address=55)  # scan found someone, identity unknown
    assert found.sap != known.sap
    merged = registry.set_identity(found.sap, name=b"SIM0000000000001")
    assert merged.sap == known.sap
    assert merged.physical_address == 55
    assert registry.get(found.sap) is None
    assert len(registry) == 1


def test_removed_sap_is_quarantined_then_reused(registry: MeterRegistry, clock: Clock) -> None:
    a = registry.register(link="bus0", physical_address=40, name=b"A")
    registry.register(link="bus0", physical_address=41, name=b"B")
    registry.remove(a.sap)
    c = registry.register(link="bus0", physical_address=42, name=b"C")
    assert c.sap != a.sap
    with pytest.raises(RegistryError, match="quarantine"):
        registry.register(link="bus0", physical_address=43, sap=a.sap)
    clock.now += 8 * DAY
    d = registry.register(link="bus0", physical_address=44, name=b"D")
    assert d.sap == a.sap


def test_a_removed_meter_that_returns_gets_its_sap_back(registry: MeterRegistry) -> None:
    a = registry.register(link="bus0", physical_address=40, name=b"A")
    registry.remove(a.sap)
    back = registry.register(link="bus0", physical_address=60, name=b"A")
    assert back.sap == a.sap


def test_sap_one_and_taken_saps_are_refused(registry: MeterRegistry) -> None:
    registry.register(link="bus0", physical_address=40, sap=20)
    with pytest.raises(RegistryError, match="gateway itself"):
        registry.register(link="bus0", physical_address=41, sap=1)
    with pytest.raises(RegistryError, match="another meter"):
        registry.register(link="bus0", physical_address=41, sap=20)


def test_hot_values_are_batched_until_flush(registry: MeterRegistry, db_path: Path, clock: Clock) -> None:
    meter = registry.register(link="bus0", physical_address=40)
    for _ in range(100):
        registry.seen(meter.sap, frames=2, rtt_ms=12.5)
    assert registry.get(meter.sap).stats.frames == 200  # type: ignore[union-attr]
    assert reopen(db_path, clock).get(meter.sap).stats.frames == 0  # type: ignore[union-attr]
    assert registry.flush() == 1
    stored = reopen(db_path, clock).get(meter.sap)
    assert stored is not None
    assert (stored.stats.frames, stored.stats.last_rtt_ms, stored.last_seen) == (200, 12.5, clock.now)


def test_a_flush_of_hot_values_leaves_registrations_durable(db_path: Path, clock: Clock) -> None:
    connection = open_database(db_path)
    try:
        registry = MeterRegistry(connection, clock=clock)
        meter = registry.register(link="bus0", physical_address=40)
        registry.seen(meter.sap, frames=1)
        assert registry.flush() == 1
        # last_seen is written without an fsync of its own; what follows (a registration) is FULL again
        assert connection.execute("PRAGMA synchronous").fetchone() == (2,)
        assert reopen(db_path, clock).get(meter.sap).stats.frames == 1  # type: ignore[union-attr]
    finally:
        connection.close()


def test_state_changes_persist(registry: MeterRegistry, db_path: Path, clock: Clock) -> None:
    meter = registry.register(link="bus0", physical_address=40)
    registry.set_state(meter.sap, MeterState.ONLINE)
    assert reopen(db_path, clock).get(meter.sap).state is MeterState.ONLINE  # type: ignore[union-attr]


def test_a_version_1_database_opens_and_migrates(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "old.db"
    shutil.copy(FIXTURES / "registry_v1.db", path)
    registry = MeterRegistry(open_database(path), clock=clock)
    assert [(m.sap, m.name_text, m.state) for m in registry.meters()] == [
        (17, "SIM0000000000001", MeterState.ONLINE),
        (18, "SIM0000000000002", MeterState.ONLINE),
        (19, "", MeterState.ONLINE),
    ]
    assert registry.meters(state=MeterState.REMOVED)[0].sap == 20
    assert registry.get(17).registered_by == "provisioning"  # type: ignore[union-attr]
    (version,) = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION
    registry.seen(17, frames=3)
    assert registry.flush() == 1


def test_a_newer_database_is_refused(db_path: Path) -> None:
    connection = sqlite3.connect(db_path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(DatabaseError, match="newer than this gateway supports"):
        open_database(db_path)


def test_a_failed_migration_leaves_the_old_schema(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    shutil.copy(FIXTURES / "registry_v1.db", path)
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE link_stats (x)")  # makes migration 2 fail half-way
    connection.close()
    with pytest.raises(DatabaseError):
        open_database(path)
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA user_version").fetchone() == (1,)
    columns = [row[1] for row in connection.execute("PRAGMA table_info(meters)")]
    assert "system_title" not in columns  # the ALTER of migration 2 was rolled back too


def test_a_corrupt_file_is_refused_with_its_name(db_path: Path) -> None:
    db_path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
    with pytest.raises(DatabaseError, match=str(db_path.name)):
        open_database(db_path)


def test_changing_a_sap_quarantines_the_old_one(registry: MeterRegistry, db_path: Path, clock: Clock) -> None:
    meter = registry.register(link="bus0", physical_address=40, name=b"A")
    moved = registry.change_sap(meter.sap, 90)
    assert moved.sap == 90
    assert registry.get(meter.sap) is None
    with pytest.raises(RegistryError, match="quarantine"):
        registry.register(link="bus0", physical_address=41, sap=meter.sap)
    again = reopen(db_path, clock)
    assert again.get(90).name_text == "A"  # type: ignore[union-attr]
    with pytest.raises(RegistryError, match="quarantine"):
        again.register(link="bus0", physical_address=41, sap=meter.sap)


@pytest.mark.parametrize(("physical_address", "logical_device"),
                         [(999999, 1), (-1, 1), (0, 1), (16382, 1), (16383, 1), (17, 99999), (17, 0)])
def test_the_registry_refuses_what_the_configuration_refuses(
    registry: MeterRegistry, db_path: Path, clock: Clock, physical_address: int, logical_device: int
) -> None:
    config = f'[[links]]\nname = "bus0"\ndevice = "/dev/null"\n\n[[meters]]\nsap = 17\nlink = "bus0"\n' \
        f"physical_address = {physical_address}\nlogical_device = {logical_device}\n"
    with pytest.raises(ConfigError, match="IEC 62056-46"):
        parse_config(config)
    with pytest.raises(RegistryError, match="IEC 62056-46"):
        registry.register(link="bus0", physical_address=physical_address, logical_device=logical_device)
    assert len(reopen(db_path, clock)) == 0


def test_a_version_3_database_gains_mesh_meters_beside_its_serial_ones(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "v3.db"
    shutil.copy(FIXTURES / "registry_v3.db", path)
    registry = reopen(path, clock)
    assert [(m.sap, m.place) for m in registry.meters()] == [(17, ("bus0", 17, 1)), (18, ("bus0", 18, 1))]
    meter = registry.register_ip(link="wisun0", address="FD00::0017", eui64=bytes(range(8)), registered_by="config")
    other = registry.register_ip(link="wisun0", address="fd00::18")  # physical_address 0 for both: no clash
    assert (meter.sap, meter.place, meter.address_text) == (19, ("wisun0", "fd00::17", 1), "fd00::17")
    assert other.sap == 20 and registry.by_ip(link="wisun0", address="fd00:0::17") == meter


def test_a_mesh_meter_keeps_its_sap_when_its_address_changes(
    registry: MeterRegistry, db_path: Path, clock: Clock
) -> None:
    eui64 = bytes.fromhex("0011223344556677")
    meter = registry.register_ip(link="wisun0", address="fd00::17", eui64=eui64)
    assert registry.register_ip(link="wisun0", address="fd00::17", eui64=eui64) == meter  # idempotent
    # Prefix renumbering: the same EUI-64 at a new address keeps its SAP.
    moved = registry.register_ip(link="wisun0", address="fd01::17", eui64=eui64)
    assert (moved.sap, moved.ip_address) == (meter.sap, "fd01::17")
    assert registry.by_ip(link="wisun0", address="fd00::17") is None
    # Another meter takes the old address: a new SAP, and the first keeps its own.
    newcomer = registry.register_ip(link="wisun0", address="fd00::17", eui64=bytes(8))
    assert newcomer.sap != meter.sap
    # Without EUI-64 the logical device name is the identity, as on a line.
    named = registry.register_ip(link="wisun0", address="fd00::40", name=b"LGZ0000000000040")
    again = registry.register_ip(link="wisun0", address="fd00::41")
    assert registry.set_identity(again.sap, name=b"LGZ0000000000040").sap == named.sap
    reopened = reopen(db_path, clock)
    assert reopened.by_eui64(eui64) == registry.get(meter.sap)
    assert reopened.by_ip(link="wisun0", address="fd00::41").sap == named.sap  # type: ignore[union-attr]
    with pytest.raises(RegistryError, match="IPv6"):
        registry.register_ip(link="wisun0", address="10.0.0.1")


def test_the_all_station_sap_is_never_given_unasked_yet_a_configured_meter_keeps_it(tmp_path: Path,
                                                                                    clock: Clock) -> None:
    registry = MeterRegistry(open_database(tmp_path / "r.db"), policy=SapPolicy(first=125, last=130), clock=clock)
    saps = [registry.register(link="bus0", physical_address=address).sap for address in range(16, 21)]
    assert saps == [125, 126, 128, 129, 130]  # 127: all-station, the gateway's broadcast wPort
    # a configuration written before broadcasts existed (or a test tool's) may name SAP 127: it still starts
    config = parse_config('[[links]]\nname = "bus0"\ndevice = "/dev/null"\n[[meters]]\nsap = 127\nlink = "bus0"\n'
                          "physical_address = 17\n")
    assert [meter.sap for meter in config.meters] == [127]
    assert registry.register(link="bus0", physical_address=200, sap=127).sap == 127


def test_seen_per_apdu_is_cheap_yet_the_newest_time_is_written(registry: MeterRegistry, db_path: Path,
                                                               clock: Clock) -> None:
    meter = registry.register(link="bus0", physical_address=40)
    registry.seen(meter.sap)
    first = clock.now
    clock.now += 0.4
    registry.seen(meter.sap)  # within the resolution: the meter in memory is not renewed for each APDU
    assert registry.get(meter.sap).last_seen == first  # type: ignore[union-attr]
    assert registry.get(meter.sap).stats.frames == 0  # type: ignore[union-attr]  # an APDU is not a frame
    registry.flush()
    assert reopen(db_path, clock).get(meter.sap).last_seen == first + 0.4  # type: ignore[union-attr]
    assert registry.get(meter.sap).last_seen == first + 0.4  # type: ignore[union-attr]
    clock.now += 5.0
    registry.seen(meter.sap)  # past the resolution: at once
    assert registry.get(meter.sap).last_seen == clock.now  # type: ignore[union-attr]
