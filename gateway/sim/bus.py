"""Simulated meters on one multi-drop line: HDLC secondary stations driving COSEM logical devices.

The bus reads the line (a pty master in tests and demos), splits it into frames, hands each
frame to the meter it addresses and writes that meter's answer back. Meters never talk unless
polled, as on a real NRM bus. A UI frame to the all-station address goes to every meter it
reaches (its logical device, or all), minus the ones that miss it: each meter loses a broadcast
with its own probability, drawn from a generator seeded by the bus seed and its address, so a
run can be replayed. Nobody answers a broadcast.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from gateway.codec.hdlc import (
    ApduFromClient,
    ClientDisconnected,
    HdlcAddress,
    HdlcFrame,
    HdlcFrameDecoder,
    HdlcServerLink,
    ServerSettings,
    broadcast_apdu,
)
from gateway.sim.pty import PtyEndpoint


class ApduServer(Protocol):
    """The application layer behind one HDLC server address (a COSEM logical device)."""

    def handle(self, *, client_sap: int, apdu: bytes) -> bytes | None: ...

    def release(self, *, client_sap: int) -> None: ...


@runtime_checkable
class BroadcastServer(Protocol):
    """A logical device that takes broadcast APDUs (and never answers them)."""

    def handle_broadcast(self, *, client_sap: int, apdu: bytes) -> object: ...


@dataclass(slots=True)
class SimMeter:
    """One simulated physical meter: its HDLC address, its logical device, how often it misses a broadcast."""

    physical_address: int
    device: ApduServer
    logical_device: int = 1
    broadcast_loss: float = 0.0  # probability of missing one broadcast frame


@dataclass(slots=True)
class _Station:
    link: HdlcServerLink
    device: ApduServer
    logical_device: int
    physical_address: int
    broadcast_loss: float
    chance: random.Random
    lost: list[int] = field(default_factory=list)  # the numbers (from 0) of the broadcasts it missed


class SimulatedBus:
    """Serves several simulated meters on one line file descriptor."""

    def __init__(
        self,
        *,
        meters: Sequence[SimMeter],
        settings: ServerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        bit_rate: int | None = None,
        seed: int = 0,
    ) -> None:
        self._clock = clock
        # With a bit rate, an answer leaves only after the request and the answer would have
        # crossed the line (10 bits per byte, 8N1): the medium, not the CPU, sets the pace.
        self._seconds_per_byte = 10.0 / bit_rate if bit_rate else 0.0
        self._decoder = HdlcFrameDecoder()
        self._stations: dict[tuple[int, int], _Station] = {}
        self._settings = settings or ServerSettings()
        self._seed = seed
        for meter in meters:
            self._add_station(meter.logical_device, meter.physical_address, meter.device, meter.broadcast_loss)
        self._pty = PtyEndpoint(self._received)
        self.frames_in = 0
        self.frames_ignored = 0
        self.broadcasts_in = 0

    def _add_station(self, logical_device: int, physical_address: int, device: ApduServer, loss: float) -> None:
        address = HdlcAddress.server(logical_device=logical_device, physical_address=physical_address)
        link = HdlcServerLink(server_address=address, settings=self._settings)
        chance = random.Random(f"{self._seed}/{logical_device}/{physical_address}")
        station = _Station(link, device, logical_device, physical_address, loss, chance)
        self._stations[(logical_device, physical_address)] = station

    def readdress(self, *, old: int, new: int, logical_device: int = 1) -> None:
        """A technician re-addresses a meter: it answers at ``new`` from now on (its data links drop)."""
        station = self._stations.pop((logical_device, old))
        self._add_station(logical_device, new, station.device, station.broadcast_loss)

    def push(self, *, physical_address: int, client_sap: int, apdu: bytes, logical_device: int = 1) -> None:
        """The meter sends an unsolicited UI frame (an alarm or a data-notification)."""
        station = self._stations[(logical_device, physical_address)]
        self._write(station.link.send_ui(client_sap=client_sap, apdu=apdu))

    def broadcasts_lost(self, *, physical_address: int, logical_device: int = 1) -> list[int]:
        """The numbers (0 = the first broadcast on this bus) of the broadcasts this meter missed."""
        return list(self._stations[(logical_device, physical_address)].lost)

    def feed(self, data: bytes) -> bytes:
        """Bytes from the line in, the meters' answers out (pure apart from the meters' own state)."""
        now = self._clock()
        out: list[bytes] = []
        for frame in self._decoder.feed(data, now=now):
            out.extend(self.hear(frame, now=now))
        return b"".join(out)

    def hear(self, frame: HdlcFrame, *, now: float) -> list[bytes]:
        """One whole frame from the line in, the answering frames out."""
        self.frames_in += 1
        apdu = broadcast_apdu(frame)
        if apdu is not None:
            self._broadcast(frame, apdu)
            return []
        station = self._stations.get((frame.destination.upper, frame.destination.lower or 0))
        if station is None:
            self.frames_ignored += 1
            return []
        link, device = station.link, station.device
        for event in link.receive(frame, now=now):
            if isinstance(event, ApduFromClient):
                answer = device.handle(client_sap=event.client_sap, apdu=event.apdu)
                if answer is not None:
                    link.send_apdu(client_sap=event.client_sap, apdu=answer)
            elif isinstance(event, ClientDisconnected):
                device.release(client_sap=event.client_sap)
        return link.respond(now=now)

    def _broadcast(self, frame: HdlcFrame, apdu: bytes) -> None:
        number = self.broadcasts_in
        self.broadcasts_in += 1
        for station in self._stations.values():
            reached = frame.destination.reaches(
                logical_device=station.logical_device, physical_address=station.physical_address
            )
            if not reached or not isinstance(station.device, BroadcastServer):
                continue
            if station.chance.random() < station.broadcast_loss:
                station.lost.append(number)
                continue
            station.device.handle_broadcast(client_sap=frame.source.upper, apdu=apdu)

    def attach(self, fd: int) -> None:
        """Serve the line on ``fd`` from the running event loop."""
        self._pty.attach(fd)

    def detach(self) -> None:
        self._pty.detach()

    def _received(self, data: bytes) -> None:
        answer = self.feed(data)
        if not answer:
            return
        if self._seconds_per_byte:
            delay = (len(data) + len(answer)) * self._seconds_per_byte
            asyncio.get_running_loop().call_later(delay, self._write_if_attached, answer)
        else:
            self._write(answer)

    def _write_if_attached(self, data: bytes) -> None:
        self._pty.write(data)  # nothing once detached

    def _write(self, data: bytes) -> None:
        assert self._pty.attached
        self._pty.write(data)
