"""Legacy polling cycle time against the airtime lower bound. Prints a table.

On one emulated line (SimulatedBus with a bit rate, plus an optional modem round-trip time per
exchange), the gateway polls every meter once: clock + active energy (billing values) and the
day's load profile (96 quarter hours) by range, HLS-GMAC, every APDU ciphered (suite 0). The
bound is the bytes that crossed the line (both directions, every HDLC frame) at the bit rate
(10 bits per byte, 8N1), plus one round-trip time per exchange. Target: cycle <= 1.2 x bound.

    python -m bench.polling_cycle [--meters 100] [--bit-rates 2400,20000] [--rtt-ms 0] [--per-line 2]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

from gateway.config import GatewayConfig, LinkConfig, LogConfig, MeterConfig, PathsConfig, RegistryConfig, WanConfig
from gateway.daemon import Gateway
from gateway.log import configure
from gateway.poller.config import MqttConfig, PollerConfig, PollGroup
from gateway.sim.bus import SimulatedBus
from gateway.sim.fleet import sim_fleet
from gateway.sim.meter import DEMO_AUTHENTICATION_KEY, DEMO_BLOCK_CIPHER_KEY
from gateway.sim.pty import open_pty

GATEWAY_TITLE = "4447570000000001"  # the gateway's polling system title


class EmulatedLine(SimulatedBus):
    """The simulated bus, counting bytes and exchanges, with a modem round-trip time on each answer."""

    def __init__(self, *, rtt_s: float, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.rtt_s = rtt_s
        self.bytes_in = self.bytes_out = self.exchanges = 0

    def feed(self, data: bytes) -> bytes:
        answer = super().feed(data)
        self.bytes_in += len(data)
        self.bytes_out += len(answer)
        self.exchanges += bool(answer)
        return answer

    def _write_if_attached(self, data: bytes) -> None:
        if self.rtt_s:
            asyncio.get_running_loop().call_later(self.rtt_s, super()._write_if_attached, data)
        else:
            super()._write_if_attached(data)


def _keys(path: Path) -> None:
    text = (f'[credentials.management]\nmechanism = "hls-gmac"\nsystem_title = "{GATEWAY_TITLE}"\n'
            f'block_cipher_key = "{DEMO_BLOCK_CIPHER_KEY.hex()}"\n'
            f'authentication_key = "{DEMO_AUTHENTICATION_KEY.hex()}"\n')
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def _config(directory: Path, device: str, *, meters: int, per_line: int, bit_rate: int) -> GatewayConfig:
    # The simulator's only ciphered client is the management client (1): allowed here on purpose.
    group = PollGroup(name="all", meters=tuple(range(17, 17 + meters)), credentials="management", client_sap=1,
                      allow_management_client=True, interval_s=86400.0, registers=("1.0.1.8.0.255",),
                      profiles=("1.0.99.1.0.255",), first_read_s=86400.0)
    # Timeouts scale with the line: a 128-octet frame takes half a second at 2400 bit/s.
    timeout = max(1.0, 4 * 300 * 10 / bit_rate)
    return GatewayConfig(
        paths=PathsConfig(state_directory=str(directory / "state"), runtime_directory=str(directory / "run"),
                          keys_file=str(directory / "keys.toml")),
        registry=RegistryConfig(identify=False), wan=WanConfig(listen=("127.0.0.1",), port=0),
        log=LogConfig(level="warning"),
        links=(LinkConfig(name="bus0", device=device, baudrate=115200, response_timeout_s=timeout),),
        meters=tuple(MeterConfig(sap=17 + i, link="bus0", physical_address=17 + i) for i in range(meters)),
        poller=PollerConfig(enabled=True, keys_file=str(directory / "polling-keys.toml"), groups=(group,),
                            mqtt=MqttConfig(), polls_per_line=per_line),
    )


async def cycle(*, meters: int, bit_rate: int, rtt_s: float, per_line: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="polling-cycle-") as tmp:
        directory = Path(tmp)
        _keys(directory / "polling-keys.toml")
        pty = open_pty()
        line = EmulatedLine(meters=sim_fleet(meters), bit_rate=bit_rate, rtt_s=rtt_s)
        line.attach(pty.master_fd)
        gateway = Gateway(_config(directory, pty.slave_path, meters=meters, per_line=per_line, bit_rate=bit_rate))
        started = time.perf_counter()
        await gateway.start()
        assert gateway.poller is not None
        await gateway.poller.wait_for_polls(meters, timeout_s=3600)
        elapsed = time.perf_counter() - started
        status = gateway.poller.status()
        readings = gateway.poller.store.count()
        await gateway.stop()
        line.detach()
        pty.close()
    wire = line.bytes_in + line.bytes_out
    bound = wire * 10 / bit_rate + line.exchanges * rtt_s
    return {"bit_rate": bit_rate, "meters": meters, "ok": status["polls_ok"], "readings": readings,
            "bytes": wire, "exchanges": line.exchanges, "cycle_s": elapsed, "bound_s": bound,
            "ratio": elapsed / bound}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--bit-rates", default="2400,20000")
    parser.add_argument("--rtt-ms", type=float, default=0.0)
    parser.add_argument("--per-line", type=int, default=2, help="polls interleaved on the line")
    args = parser.parse_args()
    configure(level="warning", fmt="console")
    print(f"{'bit/s':>7} {'meters':>6} {'polls ok':>8} {'readings':>8} {'bytes':>9} {'exch.':>6} "
          f"{'cycle s':>9} {'bound s':>9} {'ratio':>6}   ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}Z, "
          f"rtt {args.rtt_ms:g} ms, {args.per_line} per line)")
    for rate in (int(r) for r in args.bit_rates.split(",")):
        row = asyncio.run(cycle(meters=args.meters, bit_rate=rate, rtt_s=args.rtt_ms / 1e3, per_line=args.per_line))
        print(f"{row['bit_rate']:>7} {row['meters']:>6} {row['ok']:>8} {row['readings']:>8} {row['bytes']:>9} "
              f"{row['exchanges']:>6} {row['cycle_s']:>9.1f} {row['bound_s']:>9.1f} {row['ratio']:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
