"""`dlms-gateway demo` and `simulate`: the gateway and simulated meters with no hardware."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import sys
import tempfile
from pathlib import Path

from gateway.config import GatewayConfig, LinkConfig, LogConfig, MeterConfig, PathsConfig, WanConfig
from gateway.daemon import Gateway
from gateway.keys import create_keys
from gateway.sim.bus import SimulatedBus
from gateway.sim.fleet import FIRST_SAP, sim_fleet
from gateway.sim.meter import DEMO_AUTHENTICATION_KEY, DEMO_BLOCK_CIPHER_KEY, SimMeterSettings
from gateway.sim.pty import open_pty


def demo_config(*, meters: int, device: str, host: str, port: int, directory: Path) -> GatewayConfig:
    """A gateway configuration for ``meters`` simulated meters on one line. It holds no meter key."""
    return GatewayConfig(
        wan=WanConfig(listen=(host,), port=port),
        paths=PathsConfig(state_directory=str(directory / "state"), runtime_directory=str(directory / "run"),
                          keys_file=str(directory / "keys.toml")),
        log=LogConfig(level="info", format="console"),
        links=(LinkConfig(name="sim0", device=device, baudrate=115200),),
        meters=tuple(
            MeterConfig(sap=FIRST_SAP + i, link="sim0", physical_address=fleet_address)
            for i, fleet_address in enumerate(range(17, 17 + meters))
        ),
    )


def command_as_run() -> str:
    """How this very command was started, so a banner can show a line that works when pasted.

    A fresh venv's `dlms-gateway` is not on the PATH: `.venv/bin/dlms-gateway` is what runs.
    """
    invoked = sys.argv[0] if sys.argv and sys.argv[0] else "dlms-gateway"
    if invoked.endswith(".py") or invoked == "-m":  # python -m gateway.cli.main
        return f"{sys.executable} -m gateway.cli.main"
    return shlex.quote(invoked)


async def _until_stopped(duration: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=duration)


async def demo(*, meters: int, host: str, port: int, duration: float | None) -> None:
    workdir = tempfile.TemporaryDirectory(prefix="dlms-gateway-demo-")
    directory = Path(workdir.name)
    create_keys(directory / "keys.toml")  # the gateway's own keys, for its management logical device
    pty = open_pty()
    bus = SimulatedBus(meters=sim_fleet(meters))
    bus.attach(pty.master_fd)
    gateway = Gateway(demo_config(meters=meters, device=pty.slave_path, host=host, port=port, directory=directory))
    await gateway.start()
    wan_host, wan_port = gateway.wan.addresses[0]
    example = SimMeterSettings.demo(serial_number=1)
    print(
        f"""
dlms-gateway demo: {meters} simulated meters behind a pty ({pty.slave_path}), no hardware.

  HES connects to   tcp://{wan_host}:{wan_port}  (IEC 62056-4-7 wrapper)
  SAP 1             the gateway itself: SAP assignment 0.0.41.0.0.255 lists the meters
                    (public client 16; management client 1 uses the keys in {directory / "keys.toml"})
  meter SAPs        {", ".join(str(FIRST_SAP + i) for i in range(meters))}  (destination wPort)
  public client     SAP 16, no security: logical device name, clock, energy register
  meters' management client: client SAP 1, HLS-GMAC (mechanism 5), suite 0, authenticated+encrypted
     block cipher key  {DEMO_BLOCK_CIPHER_KEY.hex().upper()}   (simulator demo keys:
     authentication key {DEMO_AUTHENTICATION_KEY.hex().upper()}   the gateway holds none)
     client system title: any 8 bytes; meter 1 system title {example.system_title.hex().upper()}
  objects           0.0.42.0.0.255 name, 0.0.1.0.0.255 clock, 1.0.1.8.0.255 energy,
                    1.0.99.1.0.255 load profile, 0.0.96.3.10.255 disconnect control

  technician CLI    DLMS_GATEWAY_SOCKET={gateway.runtime_directory / "control.sock"} {command_as_run()} status

Ctrl-C stops.""",
        file=sys.stderr,
        flush=True,
    )
    try:
        await _until_stopped(duration)
    finally:
        await gateway.stop()
        bus.detach()
        pty.close()
        workdir.cleanup()


async def simulate(*, meters: int, first_serial: int, path_file: Path | None, bit_rate: int | None = None) -> None:
    pty = open_pty()
    bus = SimulatedBus(meters=sim_fleet(meters, first_serial=first_serial), bit_rate=bit_rate)
    bus.attach(pty.master_fd)
    if path_file is not None:
        await asyncio.to_thread(path_file.write_text, pty.slave_path)
    print(pty.slave_path, flush=True)
    try:
        await _until_stopped(None)
    finally:
        bus.detach()
        pty.close()
