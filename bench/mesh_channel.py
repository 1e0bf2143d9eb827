"""Mesh channel throughput against the in-flight limit: simulated UDP meters behind the mesh emulator.

No gateway process yet (the relay integration comes later): HES-like sessions drive the mesh
endpoint directly, so the figures show what the medium allows: exchanges/s (AARQ or GET, each
one request and its answer) for in-flight limits of 1, 8 and 32 at a 200 ms RTT with 1 % loss,
the time from `send_apdu` to the answer (queueing for a slot included), timeouts, and the
emulator's own measurements.

    python -m bench.mesh_channel [--meters 100] [--sessions 64] [--seconds 4] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import json
import time

from bench.harness import GET_LDN, PUBLIC_AARQ, percentile
from gateway.log import configure as configure_logging
from gateway.media.channel import ApduReceived, Association, ChannelEvent, IpMeter
from gateway.media.mesh import MeshBinding, MeshEndpoint
from gateway.media.mesh_core import MeshSettings
from gateway.sim.mesh_fleet import start_mesh_fleet
from gateway.sim.mesh_model import MeshConditions
from gateway.sim.meter import PUBLIC_CLIENT

CONDITIONS = MeshConditions(delay_s=0.100, jitter_s=0.020, loss=0.01)  # 200 ms RTT, 1 % loss each way


async def session(endpoint: MeshEndpoint, association: Association, until: float, latencies: list[float]) -> int:
    """Exchanges until `until`; returns the number answered."""
    events: asyncio.Queue[ChannelEvent] = asyncio.Queue()
    channel = endpoint.open(association, events.put_nowait)
    answered, apdu = 0, PUBLIC_AARQ
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        start = loop.time()
        channel.send_apdu(apdu)
        try:
            event = await asyncio.wait_for(events.get(), timeout=until - start)
        except TimeoutError:  # time is up with this exchange still queued or in flight: not counted
            break
        if isinstance(event, ApduReceived):
            latencies.append(loop.time() - start)
            answered += 1
            apdu = GET_LDN
        else:  # a timeout: the channel is gone; reopen (the meter keeps the association)
            channel = endpoint.open(association, events.put_nowait)
    channel.close()
    return answered


async def run(limit: int, *, meters: int, sessions: int, seconds: float, seed: int) -> dict[str, object]:
    endpoint = MeshEndpoint(name="bench", settings=MeshSettings(max_in_flight=limit, response_timeout_s=1.0,
                                                                max_queued=4 * sessions))
    await endpoint.start(MeshBinding(host="::1", port=0))
    fleet = await start_mesh_fleet(meters, conditions=CONDITIONS, seed=seed, gateway=endpoint.local_address)
    fronts = [route.front for route in fleet.routes]
    latencies: list[float] = []
    started = time.perf_counter()
    until = asyncio.get_running_loop().time() + seconds
    answered = await asyncio.gather(*(
        session(endpoint, Association(client_sap=PUBLIC_CLIENT, logical_device=1,
                                      meter=IpMeter(ipaddress.IPv6Address("::1"), fronts[index % meters][1])),
                until, latencies)
        for index in range(sessions)
    ))
    elapsed = time.perf_counter() - started
    fleet.close()
    endpoint.stop()
    await asyncio.sleep(0)  # let the transports finish closing before the loop ends
    figures = fleet.emulator.figures
    return {
        "in_flight_limit": limit,
        "exchanges_per_s": round(sum(answered) / elapsed, 1),
        "exchange_p50_ms": round(1000 * percentile(latencies, 0.5), 1),
        "exchange_p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "timeouts": endpoint.network.counters.timeouts,
        "emulator": {key: round(value, 4) if isinstance(value, float) else value
                     for key, value in dataclasses.asdict(figures).items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_logging(level="warning", fmt="console")
    rows = [asyncio.run(run(limit, meters=args.meters, sessions=args.sessions, seconds=args.seconds, seed=args.seed))
            for limit in (1, 8, 32)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{args.meters} UDP meters, {args.sessions} sessions, {args.seconds:.0f} s each, "
          f"mesh {CONDITIONS.delay_s * 1000:.0f} ms ± {CONDITIONS.jitter_s * 1000:.0f} ms one way, "
          f"{CONDITIONS.loss:.0%} loss")
    print("(p50/p99: from send_apdu to the answer, waiting for a free slot included)")
    print(f"{'in flight':>9} {'exch/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'timeouts':>8} "
          f"{'fwd':>6} {'dropped':>7} {'reorder':>7} {'delay p50/p99 ms':>17}")
    for row in rows:
        emu = row["emulator"]
        assert isinstance(emu, dict)
        print(f"{row['in_flight_limit']:>9} {row['exchanges_per_s']:>8} {row['exchange_p50_ms']:>7} "
              f"{row['exchange_p99_ms']:>7} {row['timeouts']:>8} {emu['forwarded']:>6} {emu['dropped']:>7} "
              f"{emu['reordered']:>7} {1000 * emu['delay_p50_s']:>8.1f}/{1000 * emu['delay_p99_s']:<8.1f}")


if __name__ == "__main__":
    main()
