"""Meters that outlive the gateway: polled meters on a pty in their own process.

    python -m tests.poller.simproc --meters 2 --path-file F --status-file S

Writes the pty path to F once serving. On SIGTERM it writes what the meters saw to S (JSON: per
meter, associations, replayed counters rejected, failed deciphering) and exits: that is how a
test learns whether the gateway ever sent an invocation counter twice, with no API in between.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
from pathlib import Path

from gateway.sim.bus import SimMeter, SimulatedBus
from gateway.sim.pty import open_pty
from tests.poller.meters import build_polled_meter, reader_settings


async def serve(*, meters: int, path_file: Path, status_file: Path) -> None:
    def now() -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    devices = [build_polled_meter(reader_settings(1 + i), clock=now) for i in range(meters)]
    pty = open_pty()
    bus = SimulatedBus(meters=[SimMeter(physical_address=17 + i, device=d) for i, d in enumerate(devices)])
    bus.attach(pty.master_fd)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await asyncio.to_thread(path_file.write_text, pty.slave_path)
    await stop.wait()
    bus.detach()
    status = [{"associations": d.counters.associations, "replay_rejections": d.counters.replay_rejections,
               "decrypt_failures": d.counters.decrypt_failures, "hls_failures": d.counters.hls_failures,
               "rejections": d.counters.rejections} for d in devices]
    await asyncio.to_thread(status_file.write_text, json.dumps(status))
    pty.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--meters", type=int, default=2)
    parser.add_argument("--path-file", type=Path, required=True)
    parser.add_argument("--status-file", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(meters=args.meters, path_file=args.path_file, status_file=args.status_file))


if __name__ == "__main__":
    main()
