"""How well the gateway keeps a slow shared medium busy: sessions to different meters on a simulated PLC line.

    python -m bench.medium [--seconds 20] [--json FILE] [--concurrent 1,8] [--workloads get,list]

The gateway runs as its own process; the meters sit behind the simulated medium of
gateway/sim/medium.py (one half-duplex timeline with bit rate, per-frame latency and turnaround,
seeded loss) on a pty in this process, and K HES sessions (K = 1, 4, 16, 64) each read their own
meter in a loop through the gateway. Printed per profile and K: exchanges/s, medium utilisation
(airtime / wall time), the gateway's reaction gap (from a meter's frame reaching it to the next
frame it sends: what the gateway adds to the medium's idle time) p50/p99, and Jain's fairness
over the sessions' exchange counts.

`concurrent` is the line's `[[links]] concurrent_exchanges`: 1 is a wire's one exchange at a
time; more is a modem whose MAC queues frames, so exchanges with several meters are outstanding at
once and the medium carries one while another meter's answer is still in its latency. Workloads:
`get` (the logical device name: a 13-octet request, a 22-octet answer) and `list` (the association's
object list: a 374-octet answer, what a head-end reads when it meets a meter). The meters accept
window 7 / 2,030 octets, as the gateway proposes.

The medium is never free sooner than a turnaround after each frame, so utilisation is bounded by
airtime / (airtime + frames x turnaround) for the frames carried: with tiny frames at 20 kbit/s and
10 ms turnaround that bound is low whatever the gateway does. It is printed beside the measurement
("bound"), and "of bound" is the share of it the gateway reached.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from bench.harness import GET_LDN, PUBLIC_AARQ, gateway_process, jain, percentile
from gateway.codec import acse
from gateway.codec.hdlc import HdlcParameters, ServerSettings
from gateway.codec.wrapper import WrapperDecoder, WrapperPdu, encode
from gateway.log import configure
from gateway.sim.bus import SimMeter, SimulatedBus
from gateway.sim.medium import BITS_PER_OCTET, MediumSettings, SimulatedMedium
from gateway.sim.meter import SimMeterSettings, build_meter
from gateway.sim.pty import open_pty

PORT = 24063
MIN_EXCHANGES = 3  # per session in the measured window
MAX_WINDOW_S = 300.0
LOG_FILE = Path("/tmp/bench-medium-gateway.log")  # the gateway's warnings, for a run that goes wrong
METERS = 64
SESSIONS = (1, 4, 16, 64)
CAPABLE = ServerSettings(supported=HdlcParameters(max_info_tx=2030, max_info_rx=2030, window_tx=7, window_rx=7))
GET_OBJECT_LIST = bytes.fromhex("C001C1000F0000280000FF0200")  # association LN (IC 15) 0.0.40.0.0.255, attribute 2
WORKLOADS = {"get": GET_LDN, "list": GET_OBJECT_LIST}
LONGEST_FRAME = {"get": 40, "list": 400}  # octets of the longest frame of an exchange (the answer), HDLC included
RESPONSE_TIMEOUT_S = 3.0  # for the meter's answer on an otherwise idle medium
# A head-end on PLC waits long: at 2,400 bit/s one round of 64 object-list reads is ~110 s of airtime
HES_TIMEOUT_S = 600.0


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def session(meter_sap: int, stop: asyncio.Event, associated: asyncio.Semaphore, counts: list[int],
                  index: int, *, read: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    decoder = WrapperDecoder()

    async def request(apdu: bytes) -> bytes:
        writer.write(encode(WrapperPdu(source=16, destination=meter_sap, apdu=apdu)))
        pdus: list[WrapperPdu] = []
        while not pdus:
            data = await asyncio.wait_for(reader.read(65536), HES_TIMEOUT_S)
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
        if (await request(read))[0] == 0xC4:
            counts[index] += 1
    writer.close()


async def run(settings: MediumSettings, sessions: int, seconds: float, *, concurrent: int = 1,
              workload: str = "get") -> dict[str, Any]:
    pty = open_pty()
    meters = [SimMeter(physical_address=17 + i, device=build_meter(SimMeterSettings.demo(serial_number=1 + i),
                                                                   clock=utc_now)) for i in range(METERS)]
    medium = SimulatedMedium(SimulatedBus(meters=meters, settings=CAPABLE), settings)
    medium.attach(pty.master_fd)
    # a poll may wait in the modem's queue behind the other exchanges outstanding (a request and an answer each):
    # the response timer allows for them, and no more, so a lost frame costs little more than on a wire
    queued_s = (concurrent - 1) * 2 * (LONGEST_FRAME[workload] * BITS_PER_OCTET / settings.bit_rate
                                       + settings.turnaround_s)
    options = f"response_timeout_s = {RESPONSE_TIMEOUT_S + queued_s:.2f}\nconcurrent_exchanges = {concurrent}\n"
    try:
        with gateway_process(pty.slave_path, METERS, PORT, link_options=options,
                             extra="[relay]\nexchange_timeout_s = 120.0\n", log_file=LOG_FILE):
            stop = asyncio.Event()
            associated = asyncio.Semaphore(0)
            running = [0] * sessions
            tasks = [asyncio.create_task(session(17 + i, stop, associated, running, i, read=WORKLOADS[workload]))
                     for i in range(sessions)]
            for _ in range(sessions):  # every session associated: measure the steady state only
                await asyncio.wait_for(associated.acquire(), 600)
            before = list(running)
            started = time.monotonic()
            airtime, frames = medium.airtime_carried_s(started), medium.figures.frames
            reactions_before = len(medium.figures.reactions_s)
            await asyncio.sleep(seconds)
            # fairness needs a few exchanges per session: a slow medium with many sessions runs longer
            for _ in range(int(MAX_WINDOW_S - seconds)):
                if min(after - then for after, then in zip(running, before, strict=True)) >= MIN_EXCHANGES:
                    break
                await asyncio.sleep(1.0)
            ended = time.monotonic()
            wall, used = ended - started, medium.airtime_carried_s(ended) - airtime
            carried = medium.figures.frames - frames
            counts = [after - then for after, then in zip(running, before, strict=True)]
            reactions = list(medium.figures.reactions_s)[reactions_before:]
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        medium.detach()
        pty.close()
    bound = used / (used + carried * settings.turnaround_s) if used else 0.0
    return {"sessions": sessions, "concurrent": concurrent, "workload": workload,
            "exchanges_per_s": round(sum(counts) / (wall + 1e-9), 2),
            "utilisation": round(used / wall, 3), "bound": round(bound, 3),
            "reaction_p50_ms": round(percentile(reactions, 0.5) * 1e3, 2) if reactions else 0.0,
            "reaction_p99_ms": round(percentile(reactions, 0.99) * 1e3, 2) if reactions else 0.0,
            "jain": round(jain(list(counts)), 3), "lost": medium.figures.lost}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--sessions", default=",".join(map(str, SESSIONS)), help="session counts, comma-separated")
    parser.add_argument("--profiles", default="sfsk,g3,g3:0.01", help="medium profiles (name or name:loss)")
    parser.add_argument("--concurrent", default="1,8", help="[[links]] concurrent_exchanges values, comma-separated")
    parser.add_argument("--workloads", default="get,list", help=f"what each session reads: {', '.join(WORKLOADS)}")
    args = parser.parse_args()
    configure(level="warning", fmt="console")
    rows: list[dict[str, object]] = []
    print("| medium | loss | workload | concurrent | sessions | exchanges/s | utilisation | bound | of bound "
          "| reaction p50 / p99 ms | Jain |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for profile in args.profiles.split(","):
        name, _, loss_text = profile.partition(":")
        loss = float(loss_text or 0.0)
        settings = MediumSettings.profile(name, frame_loss=loss, seed=1)
        for workload in args.workloads.split(","):
            for concurrent in (int(value) for value in args.concurrent.split(",")):
                for sessions in (int(count) for count in args.sessions.split(",")):
                    measured = asyncio.run(run(settings, sessions, args.seconds, concurrent=concurrent,
                                               workload=workload))
                    row = {"profile": name, "bit_rate": settings.bit_rate, "loss": loss, **measured}
                    rows.append(row)
                    share = measured["utilisation"] / measured["bound"] if measured["bound"] else 0.0
                    print(f"| {name} {settings.bit_rate} bit/s | {loss:.0%} | {workload} | {concurrent} | {sessions} "
                          f"| {measured['exchanges_per_s']} | {measured['utilisation']:.1%} | {measured['bound']:.1%} "
                          f"| {share:.0%} | {measured['reaction_p50_ms']} / {measured['reaction_p99_ms']} "
                          f"| {measured['jain']} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
