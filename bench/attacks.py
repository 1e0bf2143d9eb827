"""Hostile peers against a running gateway: a good HES's latency and the daemon's log volume under each attack.

    python -m bench.attacks [--seconds 3] [--json FILE]

The gateway runs as its own process at the production log level (info, JSON), its output in a
file; the simulated meters run on a pty in this process so that forged frames can be written onto
the meter line as a hostile device would. For each attack, a good HES reads meter 17 in a loop
(one GET at a time) while the attacker works; the table gives the good HES's GETs, p50 and p99,
the log bytes the daemon wrote per second of attack, and whether the daemon survived. Compare
each row with the quiet row of the same run: these machines are shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.harness import GET_LDN, PUBLIC_AARQ, percentile, wait_for_wan
from gateway.codec.hdlc import HdlcAddress, HdlcFrame, encode_frame
from gateway.codec.wrapper import WrapperDecoder, WrapperPdu, encode
from gateway.sim.bus import SimMeter, SimulatedBus
from gateway.sim.meter import SimMeterSettings, build_meter
from gateway.sim.pty import open_pty

METERS = 4
# From issue 9: a stranger's AARQ to SAP 1, an HDLC REJ frame (a control field DLMS does not define).
STRANGER_AARQ = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400007E1FFFFF")
REJ_FRAME = bytes.fromhex("7ea00821025109d35c7e")
DATA_NOTIFICATION = bytes.fromhex("0f0000000100") + bytes.fromhex("0906") + b"FORGED"

Attack = Callable[[int, int, float], Awaitable[int]]  # (gateway port, pty master fd, seconds) -> units sent


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def gateway(device: str, port: int, log_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    with tempfile.TemporaryDirectory(prefix="gw-attacks-") as tmp:
        config = Path(tmp) / "gateway.toml"
        meters = "".join(f'[[meters]]\nsap = {17 + i}\nlink = "bus0"\nphysical_address = {17 + i}\n'
                         for i in range(METERS))
        config.write_text(
            f'[wan]\nlisten = ["127.0.0.1"]\nport = {port}\n[log]\nlevel = "info"\nformat = "json"\n'
            f'[paths]\nstate_directory = "{tmp}/state"\nruntime_directory = "{tmp}/run"\nkeys_file = "{tmp}/k"\n'
            f'[registry]\nidentify = false\n[[links]]\nname = "bus0"\ndevice = "{device}"\nbaudrate = 115200\n'
            f'response_timeout_s = 0.2\n{meters}')
        with log_file.open("wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "run", "--config", str(config)],
                                       stdout=out, stderr=subprocess.STDOUT)
            try:
                wait_for_wan(port, process)
                yield process
            finally:
                process.terminate()
                process.wait(10)


class Hes:
    """A wrapper-level head-end: one request at a time, or a flood."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.decoder = reader, writer, WrapperDecoder()
        self.pending: list[WrapperPdu] = []

    @classmethod
    async def connect(cls, port: int) -> Hes:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, *, client: int, sap: int, apdu: bytes) -> WrapperPdu:
        self.writer.write(encode(WrapperPdu(source=client, destination=sap, apdu=apdu)))
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), 10.0)
            if not data:
                raise ConnectionError("closed by the gateway")
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    def close(self) -> None:
        self.writer.close()


async def good_hes(port: int, stop: asyncio.Event) -> list[float]:
    hes = await Hes.connect(port)
    await hes.request(client=16, sap=17, apdu=PUBLIC_AARQ)
    times = []
    while not stop.is_set():
        started = time.perf_counter()
        await hes.request(client=16, sap=17, apdu=GET_LDN)
        times.append(time.perf_counter() - started)
    hes.close()
    return times


async def quiet(port: int, master: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return 0


async def pipelining_flood(port: int, master: int, seconds: float) -> int:
    """D7: 64 GETs at a time on one association, far past the 8 a HES may have outstanding."""
    hes = await Hes.connect(port)
    await hes.request(client=16, sap=18, apdu=PUBLIC_AARQ)
    burst = encode(WrapperPdu(source=16, destination=18, apdu=GET_LDN)) * 64
    sent = 0
    ends = time.monotonic() + seconds
    with contextlib.suppress(ConnectionError, OSError):
        while time.monotonic() < ends:
            hes.writer.write(burst)
            sent += 64
            await hes.writer.drain()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.01):
                    await hes.reader.read(1 << 20)
    hes.close()
    return sent


