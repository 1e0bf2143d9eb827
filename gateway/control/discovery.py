"""Registration by discovery: probe addresses on a line, read each meter's identity, register it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from gateway.config import ScanConfig
from gateway.core.channel import DownReason
from gateway.core.identity import ChannelClientError, IdentityError, read_identity
from gateway.link.medium import PROBE_RETRIES
from gateway.registry.store import Meter, MeterState, RegistryError

if TYPE_CHECKING:
    from gateway.daemon import Gateway

log = structlog.get_logger(__name__)

IDENTIFY_RETRY_S = 300.0  # a meter that did not answer is asked again this much later


@dataclass(frozen=True, slots=True)
class ScanResult:
    address: int
    sap: int | None
    name: str
    note: str

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "sap": self.sap, "name": self.name, "note": self.note}


async def identify(gateway: Gateway, sap: int) -> Meter:
    """Read a registered meter's logical device name and record it (a moved meter keeps its SAP)."""
    meter = gateway.registry.get(sap)
    if meter is None:
        raise RegistryError(f"no meter with SAP {sap}")
    medium = gateway.media[meter.link]
    try:
        identity = await read_identity(medium, meter=meter.physical_address, logical_device=meter.logical_device)
    except (ChannelClientError, IdentityError) as exc:
        gateway.meter_unreachable(sap)
        raise RegistryError(f"SAP {sap}: {exc}") from None
    updated = gateway.registry.set_identity(sap, name=identity.logical_device_name)
    gateway.registry.seen(updated.sap, rtt_ms=identity.round_trip_ms)
    gateway.registry.set_state(updated.sap, MeterState.ONLINE)
    log.info("registry.identified", sap=updated.sap, meter=updated.name_text, rtt_ms=round(identity.round_trip_ms, 1))
    return updated


async def identify_worker(gateway: Gateway) -> None:
    """Identifies queued meters one at a time (the medium is shared with the relay)."""
    while True:
        sap = await gateway.identify_queue.get()
        try:
            await identify(gateway, sap)
        except RegistryError as exc:
            log.warning("registry.identify_failed", sap=sap, reason=str(exc))
            asyncio.get_running_loop().call_later(IDENTIFY_RETRY_S, _requeue, gateway, sap)


def _requeue(gateway: Gateway, sap: int) -> None:
    meter = gateway.registry.get(sap)
    if meter is not None and meter.logical_device_name is None:
        gateway.identify_queue.put_nowait(sap)


async def scan(gateway: Gateway, *, link: str, first: int, last: int,
               progress: Callable[[Mapping[str, Any]], None] | None = None) -> list[ScanResult]:
    """Probe every address in first..last on a line; register whoever answers."""
    line = gateway.lines.get(link)
    if line is None:
        raise RegistryError(f"no link named {link!r}")
    if not line.is_open:
        raise RegistryError(f"link {link} is down")
    medium = gateway.media[link]
    found: list[ScanResult] = []
    total = last - first + 1
    if progress is not None:  # what the technician is in for: silent addresses dominate a scan
        progress({"done": 0, "total": total, "link": link,
                  "seconds_per_silent_address": (PROBE_RETRIES + 1) * line.config.response_timeout_s})
    for done, address in enumerate(range(first, last + 1), start=1):
        try:
            identity = await read_identity(medium, meter=address, probe=True)
        except asyncio.CancelledError:  # the technician gave up (Ctrl-C): the line is free again at once
            log.info("registry.scan_cancelled", link=link, first=first, last=last, at=address, found=len(found))
            raise
        except ChannelClientError as exc:
            if exc.reason is DownReason.IN_USE:  # a HES holds the public client there: the meter is alive and known
                known = gateway.registry.by_place(link=link, physical_address=address)
                if known is not None:
                    found.append(ScanResult(address, known.sap, known.name_text, "busy with a HES association"))
        except IdentityError as exc:
            found.append(ScanResult(address, None, "", f"answered, no identity: {exc}"))
        else:
            known = gateway.registry.by_place(link=link, physical_address=address)
            try:
                meter = gateway.registry.register(link=link, physical_address=address,
                                                  name=identity.logical_device_name, registered_by="discovery")
                gateway.registry.set_state(meter.sap, MeterState.ONLINE)
                gateway.registry.seen(meter.sap, rtt_ms=identity.round_trip_ms)
                note = "already registered" if known is not None and known.sap == meter.sap else "registered"
                found.append(ScanResult(address, meter.sap, meter.name_text, note))
            except RegistryError as exc:
                found.append(ScanResult(address, None, identity.logical_device_name.hex(), str(exc)))
        if progress is not None:
            progress({"done": done, "total": total, "note": f"address {address}, found {len(found)}"})
    log.info("registry.scan_done", link=link, first=first, last=last, found=len(found))
    return found


async def scan_schedule(gateway: Gateway, config: ScanConfig) -> None:
    """The daemon's periodic scan of a configured range."""
    while True:
        await asyncio.sleep(config.interval_s)
        try:
            await scan(gateway, link=config.link, first=config.first, last=config.last)
        except RegistryError as exc:
            log.warning("registry.scan_failed", link=config.link, reason=str(exc))
