"""Prometheus metrics: the numbers of `status --json`, scraped over HTTP; off unless [metrics] listen is set.

Theory of operation. Nothing is counted twice: the collector reads the same snapshot the
`status` command returns, at scrape time, in the event loop (the HTTP endpoint is served by
asyncio, not by prometheus-client's thread, so a scrape never reads state the loop is changing).
prometheus-client does the exposition format. The endpoint answers `GET /metrics` and nothing
else, to a bounded number of scrapers at a time, each with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gateway.config import MetricsConfig

log = structlog.get_logger(__name__)

PREFIX = "dlms_gateway"
MAX_SCRAPERS = 4  # connections served at once; more are closed at once
REQUEST_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 8192

Snapshot = Callable[[], Mapping[str, Any]]


def _counter(name: str, documentation: str, labels: tuple[str, ...] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", documentation, labels=list(labels))


def _gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=list(labels))


def metrics_from(status: Mapping[str, Any]) -> Iterator[Metric]:
    """The documented metrics (README, "Metrics"), from one status snapshot."""
    uptime = _gauge("uptime_seconds", "Seconds since the daemon started")
    uptime.add_metric([], status["uptime_s"])
    yield uptime

    wan = status["wan"]
    pdus = _counter("wan_pdus", "Wrapper PDUs exchanged with HES connections", ("direction",))
    pdus.add_metric(["in"], wan["pdus_in"])
    pdus.add_metric(["out"], wan["pdus_out"])
    yield pdus
    connections = _gauge("wan_connections", "HES connections open now")
    connections.add_metric([], len(wan["peers"]))
    yield connections
    refused = _counter("wan_refused", "HES connections refused, by reason", ("reason",))
    for reason, count in sorted(wan["refused"].items()):
        refused.add_metric([reason], count)
    yield refused
    cut_off = _counter("wan_cut_off", "HES connections cut off, by reason", ("reason",))
    for reason, count in sorted(wan["cut_off"].items()):
        cut_off.add_metric([reason], count)
    yield cut_off

    yield from _line_metrics(status["links"])

    sessions = _gauge("sessions", "HES associations being relayed to meters")
    sessions.add_metric([], status["sessions"])
    yield sessions
    rejections = _counter("rejections", "HES requests refused with a DLMS answer (unknown SAP, busy, ...)")
    rejections.add_metric([], status["rejections"])
    yield rejections
    meters = _gauge("meters", "Meters in the registry, by state", ("state",))
    for state, count in sorted(status["meters"].items()):
        meters.add_metric([state], count)
    yield meters

    yield from _push_metrics(status["push_queue"], status["push_registrations"])

    restarts = _counter("worker_restarts", "Long-lived workers restarted after a crash", ("worker",))
    for worker, count in sorted(status["worker_restarts"].items()):
        restarts.add_metric([worker], count)
    yield restarts

    yield from _polling_metrics(status["polling"])
    yield from _standby_metrics(status["standby"])


def _standby_metrics(standby: Mapping[str, Any]) -> Iterator[Metric]:
    role = _gauge("role", "1 for this gateway's role in its pair (primary, standby, active-standby)", ("role",))
    role.add_metric([standby["role"]], 1)
    yield role
    replication = standby.get("replication")
    if replication is None:
        return
    sequence = _gauge("replication_sequence", "The registry change last served (primary) or applied (standby)")
    sequence.add_metric([], replication["sequence"] or 0)
    yield sequence
    if replication["change_age_s"] is not None:
        age = _gauge("replication_change_age_seconds", "Seconds since the last replicated registry change")
        age.add_metric([], replication["change_age_s"])
        yield age


def _line_metrics(links: list[Mapping[str, Any]]) -> Iterator[Metric]:
    up = _gauge("line_open", "1 when the meter line's device is open", ("line",))
    frames = _counter("line_frames", "HDLC frames on the meter line", ("line", "direction"))
    exchanges = _counter("line_exchanges", "Exchanges (poll to final frame) on the meter line", ("line",))
    timeouts = _counter("line_timeouts", "Exchanges the meter did not answer in time", ("line",))
    crc = _counter("line_crc_errors", "Frames read with a bad HCS or FCS", ("line",))
    undefined = _counter("line_frames_undefined", "Frames with a control field DLMS does not define", ("line",))
    busy = _gauge("line_busy_ratio", "Share of the time since the line opened that it was held by an exchange",
                  ("line",))
    queue = _gauge("line_queue_depth", "Data links waiting for the medium now", ("line",))
    for link in links:
        name = [link["name"]]
        up.add_metric(name, 1 if link["open"] else 0)
        frames.add_metric([link["name"], "out"], link["frames_sent"])
        frames.add_metric([link["name"], "in"], link["frames_received"])
        exchanges.add_metric(name, link["exchanges"])
        timeouts.add_metric(name, link["timeouts"])
        crc.add_metric(name, link["bad_crc"])
        undefined.add_metric(name, link["frames_undefined"])
        busy.add_metric(name, link["busy_ratio"])
        queue.add_metric(name, link["waiting"])
    yield from (up, frames, exchanges, timeouts, crc, undefined, busy, queue)


def _push_metrics(queue: Mapping[str, Any], registrations: Mapping[str, Any]) -> Iterator[Metric]:
    depth = _gauge("push_queue_depth", "Meter pushes stored, not yet delivered to every destination")
    depth.add_metric([], queue["depth"])
    dropped = _counter("push_dropped", "Meter pushes dropped by the queue's size or age bound")
    dropped.add_metric([], queue["dropped"])
    unrouted = _counter("push_unrouted", "Meter pushes with nowhere to go")
    unrouted.add_metric([], queue["unrouted"])
    delivered = _counter("push_delivered", "Meter pushes delivered, by destination", ("destination",))
    connected = _gauge("push_destination_connected", "1 when the destination's connection is up", ("destination",))
    for destination in queue["destinations"]:
        delivered.add_metric([destination["name"]], destination["delivered"])
        connected.add_metric([destination["name"]], 1 if destination["connected"] else 0)
    registered = _counter("push_registrations", "Meters registered because they pushed")
    registered.add_metric([], registrations["registered"])
    refused = _counter("push_registrations_refused", "Pushes from unknown addresses not registered, by reason",
                       ("reason",))
    for reason, count in sorted(registrations["refused"].items()):
        refused.add_metric([reason], count)
    yield from (depth, dropped, unrouted, delivered, connected, registered, refused)


def _polling_metrics(polling: Mapping[str, Any]) -> Iterator[Metric]:
    if polling.get("state") == "off":
        return
    polls = _counter("polls", "Legacy polling cycles of one meter, by outcome", ("outcome",))
    for outcome in ("ok", "partial", "failed"):
        polls.add_metric([outcome], polling[f"polls_{outcome}"])
    failing = _gauge("polling_failing_meters", "Polled meters that failed their last poll")
    failing.add_metric([], len(polling["failing_meters"]))
    yield from (polls, failing)
    uplink = polling.get("uplink")
    if uplink is not None:
        connected = _gauge("mqtt_connected", "1 when the MQTT uplink is connected")
        connected.add_metric([], 1 if uplink["connected"] else 0)
        buffered = _gauge("mqtt_buffered", "Readings waiting for the MQTT broker")
        buffered.add_metric([], uplink["buffered"])
        yield from (connected, buffered)


class StatusCollector(Collector):
    """Turns a status snapshot into metrics at each scrape."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from metrics_from(self._snapshot())


class MetricsEndpoint:
    """`GET /metrics` on the configured address, served from the event loop."""

    def __init__(self, *, config: MetricsConfig, snapshot: Snapshot) -> None:
        self.config = config
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatusCollector(snapshot))
        self._server: asyncio.Server | None = None
        self._serving = 0
        self.scrapes = 0

    @property
    def address(self) -> tuple[str, int] | None:
        if self._server is None or not self._server.sockets:
            return None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.config.listen, self.config.port,
                                                  limit=MAX_REQUEST_BYTES)
        log.info("metrics.listening", address=f"{self.config.listen}:{self.address[1] if self.address else '?'}")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._serving >= MAX_SCRAPERS:
            writer.close()
            return
        self._serving += 1
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                request = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = request.partition(b" ")
            path = rest.split(b" ", 1)[0]
            if method == b"GET" and path.split(b"?", 1)[0] == b"/metrics":
                self.scrapes += 1
                await self._reply(writer, b"200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry))
            else:
                await self._reply(writer, b"404 Not Found", "text/plain", b"only GET /metrics here\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a scraper that sends nothing whole in time, or too much, is simply closed
        finally:
            self._serving -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, status: bytes, content_type: str, body: bytes) -> None:
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type.encode()
                     + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            await writer.drain()
