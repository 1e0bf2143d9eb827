"""A simulated PLC or RF medium between the gateway's serial port (a pty) and simulated meters.

Theory of operation. Real narrowband PLC and RF links are slow, half-duplex and lossy: one frame
at a time on the whole medium, each taking its octets x 10 bits at the bit rate, arriving after a
per-frame latency, with a turnaround before the medium carries the next one, and some frames lost
or corrupted on the way. This medium reads what the gateway writes to the pty, splits it into
HDLC frames, and schedules each on one shared timeline (gateway to meters and back alike); a frame
that survives is handed to the simulated bus, whose answers go back on the same timeline. Loss and
corruption come from a seeded generator, so a run can be replayed. It counts its own airtime, so
a benchmark can compute how busy the gateway keeps the medium.

    gateway -> pty -> [ frame k: start = max(now, free), end = start + 10 n / rate ] -> bus
                      arrival = end + latency; the medium is free again at end + turnaround

Time scale (opt-in, for benchmarks at 2,400 bit/s that would take hours of wall time): with
``time_scale`` s > 1 the medium keeps its own timeline at the nominal bit rate, but a frame is
delivered after (arrival - now) / s of wall time, and the medium's clock then jumps to the frame's
arrival. So the medium's time (``now()``) = wall time + the jumps: airtime, latency and turnaround
count in full, the gateway's and the meters' real reaction times and timeouts count as they
happen. Airtime never depends on the scale.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.codec.hdlc import HdlcFrameDecoder
from gateway.sim.bus import SimulatedBus
from gateway.sim.pty import PtyEndpoint

BITS_PER_OCTET = 10  # 8N1 on the modem's serial side

PROFILES = {  # bit rate, per-frame latency, turnaround: what the medium's class is like
    "sfsk": (2_400, 0.050, 0.010),  # S-FSK PLC (IEC 61334-5-1)
    "g3": (20_000, 0.100, 0.010),  # G3-PLC, one hop
    "rf": (100_000, 0.020, 0.005),  # sub-GHz RF mesh, one hop
}


@dataclass(frozen=True, slots=True)
class MediumSettings:
    bit_rate: int
    latency_s: float = 0.0
    turnaround_s: float = 0.0
    frame_loss: float = 0.0  # share of frames that never arrive
    corruption: float = 0.0  # share of frames that arrive with one octet changed (their FCS then fails)
    seed: int = 0
    time_scale: float = 1.0  # > 1: deliveries that many times faster in wall time (see the module docstring)

    @classmethod
    def profile(cls, name: str, *, frame_loss: float = 0.0, corruption: float = 0.0, seed: int = 0,
                time_scale: float = 1.0) -> MediumSettings:
        bit_rate, latency_s, turnaround_s = PROFILES[name]
        return cls(bit_rate=bit_rate, latency_s=latency_s, turnaround_s=turnaround_s, frame_loss=frame_loss,
                   corruption=corruption, seed=seed, time_scale=time_scale)


@dataclass(slots=True)
class MediumFigures:
    frames: int = 0
    lost: int = 0
    corrupted: int = 0
    airtime_s: float = 0.0  # time frames occupied the medium, lost ones included
    started_at: float = field(default_factory=time.monotonic)
    # the gateway's reaction: from a frame handed to it to the next frame it sends (the idle gap it adds)
    reactions_s: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    def utilisation(self, now: float | None = None) -> float:
        elapsed = (now if now is not None else time.monotonic()) - self.started_at
        return self.airtime_s / elapsed if elapsed > 0 else 0.0


class SimulatedMedium:
    """One shared half-duplex medium, paced and lossy, between a pty master and a simulated bus."""

    def __init__(self, bus: SimulatedBus, settings: MediumSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if settings.time_scale < 1.0:
            raise ValueError("a time scale below 1 would slow the medium down")
        self._bus = bus
        self.settings = settings
        self._wall = clock
        self._skipped = 0.0  # medium time not waited for in wall time (time scale)
        self.on_frame: Callable[[int, float], None] | None = None  # (octets, airtime) of each frame carried
        self._random = random.Random(settings.seed)
        self._decoder = HdlcFrameDecoder(inter_octet_timeout_s=3600.0)  # frames arrive whole from the gateway
        self._decoder.keep_raw = True
        self._free_at = 0.0
        self._scheduled: deque[tuple[float, float]] = deque()  # (start, end) of frames not yet wholly carried
        self._handed_at: float | None = None  # when the last frame reached the gateway, until it answers
        self._pty = PtyEndpoint(self._received)
        self.figures = MediumFigures()
        self.observer: Callable[[bytes, bool], None] | None = None  # told each frame put on the medium, and
        # whether it goes to the meters (a benchmark counts frames and turns of direction)

    def attach(self, fd: int) -> None:
        self.figures = MediumFigures(started_at=self.now())
        self._pty.attach(fd)

    def now(self) -> float:
        """The medium's own clock: wall time plus the jumps of the time scale (the wall clock at scale 1)."""
        return self._wall() + self._skipped

    def detach(self) -> None:
        self._pty.detach()

    def _received(self, data: bytes) -> None:
        now = self.now()
        self._decoder.feed(data, now=now)
        if self._decoder.raw and self._handed_at is not None:
            self.figures.reactions_s.append(now - self._handed_at)
            self._handed_at = None
        for raw, _, bad in self._decoder.raw:
            if not bad:
                self._carry(raw, self._to_meters)
        self._decoder.raw.clear()

    def _carry(self, frame: bytes, deliver: Callable[[bytes], None]) -> None:
        """Put one frame on the shared timeline; it arrives (or not) after its airtime and the latency."""
        now = self.now()
        start = max(now, self._free_at)
        airtime = len(frame) * BITS_PER_OCTET / self.settings.bit_rate
        end = start + airtime
        self._free_at = end + self.settings.turnaround_s
        self.figures.frames += 1
        self.figures.airtime_s += airtime
        while self._scheduled and self._scheduled[0][1] <= now:
            self._scheduled.popleft()
        self._scheduled.append((start, end))
        if self.observer is not None:
            self.observer(frame, deliver == self._to_meters)
        if self.on_frame is not None:
            self.on_frame(len(frame), airtime)
        if self._random.random() < self.settings.frame_loss:
            self.figures.lost += 1
            return
        if self._random.random() < self.settings.corruption:
            self.figures.corrupted += 1
            where = self._random.randrange(1, len(frame) - 1)  # never a flag: the frame still ends where it did
            frame = frame[:where] + bytes([frame[where] ^ 0x5A]) + frame[where + 1:]
        arrival = end + self.settings.latency_s
        loop = asyncio.get_running_loop()
        wait = (arrival - now) / self.settings.time_scale
        if self._wall is time.monotonic:  # the loop's own clock: an absolute deadline keeps frames in order
            loop.call_at(now - self._skipped + wait, self._arrive, arrival, deliver, frame)
        else:
            loop.call_later(wait, self._arrive, arrival, deliver, frame)

    def _arrive(self, arrival: float, deliver: Callable[[bytes], None], frame: bytes) -> None:
        late = arrival - self.now()
        if late > 0 and self.settings.time_scale > 1.0:
            self._skipped += late  # the medium's clock catches up with the frame it carried
        deliver(frame)

    def airtime_carried_s(self, now: float | None = None) -> float:
        """The airtime counted so far, less what frames queued on the timeline have yet to spend after `now`.

        ``figures.airtime_s`` counts a frame when it is queued; over a short window with long frames
        (2,400 bit/s), airtime / wall needs what has really been on the medium by the window's end.
        """
        now = self.now() if now is None else now
        ahead = sum(end - max(start, now) for start, end in self._scheduled if end > now)
        return self.figures.airtime_s - ahead

    def _to_meters(self, frame: bytes) -> None:
        answer = self._bus.feed(frame)
        if not answer:
            return
        decoder = HdlcFrameDecoder()
        decoder.keep_raw = True
        decoder.feed(answer, now=self.now())
        for raw, _, _ in decoder.raw:
            self._carry(raw, self._to_gateway)

    def _to_gateway(self, frame: bytes) -> None:
        if not self._pty.attached:
            return
        self._handed_at = self.now()
        self._pty.write(frame)
