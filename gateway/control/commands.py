"""What the CLI can ask the running daemon: status, meters, sessions, ping, registration."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from gateway import __version__
from gateway.capture.tap import FrameTap
from gateway.codec.hdlc.address import PHYSICAL_ADDRESSES
from gateway.control.capture import capture_handler
from gateway.control.discovery import DiscoveryHost, identify, scan
from gateway.control.server import CommandError, Handler, Progress, number, sap_or_name, text
from gateway.control.standby import StandbyCommands, StandbyNode
from gateway.core.gateway_protocol import GatewayPeer
from gateway.core.push import PushForwarder
from gateway.core.push_registration import PushRegistrationGate
from gateway.core.pushstore import PushStore
from gateway.core.router import Router
from gateway.media.mesh import MeshEndpoint
from gateway.poller.control import readings_handlers
from gateway.poller.service import PollingService
from gateway.registry.store import Meter, MeterState, RegistryError
from gateway.supervisor import Supervisor
from gateway.wan.dialout import DialOut


class RunningGateway(DiscoveryHost, StandbyNode, Protocol):
    """What the technician's commands read of the running gateway: its parts, each by its own type."""

    @property
    def started_at(self) -> float: ...

    @property
    def router(self) -> Router: ...

    @property
    def pushes(self) -> PushStore: ...

    @property
    def pushes_unrouted(self) -> int: ...

    @property
    def forwarders(self) -> Sequence[PushForwarder]: ...

    @property
    def push_registrations(self) -> PushRegistrationGate: ...

    @property
    def dial_outs(self) -> Sequence[DialOut]: ...

    @property
    def supervisor(self) -> Supervisor: ...

    @property
    def poller(self) -> PollingService | None: ...

    @property
    def tap(self) -> FrameTap: ...

    @property
    def meshes(self) -> Mapping[str, MeshEndpoint]: ...

    def gateway_address(self, sap: int) -> tuple[int, bytes] | None: ...


def meter_summary(meter: Meter) -> dict[str, Any]:
    return {
        "sap": meter.sap, "name": meter.name_text, "link": meter.link,
        "medium": "mesh" if meter.ip_address is not None else "serial",
        "address": meter.ip_address if meter.ip_address is not None else meter.physical_address,
        "eui64": meter.eui64.hex().upper() if meter.eui64 else None,
        "logical_device": meter.logical_device, "state": meter.state.value, "registered_by": meter.registered_by,
        "last_seen": meter.last_seen,
    }


