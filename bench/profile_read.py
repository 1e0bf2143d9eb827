"""A 96-row load-profile read on a slow medium: the HES talking HDLC itself, against the gateway's data link.

    python -m bench.profile_read [--json FILE]

The meter (a simulated one that accepts a window of 7 and 2,030-octet information fields) sits
behind the simulated medium (gateway/sim/medium.py) on a pty in this process. The head-end is the
gurux client (an independent DLMS implementation), HLS-GMAC and ciphered: (1) directly over HDLC
with its own defaults (window 1, 128 octets), (2) through the gateway over TCP, while the gateway
runs the data link to the meter with each window / information-field combination. The HES never
sees HDLC: the gateway's own link parameters are what cross the slow medium. Printed: wall time
and the medium's airtime for each, and the ratio to the direct read; the frames on the medium
(RR among them) per HES request; and the floor: the time the medium alone needs for those frames
(airtime, one latency per turn of direction, a turnaround between frames of one burst), so
what the gateway adds, and what bounds the ratio, can be read off.

The number of DLMS exchanges (AARQ, GET, each GET-next block, RLRQ) is set by the HES and the meter
(the HES's max PDU size, `--max-pdu`), not by the data link: each costs at least one request frame
and one answer frame, two latencies, whatever window and information field the link uses.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path

from gurux_dlms.objects import GXDLMSProfileGeneric

from bench.harness import gateway_process
from gateway.codec.hdlc import FrameKind, HdlcFrameDecoder, HdlcParameters, ServerSettings
from gateway.log import configure
from gateway.sim.bus import SimMeter, SimulatedBus
from gateway.sim.medium import MediumSettings, SimulatedMedium
from gateway.sim.meter import DEMO_AUTHENTICATION_KEY, DEMO_BLOCK_CIPHER_KEY, SimMeterSettings, build_meter
from gateway.sim.pty import open_pty
from tests.hes import GuruxHes, HesCredentials, SerialChannel, TcpChannel

PORT = 24064
MEDIA = (("G3-like 20 kbit/s, 100 ms", MediumSettings(bit_rate=20_000, latency_s=0.100, turnaround_s=0.010)),
         ("9,600 bit/s, 40 ms", MediumSettings(bit_rate=9_600, latency_s=0.040, turnaround_s=0.005)))
LINK_PARAMETERS = ((1, 128), (7, 128), (1, 2030), (7, 2030))  # what the gateway proposes to the meter
CREDENTIALS = HesCredentials(client_sap=1, hls_gmac=True, block_cipher_key=DEMO_BLOCK_CIPHER_KEY,
                             authentication_key=DEMO_AUTHENTICATION_KEY, system_title=b"BENCHHES")
CAPABLE = ServerSettings(supported=HdlcParameters(max_info_tx=2030, max_info_rx=2030, window_tx=7, window_rx=7))


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def read_profile(hes: GuruxHes) -> int:
    hes.associate()
    profile = GXDLMSProfileGeneric("1.0.99.1.0.255")
    hes.read(profile, 3)  # its capture objects first: gurux needs them to read the rows
    rows = hes.read(profile, 2)
    hes.release()
    hes.close()
    return len(rows)


class FrameCount:
    """What crossed the medium during one read: frames, RRs, requests, turns of direction, the medium's floor."""

    def __init__(self, settings: MediumSettings) -> None:
        self.settings = settings
        self.frames = self.rr = self.requests = self.turns = 0
        self._last_to_meters: bool | None = None

    def __call__(self, frame: bytes, to_meters: bool) -> None:
        (decoded,) = HdlcFrameDecoder().feed(frame, now=0.0)
        self.frames += 1
        self.rr += decoded.defined_kind is FrameKind.RR
        self.requests += to_meters and decoded.defined_kind is FrameKind.I and not decoded.segmented
        self.turns += to_meters is not self._last_to_meters
        self._last_to_meters = to_meters

    def floor_s(self, airtime_s: float) -> float:
        """The medium's own time for these frames: airtime, a latency per turn, a turnaround inside bursts."""
        settings = self.settings
        return airtime_s + self.turns * settings.latency_s + (self.frames - self.turns) * settings.turnaround_s


