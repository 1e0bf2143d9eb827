"""Gateway-added latency, bus utilisation and fairness of the relay. Prints a table.

Everything is measured in one run on this machine, so the ratios hold even when the machine is
noisy: (1) one session, a GET through the gateway vs the same GET sent directly over HDLC to
the same simulated meter on a pty; (2) 64 HES sessions to 64 meters on one bus vs the rate one
direct client reaches on that bus, and Jain's fairness index over the sessions.

    python -m bench.relay_latency [--requests 2000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time

from bench.harness import (
    GET_LDN,
    PUBLIC_AARQ,
    RLRQ,
    DirectHdlcClient,
    cpu_seconds,
    gateway_process,
    jain,
    percentile,
    simulator,
)
from gateway.codec import acse
from gateway.codec.wrapper import WrapperDecoder, WrapperPdu, encode

PORT = 14059


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


async def concurrent_sessions(sessions: int, seconds: float, *, gateway_pid: int) -> tuple[list[int], float]:
    """Per-session exchange counts in the window, and the gateway's CPU seconds within that window."""
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
    return list(await asyncio.gather(*tasks)), cpu


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
    args = parser.parse_args()

    print("## 1 session: GET logical device name, round-trip time (ms)\n")
    with simulator(args.sessions) as device:
        direct = direct_round_trips(device, args.requests)
        with gateway_process(device, args.sessions, PORT):
            relayed = gateway_round_trips(args.requests)
    print(f"| path ({args.requests} GETs) | p50 | p99 | mean |")
    print("|---|---:|---:|---:|")
    for name, values in (("direct HDLC on pty", direct), ("HES -> gateway -> HDLC", relayed)):
        print(f"| {name} | {percentile(values, .5) * 1e3:.3f} | {percentile(values, .99) * 1e3:.3f} "
              f"| {sum(values) / len(values) * 1e3:.3f} |")
    added_p50 = (percentile(relayed, .5) - percentile(direct, .5)) * 1e3
    added_p99 = (percentile(relayed, .99) - percentile(direct, .99)) * 1e3
    print(f"| **gateway-added** | **{added_p50:.3f}** | **{added_p99:.3f}** | |")

    print(f"\n## {args.sessions} sessions to {args.sessions} meters on one bus "
          f"({args.seconds:.0f} s; {6 * args.seconds:.0f} s at 19200 bit/s)\n")
    print("| line | direct client (exch/s) | through gateway (exch/s) | ratio | Jain fairness "
          "| gateway CPU per exchange (µs) |")
    print("|---|---:|---:|---:|---:|---:|")
    for bit_rate, seconds in ((None, args.seconds), (115200, args.seconds), (19200, 6 * args.seconds)):
        with simulator(args.sessions, bit_rate=bit_rate) as device:
            baseline = direct_rate(device, min(seconds, 10.0))
            with gateway_process(device, args.sessions, PORT) as pid:
                counts, cpu = asyncio.run(concurrent_sessions(args.sessions, seconds, gateway_pid=pid))
        total = sum(counts) / seconds
        name = f"{bit_rate} bit/s" if bit_rate else "pty, no line delay (CPU bound)"
        per_exchange_us = cpu / max(1, sum(counts)) * 1e6
        print(f"| {name} | {baseline:.0f} | {total:.0f} | {total / baseline:.1%} | {jain(counts):.3f} "
              f"| {per_exchange_us:.0f} |")


if __name__ == "__main__":
    main()
