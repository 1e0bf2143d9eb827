"""A fleet of simulated UDP meters behind the mesh emulator, in one process (demo, bench, tests).

    python -m gateway.sim.mesh_fleet --meters 1000 --gateway [::1]:4059 --address-file meters.txt

The address file gets one line per meter: `front-host front-port serial logical-device-name`;
the gateway reaches meter i at its front address, and its pushes come from there too.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import signal
from dataclasses import dataclass
from pathlib import Path

from gateway.sim.mesh_emulator import MeshEmulator, RouteAddresses, SocketAddress
from gateway.sim.mesh_model import MeshConditions
from gateway.sim.meter import SimMeterSettings, build_meter
from gateway.sim.udp_meter import SimUdpMeter


@dataclass
class MeshFleet:
    """The meters, their settings (to predict their values) and the routes to them."""

    emulator: MeshEmulator
    meters: list[SimUdpMeter]
    settings: list[SimMeterSettings]
    routes: list[RouteAddresses]

    def close(self) -> None:
        self.emulator.close()
        for meter in self.meters:
            meter.stop()


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def start_mesh_fleet(count: int, *, conditions: MeshConditions, seed: int, gateway: SocketAddress | None,
                           host: str = "::1", first_serial: int = 1) -> MeshFleet:
    """`count` meters on `host` (ephemeral ports), each behind its own front address of one emulator."""
    emulator = MeshEmulator(conditions=conditions, seed=seed, gateway=gateway)
    fleet = MeshFleet(emulator, [], [], [])
    try:
        for serial in range(first_serial, first_serial + count):
            settings = SimMeterSettings.demo(serial_number=serial)
            meter = SimUdpMeter(devices={1: build_meter(settings, clock=utc_now)})
            await meter.start(host, 0)
            fleet.meters.append(meter)
            fleet.settings.append(settings)
            fleet.routes.append(await emulator.add_route(meter=meter.address, front=(host, 0), back=(host, 0)))
    except BaseException:
        fleet.close()
        raise
    return fleet


def _socket_address(text: str) -> SocketAddress:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


async def _serve(args: argparse.Namespace) -> None:
    conditions = MeshConditions(delay_s=args.delay_ms / 1000, jitter_s=args.jitter_ms / 1000, loss=args.loss)
    fleet = await start_mesh_fleet(args.meters, conditions=conditions, seed=args.seed, gateway=args.gateway,
                                   first_serial=args.first_serial)
    lines = [f"{route.front[0]} {route.front[1]} {settings.serial_number} {settings.logical_device_name.decode()}"
             for route, settings in zip(fleet.routes, fleet.settings, strict=True)]
    if args.address_file:
        await asyncio.to_thread(Path(args.address_file).write_text, "\n".join(lines) + "\n")
    else:
        print("\n".join(lines), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    fleet.close()
    print(json.dumps(dataclasses.asdict(fleet.emulator.figures)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="simulated UDP meters behind a userspace mesh emulator")
    parser.add_argument("--meters", type=int, default=10)
    parser.add_argument("--first-serial", type=int, default=1)
    parser.add_argument("--gateway", type=_socket_address, default=None, help="[host]:port the meters push to")
    parser.add_argument("--delay-ms", type=float, default=150.0)
    parser.add_argument("--jitter-ms", type=float, default=50.0)
    parser.add_argument("--loss", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--address-file", help="write the meters' front addresses here instead of stdout")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
