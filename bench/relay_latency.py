"""Gateway-added latency, bus utilisation and fairness of the relay. Prints a table.

Everything is measured in one run on this machine, so the ratios hold even when the machine is
noisy: (1) one session, a GET through the gateway vs the same GET sent directly over HDLC to
the same simulated meter on a pty; (2) 64 HES sessions to 64 meters on one bus vs the rate one
direct client reaches on that bus, and Jain's fairness index over the sessions. Each figure is
printed for the gateway and, beside it, for the bare relay of ../shared/anchors/naive_relay.py
(the smallest asyncio wrapper->HDLC relay: no segmentation, timers or scheduling), measured the
same way with the same probe in the same run.

    python -m bench.relay_latency [--requests 2000] [--seconds 10] [--bare-relay PATH | --no-bare-relay]

The gateway's WAN limits are raised above the sessions opened (the readiness probe's connection,
still closing, must not make the 64th session one too many for max_connections_per_peer).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from bench.harness import (
    GET_LDN,
    PUBLIC_AARQ,
    RLRQ,
    DirectHdlcClient,
    bare_relay_process,
    cpu_seconds,
    gateway_process,
    jain,
    percentile,
    rss_mb,
    simulator,
)
from gateway.codec import acse
from gateway.codec.wrapper import WrapperDecoder, WrapperPdu, encode

PORT = 14059
BARE_RELAY = "anchors/naive_relay.py"  # under the shared directory beside the repository (or its worktree's)
Relay = Callable[[str, int], AbstractContextManager[int]]  # (device, meters) -> the relay process's pid


def find_bare_relay() -> Path | None:
    """../shared/anchors/naive_relay.py seen from the repository, or from a worktree two levels down."""
    here = Path(__file__).resolve().parent.parent
    for shared in (here.parent / "shared", here.parent.parent / "shared"):
        if (shared / BARE_RELAY).is_file():
            return shared / BARE_RELAY
    return None


def relays(sessions: int, bare: Path | None) -> dict[str, Relay]:
    """The relays to measure, by name: the gateway, and the bare relay when its script is there."""
    limits = (f"max_connections = {sessions + 16}\nmax_connections_per_peer = {sessions + 16}\n"
              f"max_associations_per_peer = {sessions + 16}\n")
    found: dict[str, Relay] = {
        "gateway": lambda device, meters: gateway_process(device, meters, PORT, wan_options=limits)}
    if bare is not None:
        found["bare relay"] = lambda device, meters: bare_relay_process(bare, device, meters, PORT)
    return found


def direct_round_trips(device: str, requests: int) -> list[float]:
    client = DirectHdlcClient(device, physical_address=17)
    client.connect()
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        (answer,) = client.request(GET_LDN)
        times.append(time.perf_counter() - start)
        assert answer[0] == 0xC4
    client.close()
    return times


def gateway_round_trips(requests: int) -> list[float]:
    sock = socket.create_connection(("127.0.0.1", PORT))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    decoder = WrapperDecoder()

    def exchange(apdu: bytes) -> bytes:
        sock.sendall(encode(WrapperPdu(source=16, destination=17, apdu=apdu)))
        while True:
            pdus = decoder.feed(sock.recv(65536))
            if pdus:
                return pdus[0].apdu

    assert acse.decode_aare(exchange(PUBLIC_AARQ)).result is acse.AssociationResult.ACCEPTED
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        answer = exchange(GET_LDN)
        times.append(time.perf_counter() - start)
        assert answer[0] == 0xC4
    exchange(RLRQ)
    sock.close()
    return times


async def concurrent_sessions(sessions: int, seconds: float, *, gateway_pid: int) -> tuple[list[int], float, float]:
    """Per-session exchange counts in the window, the relay's CPU seconds within that window, its RSS (MB) after."""
    async def session(meter_sap: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        decoder = WrapperDecoder()

        async def exchange(apdu: bytes) -> bytes:
            writer.write(encode(WrapperPdu(source=16, destination=meter_sap, apdu=apdu)))
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError(f"the gateway closed session {meter_sap}")
                pdus = decoder.feed(data)
                if pdus:
                    return pdus[0].apdu

        aare = acse.decode_aare(await exchange(PUBLIC_AARQ))
        assert aare.result is acse.AssociationResult.ACCEPTED, f"session {meter_sap}: {aare.result.name}"
        ready.append(meter_sap)
        if len(ready) == sessions:
            start.set()
        await start.wait()
        count = 0
        while not stop.is_set():
            assert (await exchange(GET_LDN))[0] == 0xC4
            if not stop.is_set():  # an exchange that ends after the window does not count
                count += 1
        await exchange(RLRQ)
        writer.close()
        return count

    start, stop = asyncio.Event(), asyncio.Event()
    ready: list[int] = []
    tasks = [asyncio.create_task(session(17 + i)) for i in range(sessions)]
    await asyncio.wait_for(start.wait(), 120)  # every session associated: only GETs in the window
    cpu_before = cpu_seconds(gateway_pid)
    await asyncio.sleep(seconds)
    stop.set()
    cpu = cpu_seconds(gateway_pid) - cpu_before
    counts = list(await asyncio.gather(*tasks))
    return counts, cpu, rss_mb(gateway_pid)


def direct_rate(device: str, seconds: float) -> float:
    client = DirectHdlcClient(device, physical_address=17)
    client.connect()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        client.request(GET_LDN)
        count += 1
    rate = count / (time.perf_counter() - started)
    client.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--bare-relay", type=Path, default=find_bare_relay(), help="naive_relay.py of the anchors")
    parser.add_argument("--no-bare-relay", action="store_true", help="measure the gateway only")
    args = parser.parse_args()
    measured = relays(args.sessions, None if args.no_bare_relay else args.bare_relay)
    if "bare relay" not in measured and not args.no_bare_relay:
        print("(no bare relay: ../shared/anchors/naive_relay.py not found; --bare-relay PATH)")

    print("## 1 session: GET logical device name, round-trip time (ms)\n")
    round_trips: dict[str, list[float]] = {}
    with simulator(args.sessions) as device:
        round_trips["direct HDLC on pty"] = direct_round_trips(device, args.requests)
        for name, relay in measured.items():
            with relay(device, args.sessions):
                round_trips[f"HES -> {name} -> HDLC"] = gateway_round_trips(args.requests)
    print(f"| path ({args.requests} GETs) | p50 | p99 | mean | added p50 | added p99 |")
    print("|---|---:|---:|---:|---:|---:|")
    direct = round_trips["direct HDLC on pty"]
    for name, values in round_trips.items():
        added = "| | " if values is direct else (
            f"| **{(percentile(values, .5) - percentile(direct, .5)) * 1e3:.3f}** "
            f"| **{(percentile(values, .99) - percentile(direct, .99)) * 1e3:.3f}** ")
        print(f"| {name} | {percentile(values, .5) * 1e3:.3f} | {percentile(values, .99) * 1e3:.3f} "
              f"| {sum(values) / len(values) * 1e3:.3f} {added}|")

    print(f"\n## {args.sessions} sessions to {args.sessions} meters on one bus "
          f"({args.seconds:.0f} s; {6 * args.seconds:.0f} s at 19200 bit/s)\n")
    print("| line | relay | direct client (exch/s) | through relay (exch/s) | ratio | Jain fairness "
          "| CPU per exchange (µs) | RSS after (MB) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for bit_rate, seconds in ((None, args.seconds), (115200, args.seconds), (19200, 6 * args.seconds)):
        line = f"{bit_rate} bit/s" if bit_rate else "pty, no line delay (CPU bound)"
        with simulator(args.sessions, bit_rate=bit_rate) as device:
            baseline = direct_rate(device, min(seconds, 10.0))
            for name, relay in measured.items():
                with relay(device, args.sessions) as pid:
                    counts, cpu, rss = asyncio.run(concurrent_sessions(args.sessions, seconds, gateway_pid=pid))
                total = sum(counts) / seconds
                per_exchange_us = cpu / max(1, sum(counts)) * 1e6
                print(f"| {line} | {name} | {baseline:.0f} | {total:.0f} | {total / baseline:.1%} "
                      f"| {jain(counts):.3f} | {per_exchange_us:.0f} | {rss:.0f} |", flush=True)


if __name__ == "__main__":
    main()
