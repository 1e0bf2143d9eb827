"""Registration by discovery: probe addresses on a line, read each meter's identity, register it."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from gateway.config import ScanConfig
from gateway.core.channel import DownReason, MeterAddress, MeterMedium
from gateway.core.identity import ChannelClientError, IdentityError, read_identity
from gateway.link.line import MeterLine
from gateway.link.medium import PROBE_RETRIES
from gateway.registry.store import Meter, MeterRegistry, MeterState, RegistryError


class DiscoveryHost(Protocol):
    """What identity reads and scans need of the running gateway, and nothing more."""

    @property
    def registry(self) -> MeterRegistry: ...

    @property
    def media(self) -> Mapping[str, MeterMedium]: ...

    @property
    def lines(self) -> Mapping[str, MeterLine]: ...

    @property
    def identity_reads(self) -> dict[int, asyncio.Task[Meter]]: ...

    @property
    def identify_queue(self) -> asyncio.Queue[int]: ...

    def meter_unreachable(self, sap: int) -> None: ...

    def meter_address(self, meter: Meter) -> MeterAddress | None:
        """The meter's address on its medium (None: no usable one)."""
        ...

log = structlog.get_logger(__name__)

# A meter that did not answer its identity read is asked again after IDENTIFY_RETRY_MIN_S, then
# twice as long after each further failure, up to IDENTIFY_RETRY_MAX_S: a forged address costs
# the line a few attempts a day, not one every five minutes for ever.
IDENTIFY_RETRY_MIN_S = 300.0
IDENTIFY_RETRY_MAX_S = 6 * 3600.0
# Identity reads yield to the HES: one starts only once relay exchanges have left its line idle
# for RELAY_QUIET_S, or after RELAY_WAIT_MAX_S of waiting (a HES that never pauses); it then runs
# at background priority, so each relay exchange waits at most for one frame of ours in flight.
RELAY_QUIET_S = 2.0
RELAY_WAIT_MAX_S = 300.0


@dataclass(frozen=True, slots=True)
class ScanResult:
    address: int
    sap: int | None
    name: str
    note: str

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address, "sap": self.sap, "name": self.name, "note": self.note}


async def identify(gateway: DiscoveryHost, sap: int, *, background: bool = False) -> Meter:
    """Read a registered meter's logical device name and record it (a moved meter keeps its SAP).

    One read per meter at a time: a caller that finds one under way (the poller and the identify
    worker at start) waits for its answer instead of opening a second public association. A
    caller that is cancelled (an interrupted ping) leaves the read to the others.
    """
    reading = gateway.identity_reads.get(sap)
    if reading is None:
        reading = asyncio.create_task(_identify(gateway, sap, background=background), name=f"identify-{sap}")
        gateway.identity_reads[sap] = reading
        reading.add_done_callback(functools.partial(_read_done, gateway.identity_reads, sap))
    return await asyncio.shield(reading)


def _read_done(reads: dict[int, asyncio.Task[Meter]], sap: int, reading: asyncio.Task[Meter]) -> None:
    if reads.get(sap) is reading:
        del reads[sap]
    if not reading.cancelled():
        reading.exception()  # retrieved: each waiter got it already, or none is left to care


async def _identify(gateway: DiscoveryHost, sap: int, *, background: bool) -> Meter:
    meter = gateway.registry.get(sap)
    if meter is None:
        raise RegistryError(f"no meter with SAP {sap}")
    medium = gateway.media.get(meter.link)
    if medium is None:
        raise RegistryError(f"SAP {sap}: no link named {meter.link!r}")
    address = gateway.meter_address(meter)
    if address is None:  # a row from before the registry checked addresses
        raise RegistryError(f"SAP {sap}: no usable address on {meter.link}")
    try:
        identity = await read_identity(medium, meter=address, logical_device=meter.logical_device,
                                       background=background)
    except (ChannelClientError, IdentityError) as exc:
        gateway.meter_unreachable(sap)
        raise RegistryError(f"SAP {sap}: {exc}") from None
    updated = gateway.registry.set_identity(sap, name=identity.logical_device_name)
    gateway.registry.seen(updated.sap, rtt_ms=identity.round_trip_ms)
    gateway.registry.set_state(updated.sap, MeterState.ONLINE)
    log.info("registry.identified", sap=updated.sap, meter=updated.name_text, rtt_ms=round(identity.round_trip_ms, 1))
    return updated


async def identify_worker(gateway: DiscoveryHost) -> None:
    """Identifies queued meters one at a time, yielding the line to the relay; retries back off per meter."""
    failures: dict[int, int] = {}  # SAP -> identity reads failed in a row
    retrying: set[int] = set()  # SAPs with a retry scheduled: a meter queued twice is not retried twice
    while True:
        sap = await gateway.identify_queue.get()
        try:
            meter = gateway.registry.get(sap)
            if meter is None or meter.logical_device_name is not None or sap in retrying:
                continue  # removed, identified meanwhile, or already waiting for its retry
            line = gateway.lines.get(meter.link)
            if line is not None:
                await _relay_quiet(line)
            await identify(gateway, sap, background=True)
            failures.pop(sap, None)
        except RegistryError as exc:
            failures[sap] = failures.get(sap, 0) + 1
            retry_s = min(IDENTIFY_RETRY_MIN_S * 2 ** (failures[sap] - 1), IDENTIFY_RETRY_MAX_S)
            log.warning("registry.identify_failed", sap=sap, reason=str(exc), failures=failures[sap],
                        retry_in_s=retry_s)
            retrying.add(sap)
            asyncio.get_running_loop().call_later(retry_s, _requeue, gateway, sap, retrying)
        finally:
            gateway.identify_queue.task_done()


async def _relay_quiet(line: MeterLine) -> None:
    """Wait until no relay exchange has used the line for RELAY_QUIET_S (RELAY_WAIT_MAX_S at most)."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + RELAY_WAIT_MAX_S
    # Quiet is the absence of events for a while: the clock, not an Event, tells when it is reached.
    while (idle := line.relay_idle_s()) < RELAY_QUIET_S and loop.time() < give_up_at:  # noqa: ASYNC110
        await asyncio.sleep(min(RELAY_QUIET_S - idle, give_up_at - loop.time()))


def _requeue(gateway: DiscoveryHost, sap: int, retrying: set[int]) -> None:
    retrying.discard(sap)
    meter = gateway.registry.get(sap)
    if meter is not None and meter.logical_device_name is None:
        gateway.identify_queue.put_nowait(sap)


async def scan(gateway: DiscoveryHost, *, link: str, first: int, last: int,
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


async def scan_schedule(gateway: DiscoveryHost, config: ScanConfig) -> None:
    """The daemon's periodic scan of a configured range."""
    while True:
        await asyncio.sleep(config.interval_s)
        try:
            await scan(gateway, link=config.link, first=config.first, last=config.last)
        except RegistryError as exc:
            log.warning("registry.scan_failed", link=config.link, reason=str(exc))
