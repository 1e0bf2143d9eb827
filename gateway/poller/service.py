"""The polling service the daemon runs when [poller] enabled = true.

Theory of operation. Every (group, meter) is one target with a due time in one heap. A
dispatcher starts each target's poll when it is due; a poll waits for a place on its line
(``polls_per_line`` at once) and then opens a background data link: the line serves relay links
first, so polling only fills idle medium time and a relay exchange waits at most for the one
polling exchange in flight. A failed attempt is retried after a doubling back-off (off the line
meanwhile); a meter that fails ``failure_threshold`` polls in a row is marked failing (store,
status, MQTT) and tried only every ``failing_interval_s`` until it answers again.

A meter is identified (its logical device name, read through the public client like the relay's
identity read) before its first poll, so every reading is stored, and published, under its name.
Each poll's data link counts its frames and frames sent again into the registry, with the bad-FCS
frames the line's decoder saw from each meter, and says the meter was seen when it answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import itertools
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway.codec.acse import Mechanism
from gateway.codec.errors import LocalProtocolError, RemoteProtocolError
from gateway.codec.hdlc import HdlcAddress
from gateway.codec.obis import obis, obis_text
from gateway.link.client import LinkClient, LinkClientError
from gateway.link.line import MeterLine
from gateway.link.medium import link_settings
from gateway.link.traffic import attribute_bad_frames, count_link
from gateway.poller.client import Credentials, DlmsClient, InvocationCounterRejectedError, PollingError
from gateway.poller.config import DEFAULT_POLLING_KEYS, PollerConfig, PollGroup
from gateway.poller.credentials import (
    CredentialsError,
    DurableCounter,
    PollingKeys,
    counter_name,
    load_polling_keys,
)
from gateway.poller.reading import Column, PollResult, ReadPlan, read_meter
from gateway.poller.store import PollRecord, ReadingsStore
from gateway.registry.store import Meter, MeterRegistry, MeterState, RegistryError

if TYPE_CHECKING:
    from gateway.poller.uplink import MqttUplink

log = structlog.get_logger(__name__)

FAILING_INTERVALS = 4  # a failing meter is tried every four intervals unless configured
RETENTION_INTERVAL_S = 600.0  # how often old readings are dropped
POLL_TIMEOUT_S = 30.0  # one APDU exchange (the link retries frames below this)
NO_CREDENTIALS = Credentials(mechanism=Mechanism.NONE)

Identify = Callable[[int], Awaitable[Meter]]  # reads a meter's logical device name, records it, returns the meter


@dataclass(slots=True)
class _Target:
    group: PollGroup
    plan: ReadPlan
    meter_key: int | str  # as configured: a SAP or a logical device name


def read_plan(group: PollGroup) -> ReadPlan:
    return ReadPlan(clock=group.clock, registers=tuple(obis(t) for t in group.registers),
                    profiles=tuple(obis(t) for t in (*group.profiles, *group.event_logs)),
                    first_read=dt.timedelta(seconds=group.first_read_s))


class PollingService:
    """Schedules and runs polls; started and stopped by the daemon."""

    def __init__(self, *, config: PollerConfig, lines: Mapping[str, MeterLine], registry: MeterRegistry,
                 counters: sqlite3.Connection, store: ReadingsStore, keys: PollingKeys,
                 uplink: MqttUplink | None, identify: Identify, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.uplink = uplink
        self._lines = lines
        self._registry = registry
        self._counters_db = counters
        self._keys = keys
        self._identify = identify
        self._clock = clock
        self._counters: dict[str, DurableCounter] = {}
        self._columns: dict[int, dict[bytes, tuple[Column, ...]]] = {}  # capture objects, per meter and profile
        self._places: dict[str, asyncio.Semaphore] = {}
        self._heap: list[tuple[float, int, _Target]] = []
        self._sequence = itertools.count()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        self.polls_ok = 0
        self.polls_partial = 0
        self.polls_failed = 0
        self.counter_rejections = 0  # meters that said our invocation counter was used before: must stay 0
        self.failing: set[int] = set()
        self.last_poll_at: float | None = None
        self.recorded = 0  # polls recorded since start, any outcome
        self._progress = asyncio.Event()

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the schedules."""
        now = self._clock()
        for group in self.config.groups:
            plan = read_plan(group)
            for key in group.meters:
                self._push(now, _Target(group=group, plan=plan, meter_key=key))
        if self.uplink is not None:
            await self.uplink.start()
        self._dispatcher = asyncio.create_task(self._dispatch(), name="poller")
        self._retention = asyncio.create_task(self._retention_loop(), name="poller-retention")
        log.info("poll.service_started", groups=len(self.config.groups), targets=len(self._heap),
                 uplink=self.uplink is not None)

    async def stop(self) -> None:
        """Stop cleanly: abandon the polls in flight (their links DISC), close the uplink and the store."""
        tasks = [t for t in (self._dispatcher, self._retention) if t is not None] + list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._dispatcher = self._retention = None
        if self.uplink is not None:
            await self.uplink.stop()
        self.store.close()

    def status(self) -> dict[str, Any]:
        return {
            "state": "running" if self._dispatcher is not None else "stopped",
            "groups": len(self.config.groups), "targets": sum(len(g.meters) for g in self.config.groups),
            "polls_ok": self.polls_ok, "polls_partial": self.polls_partial, "polls_failed": self.polls_failed,
            "polling_now": len(self._tasks), "failing_meters": sorted(self.failing),
            "counter_rejections": self.counter_rejections, "last_poll_at": self.last_poll_at,
            "uplink": self.uplink.status() if self.uplink is not None else None,
        }

    async def wait_for_polls(self, count: int, *, timeout_s: float) -> None:
        """Return once ``count`` polls have been recorded since start (for tools and tests)."""
        async with asyncio.timeout(timeout_s):
            while self.recorded < count:
                self._progress.clear()
                await self._progress.wait()

    # -- scheduling ---------------------------------------------------------------------------

    def _push(self, due: float, target: _Target) -> None:
        heapq.heappush(self._heap, (due, next(self._sequence), target))
        self._changed.set()

    async def _dispatch(self) -> None:
        while True:
            if not self._heap:
                self._changed.clear()
                await self._changed.wait()
                continue
            due = self._heap[0][0]
            delay = due - self._clock()
            if delay > 0:
                self._changed.clear()
                alarm = asyncio.get_running_loop().call_later(delay, self._changed.set)
                try:
                    await self._changed.wait()  # due, or an earlier target came in
                finally:
                    alarm.cancel()
                continue
            _, _, target = heapq.heappop(self._heap)
            task = asyncio.create_task(self._run(target, due), name=f"poll-{target.meter_key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, target: _Target, due: float) -> None:
        group = target.group
        interval = group.interval_s
        try:
            meter = self._resolve(target.meter_key)
            if meter is None:
                log.warning("poll.meter_unknown", meter=str(target.meter_key), group=group.name)
            else:
                failures = await self._poll_with_retries(target, meter)
                if failures >= group.failure_threshold:
                    interval = group.failing_interval_s or FAILING_INTERVALS * group.interval_s
        finally:
            self._push(max(due + interval, self._clock()), target)

    def _resolve(self, key: int | str) -> Meter | None:
        meter = self._registry.get(key) if isinstance(key, int) else self._registry.by_name(key.encode())
        return meter if meter is not None and meter.link in self._lines else None

    # -- one poll -----------------------------------------------------------------------------

    async def _poll_with_retries(self, target: _Target, meter: Meter) -> int:
        """Poll one meter, retrying within the window; record the outcome; the meter's failures in a row."""
        group = target.group
        started = self._clock()
        error = "not tried"
        attempts = 0
        for attempt in range(group.retries + 1):
            attempts = attempt + 1
            if attempt:
                await asyncio.sleep(group.retry_backoff_s * 2 ** (attempt - 1))
            try:
                async with self._places.setdefault(meter.link, asyncio.Semaphore(self.config.polls_per_line)):
                    meter = await self._identified(meter)  # before its first poll: one name, one topic
                    result = await self._poll_once(target, meter)
            except (PollingError, LinkClientError, RemoteProtocolError, LocalProtocolError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, InvocationCounterRejectedError):
                    self.counter_rejections += 1
                    log.error("poll.counter_rejected", sap=meter.sap, expected=exc.expected)
                log.info("poll.attempt_failed", sap=meter.sap, attempt=attempts, error=error)
                continue
            outcome = "partial" if result.refused else "ok"
            record = PollRecord(meter_sap=meter.sap, meter_name=meter.name_text or None, group_name=group.name,
                                started_at=started, finished_at=self._clock(), outcome=outcome,
                                error="; ".join(result.refused) or None, attempts=attempts,
                                readings=tuple(result.readings), cursors=tuple(result.cursors))
            self._finish(record)
            return 0
        record = PollRecord(meter_sap=meter.sap, meter_name=meter.name_text or None, group_name=group.name,
                            started_at=started, finished_at=self._clock(), outcome="failed", error=error,
                            attempts=attempts)
        return self._finish(record)

    def _finish(self, record: PollRecord) -> int:
        self.store.record(record)
        self.recorded += 1
        self._progress.set()
        self.last_poll_at = record.finished_at
        health = self.store.health(record.meter_sap)
        failures = health.consecutive_failures if health is not None else 0
        threshold = next((g.failure_threshold for g in self.config.groups if g.name == record.group_name), 1)
        if record.outcome == "failed":
            self.polls_failed += 1
            if failures >= threshold and record.meter_sap not in self.failing:
                self.failing.add(record.meter_sap)
                log.warning("poll.meter_failing", sap=record.meter_sap, failures=failures, error=record.error)
        else:
            if record.outcome == "partial":
                self.polls_partial += 1
            else:
                self.polls_ok += 1
            if record.meter_sap in self.failing:
                self.failing.discard(record.meter_sap)
                log.info("poll.meter_recovered", sap=record.meter_sap)
        log.info("poll.done", sap=record.meter_sap, outcome=record.outcome, readings=len(record.readings),
                 attempts=record.attempts, seconds=round(record.finished_at - record.started_at, 3))
        if self.uplink is not None:
            self.uplink.wake()
        return failures

    async def _identified(self, meter: Meter) -> Meter:
        """The meter with its logical device name, read through the public client if not yet known."""
        if meter.logical_device_name is not None:
            return meter
        try:
            identified = await self._identify(meter.sap)
        except RegistryError as exc:
            raise PollingError(f"identity unknown: {exc}") from None
        self.store.name_meter(meter_sap=meter.sap, meter_name=identified.name_text)  # its held failures go out
        return identified

    async def _poll_once(self, target: _Target, meter: Meter) -> PollResult:
        group = target.group
        credentials = self._credentials(group, meter)
        secured = credentials.ciphered or credentials.mechanism is Mechanism.HLS_GMAC
        counter = self._counter(credentials) if secured else None
        line = self._lines[meter.link]
        address = HdlcAddress.server(logical_device=meter.logical_device, physical_address=meter.physical_address)
        data_link = LinkClient(line, server_address=address, client_sap=group.client_sap,
                               settings=link_settings(line.config), timeout_s=POLL_TIMEOUT_S, background=True)
        try:
            async with data_link as link:
                client = DlmsClient(link, credentials=credentials, counter=counter)
                await client.associate()
                cursors = {obis_source: self.store.cursor(meter_sap=meter.sap, source=obis_source)
                           for obis_source in _sources(target.plan)}
                columns = self._columns.setdefault(meter.sap, {})
                result = await read_meter(client, target.plan, cursors=cursors, columns=columns,
                                          now=dt.datetime.fromtimestamp(self._clock(), dt.UTC))
                await client.release()
                return result
        finally:
            self._note_traffic(meter, line, data_link)

    def _note_traffic(self, meter: Meter, line: MeterLine, data_link: LinkClient) -> None:
        """The poll's frames, frames sent again and bad FCS go to the registry; an answer means the meter is online."""
        registry = self._registry
        count_link(registry, sap=meter.sap, link=data_link.link)
        attribute_bad_frames(registry, line_name=line.name, decoder=line.decoder)
        current = registry.get(meter.sap)
        task = asyncio.current_task()
        if current is None or (task is not None and task.cancelling()):
            return  # removed meanwhile, or the daemon is stopping: silence says nothing about the meter
        if data_link.link.frames_received:
            registry.seen(meter.sap)
            if current.state is not MeterState.ONLINE:
                registry.set_state(meter.sap, MeterState.ONLINE)
        elif current.state is MeterState.ONLINE:
            registry.set_state(meter.sap, MeterState.OFFLINE)

    def _credentials(self, group: PollGroup, meter: Meter) -> Credentials:
        if not group.credentials:
            return self._keys.for_meter(group_credentials="", sap=meter.sap,
                                        name=meter.name_text or None) or NO_CREDENTIALS
        found = self._keys.for_meter(group_credentials=group.credentials, sap=meter.sap, name=meter.name_text or None)
        if found is None:
            raise PollingError(f"no credentials {group.credentials!r} in the polling keys file")
        return found

    def _counter(self, credentials: Credentials) -> DurableCounter:
        name = counter_name(credentials)
        if name not in self._counters:
            self._counters[name] = DurableCounter(self._counters_db, key_name=name)
        return self._counters[name]

    async def _retention_loop(self) -> None:
        while True:
            dropped = self.store.enforce_retention(max_age_s=self.config.retention_days * 86400.0,
                                                   max_bytes=int(self.config.retention_max_mb * 1024 * 1024))
            if dropped:
                log.info("poll.retention", dropped_polls=dropped)
            await asyncio.sleep(RETENTION_INTERVAL_S)


def _sources(plan: ReadPlan) -> list[str]:
    return [obis_text(p) for p in plan.profiles]


def build_poller(config: PollerConfig, *, client_name: str, state_directory: Path, lines: Mapping[str, MeterLine],
                 registry: MeterRegistry, counters: sqlite3.Connection, identify: Identify) -> PollingService | None:
    """The daemon's polling service, or None when polling is off."""
    if not config.enabled:
        return None
    path = Path(config.keys_file) if config.keys_file else DEFAULT_POLLING_KEYS
    try:
        keys = load_polling_keys(path)
    except CredentialsError as exc:
        log.warning("poll.keys_unavailable", error=str(exc), effect="groups with credentials will fail")
        keys = PollingKeys()
    store = ReadingsStore(state_directory / "readings.db")
    uplink = None
    if config.mqtt.host:
        client_id = config.mqtt.client_id or client_name
        from gateway.poller.uplink import MqttUplink  # noqa: PLC0415 - the MQTT client only when it is used

        uplink = MqttUplink(config.mqtt, client_id=client_id, store=store)
    return PollingService(config=config, lines=lines, registry=registry, counters=counters, store=store, keys=keys,
                          uplink=uplink, identify=identify)