async def timed(medium: SimulatedMedium, read: Callable[[], int]) -> dict[str, float]:
    airtime, started = medium.figures.airtime_s, time.monotonic()
    count = FrameCount(medium.settings)
    medium.observer = count
    rows = await asyncio.to_thread(read)
    medium.observer = None
    if rows != 96:
        raise RuntimeError(f"read {rows} rows, not 96")
    used = medium.figures.airtime_s - airtime
    return {"wall_s": time.monotonic() - started, "airtime_s": used, "frames": count.frames, "rr": count.rr,
            "requests": count.requests, "turns": count.turns, "floor_s": count.floor_s(used)}


async def measure(settings: MediumSettings, max_pdu: int) -> list[dict[str, object]]:
    pty = open_pty()
    meter = SimMeter(physical_address=17, device=build_meter(SimMeterSettings.demo(serial_number=1), clock=utc_now))
    medium = SimulatedMedium(SimulatedBus(meters=[meter], settings=CAPABLE), settings)
    medium.attach(pty.master_fd)
    rows: list[dict[str, object]] = []
    counter = 0  # the meter refuses an invocation counter it has seen: each association continues it
    try:
        def direct() -> int:
            return read_profile(GuruxHes(SerialChannel(pty.slave_path, timeout=60), credentials=CREDENTIALS,
                                         server_sap=1, physical_address=17, max_pdu=max_pdu))

        figures = await timed(medium, direct)
        rows.append({"path": "direct HDLC (client's window 1, 128 octets)", **figures})
        for window, max_info in LINK_PARAMETERS:
            counter += 1000
            with gateway_process(pty.slave_path, 1, PORT, link_options=f"window = {window}\nmax_info = {max_info}\n"
                                 "response_timeout_s = 3.0\n"):
                def relayed(start: int = counter) -> int:
                    hes = GuruxHes(TcpChannel("127.0.0.1", PORT, timeout=60), credentials=CREDENTIALS,
                                   server_sap=17, max_pdu=max_pdu)
                    hes.client.ciphering.invocationCounter = start
                    return read_profile(hes)

                figures = await timed(medium, relayed)
            rows.append({"path": f"through the gateway, window {window}, {max_info} octets", **figures})
    finally:
        medium.detach()
        pty.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--max-pdu", default="256,1024", help="the HES's max PDU sizes, comma-separated")
    args = parser.parse_args()
    configure(level="warning", fmt="console")
    report: dict[str, list[dict[str, object]]] = {}
    for max_pdu in (int(size) for size in args.max_pdu.split(",")):
        for name, settings in MEDIA:
            rows = asyncio.run(measure(settings, max_pdu))
            report[f"{name}, HES max PDU {max_pdu}"] = rows
            direct = rows[0]["wall_s"]
            assert isinstance(direct, float)
            print(f"\n## {name}: 96-row load profile, GET with blocks, HLS-GMAC + AES-GCM, HES max PDU {max_pdu}\n")
            print("| path | wall s | medium airtime s | frames (RR) | frames / request | medium floor s "
                  "| wall / direct | floor / direct |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
            for row in rows:
                wall, airtime, floor = row["wall_s"], row["airtime_s"], row["floor_s"]
                frames, rr, requests = row["frames"], row["rr"], row["requests"]
                assert isinstance(wall, float) and isinstance(airtime, float) and isinstance(floor, float)
                assert isinstance(frames, int) and isinstance(rr, int) and isinstance(requests, int)
                print(f"| {row['path']} | {wall:.2f} | {airtime:.2f} | {frames} ({rr}) | {frames / requests:.1f} "
                      f"| {floor:.2f} | {wall / direct:.2f} | {floor / direct:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
