"""Registry snapshots: every row (live and removed) round-trips; a malformed row from the peer is refused whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.registry.database import open_database
from gateway.registry.snapshot import SnapshotError, decode, encode
from gateway.registry.store import MeterRegistry, MeterState, RegistryError


def test_rows_round_trip_into_a_replica(tmp_path: Path) -> None:
    primary = MeterRegistry(open_database(tmp_path / "primary.db"))
    primary.register(link="bus0", physical_address=17, sap=17, name=b"LGZ1")
    primary.register(link="bus0", physical_address=18, sap=18)
    primary.set_identity(18, name=b"LGZ2", system_title=bytes.fromhex("4C475A0000000002"))
    primary.remove(17)
    replica = MeterRegistry(open_database(tmp_path / "replica.db"))
    with pytest.raises(RegistryError, match="primary"):
        replica.apply_snapshot(decode(encode(primary)))  # only a replica takes rows
    replica.replica = True
    replica.apply_snapshot(decode(encode(primary)))
    assert encode(replica) == encode(primary)
    assert [m.sap for m in replica.meters(state=MeterState.REMOVED)] == [17]  # its SAP stays in quarantine
    live = replica.get(18)
    assert live is not None and live.system_title == bytes.fromhex("4C475A0000000002")


def test_mesh_meters_round_trip_with_their_address_eui64_and_transport(tmp_path: Path) -> None:
    primary = MeterRegistry(open_database(tmp_path / "primary.db"))
    primary.register_ip(link="wisun0", address="fd00::17", eui64=bytes(range(8)), sap=40)
    primary.register_ip(link="wisun0", address="[fd00::18]:4060", sap=41, transport="tcp")
    replica = MeterRegistry(open_database(tmp_path / "replica.db"))
    replica.replica = True
    replica.apply_snapshot(decode(encode(primary)))
    assert encode(replica) == encode(primary)
    tcp = replica.by_ip(link="wisun0", address="[fd00::18]:4060")
    assert replica.by_eui64(bytes(range(8))) == replica.get(40) and tcp is not None and tcp.ip_transport == "tcp"
    # A peer that predates meshes sends serial rows without the new fields: taken as they are.
    new_fields = ("ip_address", "eui64", "ip_transport")
    old = {key: value for key, value in encode(primary)[0].items() if key not in new_fields}
    assert decode([old])[0].ip_address is None
    with pytest.raises(SnapshotError):
        decode([{**encode(primary)[0], "ip_address": "FD00::17"}])  # not canonical: not written by a registry


@pytest.mark.parametrize("rows", [
    {"not": "a list"},
    ["not a row"],
    [{"id": 1}],
    [{"id": "1", "sap": 17, "physical_address": 17, "logical_device": 1, "first_seen": None, "last_seen": None,
      "removed_at": None, "logical_device_name": None, "system_title": None, "link": "bus0",
      "registered_by": "config", "state": "online"}],
    [{"id": 1, "sap": 17, "physical_address": 17, "logical_device": 1, "first_seen": None, "last_seen": None,
      "removed_at": None, "logical_device_name": "zz", "system_title": None, "link": "bus0",
      "registered_by": "config", "state": "online"}],
    [{"id": 1, "sap": 17, "physical_address": 17, "logical_device": 1, "first_seen": None, "last_seen": None,
      "removed_at": None, "logical_device_name": None, "system_title": None, "link": "bus0",
      "registered_by": "config", "state": "lost"}],
])
def test_a_malformed_snapshot_is_refused(rows: object) -> None:
    with pytest.raises(SnapshotError):
        decode(rows)


def test_rows_that_break_the_registry_rules_change_nothing(tmp_path: Path) -> None:
    replica = MeterRegistry(open_database(tmp_path / "replica.db"))
    replica.replica = True
    row = {"id": 1, "sap": 17, "physical_address": 17, "logical_device": 1, "first_seen": None, "last_seen": None,
           "removed_at": None, "logical_device_name": None, "system_title": None, "link": "bus0",
           "registered_by": "config", "state": "online"}
    replica.apply_snapshot(decode([row]))
    twice = [row, {**row, "id": 2, "physical_address": 18}]  # two live meters on SAP 17
    with pytest.raises(RegistryError, match="nothing applied"):
        replica.apply_snapshot(decode(twice))
    assert [(m.sap, m.physical_address) for m in replica.meters()] == [(17, 17)]
