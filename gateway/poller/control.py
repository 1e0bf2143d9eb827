"""The control-socket command behind `dlms-gateway readings`: one page of stored readings.

Request: {"command": "readings", "meter": SAP or name (optional), "since": UTC seconds (optional),
"after_id": the last id of the previous page (default 0), "limit": page size (default 1000)}.
Answer: {"total": readings matching, "rows": [...], "last_id": id of the last row or null}.
A meter the gateway never knew (not registered, not removed, no readings stored) is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.control.server import CommandError, Handler, Progress, sap_or_name
from gateway.poller.service import PollingService
from gateway.poller.store import ReadingsStore
from gateway.registry.store import MeterRegistry, MeterState

MAX_PAGE = 10_000  # rows per answer: one JSON line stays a few MB at most


def readings_handlers(*, poller: PollingService | None, registry: MeterRegistry) -> dict[str, Handler]:
    """{"readings": handler} for the control server, handed the poller (None when off) and the registry."""

    async def readings(request: Mapping[str, Any], progress: Progress) -> dict[str, Any]:
        if poller is None:
            raise CommandError("legacy polling is off ([poller] enabled = false): no readings")
        meter = sap_or_name(request, "meter") if request.get("meter") not in (None, "") else None
        meter_sap = meter if isinstance(meter, int) else None
        meter_name = meter if isinstance(meter, str) else None
        since = request.get("since")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int | float)
                                  or not -(2**63) < since < 2**63):  # SQLite holds 64-bit integers
            raise CommandError("'since' is a time in UTC seconds")
        after_id, limit = request.get("after_id", 0), request.get("limit", 1000)
        if type(after_id) is not int or type(limit) is not int or not 1 <= limit <= MAX_PAGE \
                or not 0 <= after_id < 2**63:
            raise CommandError(f"'after_id' is a number and 'limit' 1..{MAX_PAGE}")
        store = poller.store
        if meter is not None and not _known(registry, store, meter_sap=meter_sap, meter_name=meter_name):
            raise CommandError(f"no meter with SAP {meter_sap}" if meter_sap is not None else
                               f"no meter named {str(meter_name)[:40]!r} (give a SAP or a logical device name)")
        rows = store.readings(meter_sap=meter_sap, meter_name=meter_name, since=since, after_id=after_id,
                              limit=limit)
        total = store.count(meter_sap=meter_sap, meter_name=meter_name, since=since)
        return {"total": total, "rows": rows, "last_id": rows[-1]["id"] if rows else None}

    return {"readings": readings}


def _known(registry: MeterRegistry, store: ReadingsStore, *, meter_sap: int | None,
           meter_name: str | None) -> bool:
    """Whether the registry knows the meter (live or removed) or the store holds readings of it."""
    meters = [*registry.meters(), *registry.meters(state=MeterState.REMOVED)]
    if any(m.sap == meter_sap if meter_sap is not None else m.name_text == meter_name for m in meters):
        return True
    return store.count(meter_sap=meter_sap, meter_name=meter_name) > 0
