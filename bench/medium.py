"""How well the gateway keeps a slow shared medium busy: sessions to different meters on a simulated PLC line.

    python -m bench.medium [--seconds 20] [--json FILE]

The gateway runs as its own process; the meters sit behind the simulated medium of
gateway/sim/medium.py (one half-duplex timeline with bit rate, per-frame latency and turnaround,
seeded loss) on a pty in this process, and K HES sessions (K = 1, 4, 16, 64) each read their own
meter in a loop through the gateway. Printed per profile and K: exchanges/s, medium utilisation
(airtime / wall time), the gateway's reaction gap (from a meter's frame reaching it to the next
frame it sends: what the gateway adds to the medium's idle time) p50/p99, and Jain's fairness
over the sessions' exchange counts.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time
from pathlib import Path

from bench.harness import GET_LDN, PUBLIC_AARQ, gateway_process, jain, percentile
from gateway.codec import acse
from gateway.codec.wrapper import WrapperDecoder, WrapperPdu, encode
from gateway.log import configure
from gateway.sim.bus import SimMeter, SimulatedBus
from gateway.sim.medium import MediumSettings, SimulatedMedium
from gateway.sim.meter import SimMeterSettings, build_meter
from gateway.sim.pty import open_pty

PORT = 24063
MIN_EXCHANGES = 3  # per session in the measured window
MAX_WINDOW_S = 300.0
LOG_FILE = Path("/tmp/bench-medium-gateway.log")  # the gateway's warnings, for a run that goes wrong
METERS = 64
SESSIONS = (1, 4, 16, 64)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def session(meter_sap: int, stop: asyncio.Event, associated: asyncio.Semaphore, counts: list[int],
                  index: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    decoder = WrapperDecoder()

    async def request(apdu: bytes) -> bytes:
        writer.write(encode(WrapperPdu(source=16, destination=meter_sap, apdu=apdu)))
        pdus: list[WrapperPdu] = []
        while not pdus:
            data = await asyncio.wait_for(reader.read(65536), 60)
            if not data:
                raise ConnectionError("closed by the gateway")
            pdus = decoder.feed(data)
        return pdus[0].apdu

    for _ in range(100):  # a line busy with everyone's association may refuse one for now: ask again
        if acse.decode_aare(await request(PUBLIC_AARQ)).result is acse.AssociationResult.ACCEPTED:
            break
        await asyncio.sleep(0.5)
    associated.release()
    while not stop.is_set():
        if (await request(GET_LDN))[0] == 0xC4:
            counts[index] += 1
    writer.close()


async def run(settings: MediumSettings, sessions: int, seconds: float) -> dict[str, float]:
    pty = open_pty()
    meters = [SimMeter(physical_address=17 + i, device=build_meter(SimMeterSettings.demo(serial_number=1 + i),
                                                                   clock=utc_now)) for i in range(METERS)]
    medium = SimulatedMedium(SimulatedBus(meters=meters), settings)
    medium.attach(pty.master_fd)
    try:
        with gateway_process(pty.slave_path, METERS, PORT, link_options="response_timeout_s = 3.0\n",
                             extra="[relay]\nexchange_timeout_s = 120.0\n", log_file=LOG_FILE):
            stop = asyncio.Event()
            associated = asyncio.Semaphore(0)
            running = [0] * sessions
            tasks = [asyncio.create_task(session(17 + i, stop, associated, running, i)) for i in range(sessions)]
            for _ in range(sessions):  # every session associated: measure the steady state only
                await asyncio.wait_for(associated.acquire(), 600)
            before = list(running)
            airtime, started = medium.figures.airtime_s, time.monotonic()
            reactions_before = len(medium.figures.reactions_s)
            await asyncio.sleep(seconds)
            # fairness needs a few exchanges per session: a slow medium with many sessions runs longer
            for _ in range(int(MAX_WINDOW_S - seconds)):
                if min(after - then for after, then in zip(running, before, strict=True)) >= MIN_EXCHANGES:
                    break
                await asyncio.sleep(1.0)
            wall, used = time.monotonic() - started, medium.figures.airtime_s - airtime
            counts = [after - then for after, then in zip(running, before, strict=True)]
            reactions = list(medium.figures.reactions_s)[reactions_before:]
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        medium.detach()
        pty.close()
    return {"sessions": sessions, "exchanges_per_s": round(sum(counts) / (wall + 1e-9), 2),
            "utilisation": round(used / wall, 3),
            "reaction_p50_ms": round(percentile(reactions, 0.5) * 1e3, 2) if reactions else 0.0,
            "reaction_p99_ms": round(percentile(reactions, 0.99) * 1e3, 2) if reactions else 0.0,
            "jain": round(jain(list(counts)), 3), "lost": medium.figures.lost}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--sessions", default=",".join(map(str, SESSIONS)), help="session counts, comma-separated")
    parser.add_argument("--profiles", default="sfsk,g3,g3:0.01", help="medium profiles (name or name:loss)")
    args = parser.parse_args()
    configure(level="warning", fmt="console")
    rows: list[dict[str, object]] = []
    for profile in args.profiles.split(","):
        name, _, loss_text = profile.partition(":")
        loss = float(loss_text or 0.0)
        settings = MediumSettings.profile(name, frame_loss=loss, seed=1)
        for sessions in (int(count) for count in args.sessions.split(",")):
            measured = asyncio.run(run(settings, sessions, args.seconds))
            rows.append({"profile": name, "bit_rate": settings.bit_rate, "loss": loss, **measured})
    print("| medium | loss | sessions | exchanges/s | utilisation | reaction p50 / p99 ms | Jain |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['profile']} {row['bit_rate']} bit/s | {row['loss']:.0%} | {row['sessions']} "
              f"| {row['exchanges_per_s']} | {row['utilisation']:.1%} "
              f"| {row['reaction_p50_ms']} / {row['reaction_p99_ms']} | {row['jain']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