async def connection_flood(port: int, master: int, seconds: float) -> int:
    """D7: connections opened and dropped as fast as this process can."""
    opened = 0
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            opened += 1
    return opened


async def stranger_at_sap_1(port: int, master: int, seconds: float) -> int:
    """D1/D2: refused AARQs to SAP 1 from client 1, again and again, on new connections."""
    sent = 0
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            hes = await Hes.connect(port)
            await hes.request(client=1, sap=1, apdu=STRANGER_AARQ)
            hes.close()
            sent += 1
    return sent


async def forged_pushes(port: int, master: int, seconds: float) -> int:
    """D3: UI pushes from 1,000 addresses nobody registered, written onto the meter line."""
    frames = [encode_frame(HdlcFrame(destination=HdlcAddress.client(16),
                                     source=HdlcAddress.server(logical_device=1, physical_address=100 + n),
                                     control=0x13, info=b"\xe6\xe7\x00" + DATA_NOTIFICATION)) for n in range(1000)]
    sent = 0
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        with contextlib.suppress(BlockingIOError):
            os.write(master, frames[sent % len(frames)])
            sent += 1
        await asyncio.sleep(0.002)
    return sent


async def undefined_frames(port: int, master: int, seconds: float) -> int:
    """D5: REJ frames (a control field DLMS does not define) on the meter line."""
    sent = 0
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        with contextlib.suppress(BlockingIOError):
            os.write(master, REJ_FRAME * 10)
            sent += 10
        await asyncio.sleep(0.002)
    return sent


ATTACKS: dict[str, Attack] = {
    "quiet (no attack)": quiet,
    "pipelining flood (D7)": pipelining_flood,
    "connection flood (D7)": connection_flood,
    "stranger AARQs to SAP 1 (D1/D2)": stranger_at_sap_1,
    "forged pushes from 1,000 addresses (D3)": forged_pushes,
    "undefined HDLC frames (D5)": undefined_frames,
}


async def run_attack(attack: Attack, *, port: int, master: int, seconds: float) -> tuple[list[float], int]:
    stop = asyncio.Event()
    reader = asyncio.create_task(good_hes(port, stop))
    units = await attack(port, master, seconds)
    stop.set()
    return await reader, units


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def main_async(seconds: float) -> list[dict[str, object]]:
    pty = open_pty()
    meters = [SimMeter(physical_address=17 + i, device=build_meter(SimMeterSettings.demo(serial_number=1 + i),
                                                                        clock=utc_now))
              for i in range(METERS)]
    bus = SimulatedBus(meters=meters)
    bus.attach(pty.master_fd)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="gw-attacks-log-") as tmp:
        log_file = Path(tmp) / "daemon.log"
        port = free_port()
        with gateway(pty.slave_path, port, log_file) as process:
            for name, attack in ATTACKS.items():
                before = log_file.stat().st_size
                times, units = await run_attack(attack, port=port, master=pty.master_fd, seconds=seconds)
                await asyncio.sleep(0.2)  # lines the attack caused are written
                written = log_file.stat().st_size - before
                rows.append({"attack": name, "units": units, "good_gets": len(times),
                             "good_p50_ms": round(percentile(times, .5) * 1e3, 3),
                             "good_p99_ms": round(percentile(times, .99) * 1e3, 3),
                             "log_bytes_per_s": round(written / seconds), "daemon_alive": process.poll() is None,
                             "rss_mb": round(rss_kb(process.pid) / 1024, 1)})
    bus.detach()
    pty.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each attack")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = asyncio.run(main_async(args.seconds))
    print(f"| attack ({args.seconds:.0f} s each) | units sent | good HES GETs | p50 ms | p99 ms "
          "| log bytes/s | daemon alive | RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for row in rows:
        print(f"| {row['attack']} | {row['units']} | {row['good_gets']} | {row['good_p50_ms']} | {row['good_p99_ms']} "
              f"| {row['log_bytes_per_s']} | {'yes' if row['daemon_alive'] else 'NO'} | {row['rss_mb']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
