"""The registry as plain data for the standby: every meter row, live and removed, as JSON-able values.

A snapshot carries places, SAPs, identities (logical device name, system title), states and the
tombstones that hold SAPs in quarantine. It never carries a key: the registry holds none.
"""

from __future__ import annotations

from typing import Any

from gateway.registry.store import TRANSPORTS, Meter, MeterRegistry, MeterState, RegistryError, canonical_ip

EUI64_LENGTH = 8

_BLOBS = ("logical_device_name", "system_title")
_NUMBERS = ("id", "sap", "physical_address", "logical_device")
_TIMES = ("first_seen", "last_seen", "removed_at")


class SnapshotError(Exception):
    """A snapshot that does not describe meter rows."""


def encode(registry: MeterRegistry) -> list[dict[str, Any]]:
    return [{
        "id": m.id, "sap": m.sap, "link": m.link, "physical_address": m.physical_address,
        "logical_device": m.logical_device, "state": m.state.value, "registered_by": m.registered_by,
        "logical_device_name": None if m.logical_device_name is None else m.logical_device_name.hex(),
        "system_title": None if m.system_title is None else m.system_title.hex(),
        "first_seen": m.first_seen, "last_seen": m.last_seen, "removed_at": m.removed_at,
        "ip_address": m.ip_address, "eui64": None if m.eui64 is None else m.eui64.hex(),
        "ip_transport": m.ip_transport,
    } for m in registry.rows()]


def decode(rows: object) -> list[Meter]:
    """Rows from the peer, checked field by field (authenticated is not the same as well-formed)."""
    if not isinstance(rows, list):
        raise SnapshotError("a snapshot is a list of meter rows")
    return [_row(row) for row in rows]


def _row(row: object) -> Meter:
    if not isinstance(row, dict):
        raise SnapshotError("a meter row is an object")
    try:
        numbers = {key: row[key] for key in _NUMBERS}
        if not all(type(value) is int for value in numbers.values()):
            raise SnapshotError(f"row fields {', '.join(_NUMBERS)} must be whole numbers")
        times = {key: row[key] for key in _TIMES}
        if not all(value is None or isinstance(value, int | float) for value in times.values()):
            raise SnapshotError("row times must be numbers or null")
        name, title = (None if row[key] is None else bytes.fromhex(row[key]) for key in _BLOBS)
        if not isinstance(row["link"], str) or not isinstance(row["registered_by"], str):
            raise SnapshotError("link and registered_by must be strings")
        # a mesh meter's address (absent from a peer that predates meshes: a serial row)
        ip_address, eui64_hex, transport = row.get("ip_address"), row.get("eui64"), row.get("ip_transport", "udp")
        if ip_address is not None and (not isinstance(ip_address, str) or canonical_ip(ip_address) != ip_address):
            raise SnapshotError("ip_address must be a canonical IPv6 endpoint or null")
        eui64 = None if eui64_hex is None else bytes.fromhex(eui64_hex)
        if (eui64 is not None and len(eui64) != EUI64_LENGTH) or transport not in TRANSPORTS:
            raise SnapshotError("eui64 must be 8 bytes or null, ip_transport udp or tcp")
        return Meter(id=numbers["id"], sap=numbers["sap"], physical_address=numbers["physical_address"],
                     logical_device=numbers["logical_device"], first_seen=times["first_seen"],
                     last_seen=times["last_seen"], removed_at=times["removed_at"], logical_device_name=name,
                     system_title=title, link=row["link"], registered_by=row["registered_by"],
                     state=MeterState(row["state"]), ip_address=ip_address, eui64=eui64, ip_transport=transport)
    except RegistryError as exc:
        raise SnapshotError(f"a malformed meter row ({exc})") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"a malformed meter row ({type(exc).__name__}: {exc})") from None
