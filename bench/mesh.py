"""The gateway relaying to IPv6 mesh meters: 1,000 simulated UDP meters behind the mesh emulator.

Three processes: the meters with their emulator (`gateway.sim.mesh_fleet`, 200 ms RTT, 1 % loss
each way, no jitter so that latencies compare), the gateway daemon (one [[meshes]], every meter
in [[meters]]), and this one, the head-end: HES sessions, each on its own TCP connection, that
associate as the public client and then read the logical device name again and again. A timeout
(a lost datagram) answers with an exception-response; the session associates again.

Printed, and with --json as JSON:
- reads/s (GET answered) with 256 sessions against the in-flight limit (1, 8, 32), the gateway's
  RSS with 1,000 meters and 256 sessions, its CPU per relayed exchange (AARQ or GET);
- gateway-added latency: the same GET sent directly to the meter through the emulator, against
  through the gateway, at a load below the in-flight limit (p50/p99 over the answered reads).

    python -m bench.mesh [--meters 1000] [--sessions 256] [--seconds 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import GET_LDN, PUBLIC_AARQ, cpu_seconds, percentile, wait_for_wan
from gateway.codec import acse
from gateway.codec.datagram import decode_datagram
from gateway.codec.wrapper import WrapperDecoder, WrapperPdu, encode
from gateway.sim.meter import PUBLIC_CLIENT

ONE_WAY_MS = 100.0  # 200 ms RTT
LOSS = 0.01
RESPONSE_TIMEOUT_S = 1.0  # five round trips: only a lost datagram times out
FIRST_SAP = 17
ALL_STATION_SAP = 0x7F  # never a meter's


def meter_saps(count: int) -> list[int]:
    """The SAPs the meters get, in the order of the fleet's meters."""
    return [sap for sap in range(FIRST_SAP, FIRST_SAP + count + 1) if sap != ALL_STATION_SAP][:count]