def meter_detail(meter: Meter) -> dict[str, Any]:
    return {
        **meter_summary(meter),
        "transport": meter.ip_transport if meter.ip_address is not None else None,  # on a mesh: udp or tcp
        "system_title": meter.system_title.hex().upper() if meter.system_title else None,
        "first_seen": meter.first_seen,
        "frames": meter.stats.frames, "retries": meter.stats.retries, "crc_errors": meter.stats.crc_errors,
        "last_rtt_ms": None if meter.stats.last_rtt_ms is None else round(meter.stats.last_rtt_ms, 1),
        # what the meter accepted in its last UA (the gateway's view: tx = what it sends); the next SNRM proposes it
        "hdlc_accepted": None if meter.hdlc is None else {
            "window_tx": meter.hdlc.accepted.window_tx, "window_rx": meter.hdlc.accepted.window_rx,
            "max_info_tx": meter.hdlc.accepted.max_info_tx, "max_info_rx": meter.hdlc.accepted.max_info_rx},
    }


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Commands:
    """Handlers bound to one running gateway."""

    def __init__(self, gateway: RunningGateway) -> None:
        self.gateway = gateway
        self.standby = StandbyCommands(gateway)

    def handlers(self) -> dict[str, Handler]:
        return {
            **self.standby.handlers(),
            "status": self.status, "meters": self.meters, "meter": self.meter, "sessions": self.sessions,
            "ping": self.ping, "meters.add": self.add, "meters.remove": self.remove, "meters.scan": self.scan,
            "capture": capture_handler(tap=self.gateway.tap, meters=self.gateway.registry, lines=self.gateway.lines),
            **readings_handlers(poller=self.gateway.poller, registry=self.gateway.registry),
        }

    async def status(self, request: Mapping[str, Any], progress: Progress) -> dict[str, Any]:
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """What `status` answers, and what the metrics endpoint exports."""
        gw = self.gateway
        by_state = {state.value: 0 for state in MeterState if state is not MeterState.REMOVED}
        for meter in gw.registry.meters():
            by_state[meter.state.value] += 1
        return {
            "version": __version__,
            "uptime_s": round(time.time() - gw.started_at, 1),
            "wan": {"listening": [f"{h}:{p}" for h, p in gw.wan.addresses],
                    "peers": sorted(c.peer for c in gw.wan.connections),
                    "pdus_in": gw.wan.pdus_in, "pdus_out": gw.wan.pdus_out,
                    "refused": dict(gw.wan.refused), "cut_off": dict(gw.wan.cut_off),
                    "dial_out": [{"hes": f"{d.config.host}:{d.config.port}", "connected": d.connected,
                                  "dials": d.dials} for d in gw.dial_outs]},
            "links": [
                {"name": line.name, "device": line.config.device, "open": line.is_open,
                 "frames_sent": line.counters.frames_sent, "frames_received": line.counters.frames_received,
                 "timeouts": line.counters.timeouts, "bad_crc": line.decoder.bad_crc,
                 "discarded_bytes": line.decoder.discarded_bytes,
                 "frames_undefined": line.counters.frames_undefined, "frames_failed": line.counters.frames_failed,
                 "exchanges": line.counters.exchanges, "busy_ratio": line.busy_ratio(), "waiting": line.waiting(),
                 "outstanding": line.outstanding(), "concurrent_exchanges": line.config.concurrent_exchanges}
                for line in gw.lines.values()
            ],
            "meshes": [
                {"name": name, "usable": mesh.usable(), "in_flight": mesh.network.in_flight,
                 "queued": mesh.network.queued, **dataclasses.asdict(mesh.network.counters),
                 "local": "[{}]:{}".format(*mesh.local_address) if mesh.usable() else None}
                for name, mesh in gw.meshes.items()
            ],
            "meters": by_state,
            "push_registrations": {"registered": gw.push_registrations.registered,
                                   "refused": {str(reason): count for reason, count
                                               in sorted(gw.push_registrations.refused.items())}},
            "worker_restarts": dict(gw.supervisor.restarts),
            "sessions": len(gw.router.sessions),
            "rejections": gw.router.rejections,
            "push_queue": {"depth": gw.pushes.depth, "oldest_age_s": gw.pushes.oldest_age_s(),
                           "dropped": gw.pushes.dropped, "unrouted": gw.pushes_unrouted,
                           "destinations": [{"name": f.config.name, "connected": f.connected,
                                             "delivered": f.delivered} for f in gw.forwarders]},
            "polling": gw.poller.status() if gw.poller is not None else {"state": "off"},
            "standby": self.standby.snapshot(),
        }

    async def meters(self, request: Mapping[str, Any], progress: Progress) -> list[dict[str, Any]]:
        state = text(request, "state", default="")
        try:
            wanted = MeterState(state) if state else None
        except ValueError:
            raise CommandError(f"unknown state {state!r}; one of {', '.join(s.value for s in MeterState)}") from None
        return [meter_summary(m) for m in self.gateway.registry.meters(state=wanted)]

    def _lookup(self, key: int | str) -> Meter | None:
        """A live meter by SAP or logical device name (a name may be all digits too)."""
        registry = self.gateway.registry
        meter = registry.get(key) if isinstance(key, int) else None
        if meter is None:
            meter = registry.by_name(str(key).encode())
        return meter

    def _find(self, request: Mapping[str, Any]) -> Meter:
        key = sap_or_name(request, "meter")
        meter = self._lookup(key)
        if meter is None:
            raise CommandError(f"no meter {str(key)[:40]!r} (give a SAP or a logical device name)")
        return meter

    async def meter(self, request: Mapping[str, Any], progress: Progress) -> dict[str, Any]:
        meter = self._find(request)
        where = self.gateway.gateway_address(meter.sap)
        return {**meter_detail(meter), "network_id": where[0] if where else None,
                "gateway_address": where[1].hex().upper() if where else None}

    async def sessions(self, request: Mapping[str, Any], progress: Progress) -> list[dict[str, Any]]:
        return [
            {"peer": s.owner.peer, "client_sap": s.client_sap, "meter_sap": s.meter_sap, "line": s.network,
             "medium": "mesh" if s.network in self.gateway.meshes else "serial", "address": str(s.association.meter),
             "addressing": s.owner.addressing if isinstance(s.owner, GatewayPeer) else "sap",
             "state": s.state.value, "since": s.counters.started, "apdus_to_meter": s.counters.apdus_to_meter,
             "apdus_to_hes": s.counters.apdus_to_hes}
            for s in self.gateway.router.sessions.values()
        ]

    async def ping(self, request: Mapping[str, Any], progress: Progress) -> dict[str, Any]:
        meter = self._find(request)
        under_way = self.gateway.identity_reads.get(meter.sap)
        if under_way is not None:  # a ping measures a read of its own: let one that started earlier finish first
            with contextlib.suppress(Exception):
                await asyncio.shield(under_way)
        started = time.perf_counter()
        try:
            identified = await identify(self.gateway, meter.sap)
        except RegistryError as exc:
            raise CommandError(str(exc)) from None
        return {"sap": identified.sap, "name": identified.name_text,
                "round_trip_ms": identified.stats.last_rtt_ms,
                "association_ms": round((time.perf_counter() - started) * 1e3, 1)}

    async def add(self, request: Mapping[str, Any], progress: Progress) -> dict[str, Any]:
        link = text(request, "link")
        if link not in self.gateway.lines and link not in self.gateway.meshes:
            raise CommandError(f"no link named {link[:40]!r}")
        sap = number(request, "sap") if request.get("sap") is not None else None
        logical_device = number(request, "logical_device", default=1)
        try:  # the registry applies the address rule of the configuration (one rule, in the HDLC codec)
            if link in self.gateway.meshes:  # an IPv6 address (or [address]:port), given as text
                meter = self.gateway.registry.register_ip(
                    link=link, address=text(request, "address"), logical_device=logical_device, sap=sap)
            else:
                meter = self.gateway.registry.register(
                    link=link, physical_address=number(request, "address"), logical_device=logical_device, sap=sap)
        except RegistryError as exc:
            raise CommandError(str(exc)) from None
        if meter.logical_device_name is None and self.gateway.config.registry.identify:
            self.gateway.identify_queue.put_nowait(meter.sap)
        return {**meter_summary(meter), **await self.standby.replicated()}

    async def remove(self, request: Mapping[str, Any], progress: Progress) -> dict[str, Any]:
        """Remove a meter given by SAP or logical device name ("sap" still works, as older CLIs send it)."""
        key = sap_or_name(request, "meter") if "meter" in request else number(request, "sap")
        meter = self._lookup(key)
        if meter is None:
            raise CommandError(self._why_not_live(key))
        try:
            return meter_summary(self.gateway.registry.remove(meter.sap))
        except RegistryError as exc:
            raise CommandError(str(exc)) from None

    def _why_not_live(self, key: object) -> str:
        """A meter that is not live: already removed (its SAP in quarantine), or never known."""
        numeric = isinstance(key, int) or (isinstance(key, str) and key.isdigit())
        for removed in reversed(self.gateway.registry.meters(state=MeterState.REMOVED)):
            if (numeric and removed.sap == int(str(key))) or (not numeric and removed.name_text == key):
                when = f", at {_iso(removed.removed_at)}" if removed.removed_at else ""
                return f"SAP {removed.sap} is already removed ({removed.name_text or 'unnamed'}{when}); " \
                       "the SAP is in quarantine"
        return f"no meter with SAP {key}" if numeric else f"no meter {key!r} (give a SAP or a logical device name)"

    async def scan(self, request: Mapping[str, Any], progress: Progress) -> list[dict[str, Any]]:
        first, last = number(request, "first"), number(request, "last")
        if first > last:
            raise CommandError(f"the range {first}-{last} is reversed (did you mean {last}-{first}?)")
        if first not in PHYSICAL_ADDRESSES or last not in PHYSICAL_ADDRESSES:  # the one address rule of the codec
            raise CommandError(f"the range must lie within {PHYSICAL_ADDRESSES.start}..{PHYSICAL_ADDRESSES.stop - 1}")
        try:
            results = await scan(self.gateway, link=text(request, "link"), first=first, last=last,
                                 progress=progress)
        except RegistryError as exc:
            raise CommandError(str(exc)) from None
        return [r.as_dict() for r in results]


