"""A 96-row load-profile read on a slow medium: the HES talking HDLC itself, against the gateway's data link.

    python -m bench.profile_read [--json FILE]

The meter (a simulated one that accepts a window of 7 and 2,030-octet information fields) sits
behind the simulated medium (gateway/sim/medium.py) on a pty in this process. The head-end is the
gurux client (an independent DLMS implementation), HLS-GMAC and ciphered: (1) directly over HDLC
with its own defaults (window 1, 128 octets), (2) through the gateway over TCP, while the gateway
runs the data link to the meter with each window / information-field combination. The HES never
sees HDLC: the gateway's own link parameters are what cross the slow medium. Printed: wall time
and the medium's airtime for each, and the ratio to the direct read.
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
from gateway.codec.hdlc import HdlcParameters, ServerSettings
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
    rows = hes.read(GXDLMSProfileGeneric("1.0.99.1.0.255"), 2)
    hes.release()
    hes.close()
    return len(rows)


async def timed(medium: SimulatedMedium, read: Callable[[], int]) -> tuple[float, float]:
    airtime, started = medium.figures.airtime_s, time.monotonic()
    rows = await asyncio.to_thread(read)
    if rows != 96:
        raise RuntimeError(f"read {rows} rows, not 96")
    return time.monotonic() - started, medium.figures.airtime_s - airtime


async def measure(settings: MediumSettings) -> list[dict[str, object]]:
    pty = open_pty()
    meter = SimMeter(physical_address=17, device=build_meter(SimMeterSettings.demo(serial_number=1), clock=utc_now))
    medium = SimulatedMedium(SimulatedBus(meters=[meter], settings=CAPABLE), settings)
    medium.attach(pty.master_fd)
    rows: list[dict[str, object]] = []
    counter = 0  # the meter refuses an invocation counter it has seen: each association continues it
    try:
        def direct() -> int:
            return read_profile(GuruxHes(SerialChannel(pty.slave_path, timeout=60), credentials=CREDENTIALS,
                                         server_sap=1, physical_address=17, max_pdu=256))

        wall, airtime = await timed(medium, direct)
        rows.append({"path": "direct HDLC (client's window 1, 128 octets)", "wall_s": wall, "airtime_s": airtime})
        for window, max_info in LINK_PARAMETERS:
            counter += 1000
            with gateway_process(pty.slave_path, 1, PORT, link_options=f"window = {window}\nmax_info = {max_info}\n"
                                 "response_timeout_s = 3.0\n"):
                def relayed(start: int = counter) -> int:
                    hes = GuruxHes(TcpChannel("127.0.0.1", PORT, timeout=60), credentials=CREDENTIALS,
                                   server_sap=17, max_pdu=256)
                    hes.client.ciphering.invocationCounter = start
                    return read_profile(hes)

                wall, airtime = await timed(medium, relayed)
            rows.append({"path": f"through the gateway, window {window}, {max_info} octets", "wall_s": wall,
                         "airtime_s": airtime})
    finally:
        medium.detach()
        pty.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configure(level="warning", fmt="console")
    report: dict[str, list[dict[str, object]]] = {}
    for name, settings in MEDIA:
        rows = asyncio.run(measure(settings))
        report[name] = rows
        direct = rows[0]["wall_s"]
        assert isinstance(direct, float)
        print(f"\n## {name}: 96-row load profile, GET with blocks, HLS-GMAC + AES-GCM\n")
        print("| path | wall s | medium airtime s | wall / direct |")
        print("|---|---:|---:|---:|")
        for row in rows:
            wall, airtime = row["wall_s"], row["airtime_s"]
            assert isinstance(wall, float) and isinstance(airtime, float)
            print(f"| {row['path']} | {wall:.2f} | {airtime:.2f} | {wall / direct:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