GET_RESPONSE, AARE, EXCEPTION_RESPONSE = 0xC4, 0x61, 0xD8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def mesh_fleet(meters: int, *, seed: int) -> Iterator[list[tuple[str, int]]]:
    """The meters and their emulator in their own process; yields each meter's front address."""
    with tempfile.TemporaryDirectory() as tmp:
        addresses = Path(tmp) / "meters.txt"
        proc = subprocess.Popen([sys.executable, "-m", "gateway.sim.mesh_fleet", "--meters", str(meters),
                                 "--delay-ms", str(ONE_WAY_MS), "--jitter-ms", "0", "--loss", str(LOSS),
                                 "--seed", str(seed), "--address-file", str(addresses)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while not addresses.exists() or len(addresses.read_text().splitlines()) < meters:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("mesh fleet did not start")
                time.sleep(0.1)
            fronts = [line.split()[:2] for line in addresses.read_text().splitlines()]
            yield [(host, int(port)) for host, port in fronts]
        finally:
            proc.terminate()
            proc.wait(10)


@contextmanager
def gateway_process(fronts: list[tuple[str, int]], *, in_flight: int, sessions: int) -> Iterator[tuple[int, int]]:
    """The daemon relaying to the fleet; yields (pid, WAN port)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "gateway.toml"
        parts = [f'[wan]\nlisten = ["127.0.0.1"]\nport = {port}\nmax_connections = {sessions + 16}\n'
                 f"max_connections_per_peer = {sessions + 16}\n",
                 '[log]\nlevel = "warning"\n',
                 f'[paths]\nstate_directory = "{tmp}/state"\nruntime_directory = "{tmp}/run"\n'
                 f'keys_file = "{tmp}/keys.toml"\n[registry]\nidentify = false\nflush_interval_s = 600.0\n',
                 f'[[meshes]]\nname = "mesh0"\nsource_address = "::1"\nport = 0\nmax_in_flight = {in_flight}\n'
                 f"max_queued = {4 * sessions}\nresponse_timeout_s = {RESPONSE_TIMEOUT_S}\n"]
        parts += [f'[[meters]]\nsap = {sap}\nlink = "mesh0"\naddress = "[{host}]:{meter_port}"\n'
                  for sap, (host, meter_port) in zip(meter_saps(len(fronts)), fronts, strict=True)]
        config.write_text("\n".join(parts))
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "run", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_wan(port, proc, timeout_s=120.0)
            yield proc.pid, port
        finally:
            proc.terminate()
            proc.wait(10)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Tally:
    reads: int = 0
    exchanges: int = 0  # AARQ and GET answered by the meter
    refused: int = 0  # exception-responses and rejected AAREs: a lost datagram, or the quiet period after
    latencies: list[float] = field(default_factory=list)


async def hes_session(port: int, sap: int, until: float, tally: Tally) -> None:
    """Associate, read, read, ...; associate again after a timeout ended the association."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    decoder, pending = WrapperDecoder(), list[WrapperPdu]()
    loop = asyncio.get_running_loop()

    async def exchange(apdu: bytes) -> bytes | None:
        writer.write(encode(WrapperPdu(source=PUBLIC_CLIENT, destination=sap, apdu=apdu)))
        while not pending:
            try:
                data = await asyncio.wait_for(reader.read(65536), until - loop.time())
            except TimeoutError:
                return None
            if not data:
                return None
            pending.extend(decoder.feed(data))
        return pending.pop(0).apdu

    associated = False
    try:
        while loop.time() < until:
            if not associated:
                answer = await exchange(PUBLIC_AARQ)
                associated = answer is not None and answer[0] == AARE and acse.association_accepted(answer)
                if answer is not None:
                    tally.exchanges += associated
                    tally.refused += not associated
                continue
            start = loop.time()
            answer = await exchange(GET_LDN)
            if answer is None:
                break
            if answer[0] == GET_RESPONSE:
                tally.reads += 1
                tally.exchanges += 1
                tally.latencies.append(loop.time() - start)
            else:
                tally.refused += 1
                associated = False
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class _Direct(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answers: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.answers.put_nowait(decode_datagram(data).apdu)


async def direct_session(front: tuple[str, int], until: float, tally: Tally) -> None:
    """The baseline: the same AARQ and GETs sent straight to the meter (through the emulator), no gateway."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Direct, local_addr=("::1", 0))
    try:
        apdu = PUBLIC_AARQ
        while loop.time() < until:
            start = loop.time()
            transport.sendto(encode(WrapperPdu(source=PUBLIC_CLIENT, destination=1, apdu=apdu)), front)
            try:
                answer = await asyncio.wait_for(protocol.answers.get(), RESPONSE_TIMEOUT_S)
            except TimeoutError:
                tally.refused += 1
                continue
            if answer[0] == GET_RESPONSE:
                tally.reads += 1
                tally.latencies.append(loop.time() - start)
            apdu = GET_LDN
    finally:
        transport.close()


async def through_gateway(port: int, saps: list[int], seconds: float) -> Tally:
    tally = Tally()
    until = asyncio.get_running_loop().time() + seconds
    await asyncio.gather(*(hes_session(port, sap, until, tally) for sap in saps))
    return tally


async def direct(fronts: list[tuple[str, int]], seconds: float) -> Tally:
    tally = Tally()
    until = asyncio.get_running_loop().time() + seconds
    await asyncio.gather(*(direct_session(front, until, tally) for front in fronts))
    return tally


def ms(values: list[float], fraction: float) -> float:
    return round(1000 * percentile(values, fraction), 2) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--latency-sessions", type=int, default=16, help="below every in-flight limit but 1")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sessions = min(args.sessions, args.meters)
    result: dict[str, object] = {"meters": args.meters, "sessions": sessions, "seconds": args.seconds,
                                 "mesh": {"rtt_ms": 2 * ONE_WAY_MS, "loss_each_way": LOSS}}
    rows = []
    relayed = Tally()
    with mesh_fleet(args.meters, seed=args.seed) as fronts:
        # Gateway-added latency first: the direct reads, then the same through the gateway (32 in flight).
        low = fronts[:args.latency_sessions]
        baseline = asyncio.run(direct(low, args.seconds))
        for limit in (32, 8, 1):
            with gateway_process(fronts, in_flight=limit, sessions=sessions) as (pid, port):
                if limit == 32:
                    relayed = asyncio.run(through_gateway(port, meter_saps(len(low)), args.seconds))
                cpu_before = cpu_seconds(pid)
                tally = asyncio.run(through_gateway(port, meter_saps(sessions), args.seconds))
                cpu = cpu_seconds(pid) - cpu_before
                rows.append({"in_flight_limit": limit, "reads_per_s": round(tally.reads / args.seconds, 1),
                             "exchanges_per_s": round(tally.exchanges / args.seconds, 1),
                             "read_p50_ms": ms(tally.latencies, 0.5), "read_p99_ms": ms(tally.latencies, 0.99),
                             "refused": tally.refused, "rss_mb": round(rss_mb(pid), 1),
                             "cpu_us_per_exchange": round(1e6 * cpu / max(1, tally.exchanges), 1)})
    result["by_in_flight_limit"] = rows
    result["added_latency"] = {
        "sessions": len(low), "direct_reads": baseline.reads, "relayed_reads": relayed.reads,
        "direct_p50_ms": ms(baseline.latencies, 0.5), "relayed_p50_ms": ms(relayed.latencies, 0.5),
        "direct_p99_ms": ms(baseline.latencies, 0.99), "relayed_p99_ms": ms(relayed.latencies, 0.99),
        "added_p50_ms": round(ms(relayed.latencies, 0.5) - ms(baseline.latencies, 0.5), 2),
        "added_p99_ms": round(ms(relayed.latencies, 0.99) - ms(baseline.latencies, 0.99), 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.meters} UDP meters behind the mesh emulator ({2 * ONE_WAY_MS:.0f} ms RTT, {LOSS:.0%} loss each "
          f"way), {sessions} HES sessions, {args.seconds:.0f} s per run, on {os.cpu_count()} cores")
    print("(reads: GETs answered; exchanges: AARQs and GETs answered; 'refused': exception-responses and rejected "
          "AAREs, from lost datagrams and from queueing beyond the relay's exchange timeout)")
    print(f"{'in flight':>9} {'reads/s':>8} {'exch/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'refused':>8} {'RSS MB':>7} "
          f"{'CPU us/exch':>11}")
    for row in rows:
        print(f"{row['in_flight_limit']:>9} {row['reads_per_s']:>8} {row['exchanges_per_s']:>7} "
              f"{row['read_p50_ms']:>8} {row['read_p99_ms']:>8} "
              f"{row['refused']:>8} {row['rss_mb']:>7} {row['cpu_us_per_exchange']:>11}")
    added = result["added_latency"]
    assert isinstance(added, dict)
    print(f"gateway-added latency ({added['sessions']} sessions, 32 in flight): p50 {added['added_p50_ms']} ms "
          f"({added['direct_p50_ms']} -> {added['relayed_p50_ms']}), p99 {added['added_p99_ms']} ms "
          f"({added['direct_p99_ms']} -> {added['relayed_p99_ms']})")


if __name__ == "__main__":
    main()
