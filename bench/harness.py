"""Shared pieces for benchmarks: simulated meters and the gateway as separate processes."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import serial

from gateway.codec.hdlc import ApduReceived, HdlcAddress, HdlcClientLink, HdlcFrameDecoder, LinkDown, LinkSettings

PUBLIC_AARQ = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400001E1DFFFF")
GET_LDN = bytes.fromhex("C001C1000100002A0000FF0200")
RLRQ = bytes.fromhex("6203800100")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def jain(counts: list[int]) -> float:
    """Jain's fairness index: 1.0 when every session got the same share."""
    total = sum(counts)
    squares = sum(c * c for c in counts)
    return total * total / (len(counts) * squares) if squares else 0.0


@contextmanager
def simulator(meters: int, *, bit_rate: int | None = None) -> Iterator[str]:
    """Simulated meters on a pty in their own process; yields the pty path."""
    with tempfile.TemporaryDirectory() as tmp:
        path_file = Path(tmp) / "pty"
        args = [sys.executable, "-m", "gateway.cli.main", "simulate", "--meters", str(meters),
                "--path-file", str(path_file)]
        if bit_rate:
            args += ["--bit-rate", str(bit_rate)]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while not path_file.exists() or not path_file.read_text():
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("simulator did not start")
                time.sleep(0.05)
            yield path_file.read_text()
        finally:
            proc.terminate()
            proc.wait(10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_wan(port: int, process: subprocess.Popen[bytes], *, timeout_s: float = 20.0) -> None:
    """Until the gateway process accepts TCP on its WAN port; RuntimeError if it died or took too long."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("gateway did not start") from None
            time.sleep(0.05)


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS from /proc), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def serving(command: list[str], port: int, output: int | IO[bytes]) -> Iterator[int]:
    """A relay process (ours or the anchor) listening on ``port``, stopped on the way out; yields its pid."""
    proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for_wan(port, proc)
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def bare_relay_process(script: Path, device: str, meters: int, port: int) -> Iterator[int]:
    """The bare relay anchor (../shared/anchors/naive_relay.py) in its own process, configured as the gateway is."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "gateway.toml"
        lines = [f'[wan]\nlisten = ["127.0.0.1"]\nport = {port}\n',
                 f'[[links]]\nname = "bus0"\ndevice = "{device}"\n']
        lines += [f'[[meters]]\nsap = {17 + i}\nlink = "bus0"\nphysical_address = {17 + i}\n' for i in range(meters)]
        config.write_text("\n".join(lines))
        with serving([sys.executable, str(script), "--config", str(config)], port, subprocess.DEVNULL) as pid:
            yield pid


@contextmanager
def gateway_process(device: str, meters: int, port: int, *, link_options: str = "", wan_options: str = "",
                    extra: str = "", log_file: Path | None = None) -> Iterator[int]:
    """The gateway daemon in its own process, relaying to ``meters`` meters on ``device``."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "gateway.toml"
        paths = (f'[paths]\nstate_directory = "{tmp}/state"\nruntime_directory = "{tmp}/run"\n'
                 f'keys_file = "{tmp}/keys.toml"\n'  # a fresh registry per run, nothing under /var
                 "[registry]\nidentify = false\n")  # no identity reads competing with the measured HES
        lines = [f'[wan]\nlisten = ["127.0.0.1"]\nport = {port}\n{wan_options}', "[log]\nlevel = \"warning\"\n",
                 paths, extra,
                 f'[[links]]\nname = "bus0"\ndevice = "{device}"\nbaudrate = 115200\n{link_options}']
        lines += [f'[[meters]]\nsap = {17 + i}\nlink = "bus0"\nphysical_address = {17 + i}\n' for i in range(meters)]
        config.write_text("\n".join(lines))
        output = log_file.open("ab") if log_file is not None else subprocess.DEVNULL
        with serving([sys.executable, "-m", "gateway.cli.main", "run", "--config", str(config)], port,
                     output) as pid:
            yield pid


class DirectHdlcClient:
    """A blocking HDLC client on a serial port, built on our link state machine: the baseline."""

    def __init__(self, device: str, *, physical_address: int, client_sap: int = 16) -> None:
        self.port = serial.Serial(device, baudrate=115200, timeout=0.5)
        self.decoder = HdlcFrameDecoder()
        self.link = HdlcClientLink(
            client_sap=client_sap,
            server_address=HdlcAddress.server(logical_device=1, physical_address=physical_address),
            settings=LinkSettings(),
        )

    def _pump(self) -> list[bytes]:
        apdus: list[bytes] = []
        while self.link.wants_medium:
            self.port.write(self.link.transmit(now=time.monotonic()))
            while self.link.awaiting_response:
                data = self.port.read(max(1, self.port.in_waiting))
                now = time.monotonic()
                if not data:
                    events = self.link.expire(now=now)
                else:
                    events = [e for f in self.decoder.feed(data, now=now) for e in self.link.receive(f, now=now)]
                for event in events:
                    if isinstance(event, ApduReceived):
                        apdus.append(event.apdu)
                    elif isinstance(event, LinkDown):
                        raise ConnectionError(event.reason)
        return apdus

    def connect(self) -> None:
        self.link.connect()
        self._pump()
        (aare,) = self.request(PUBLIC_AARQ)
        assert aare[0] == 0x61

    def request(self, apdu: bytes) -> list[bytes]:
        self.link.send_apdu(apdu)
        return self._pump()

    def close(self) -> None:
        self.request(RLRQ)
        self.link.disconnect()
        with contextlib.suppress(ConnectionError):  # LinkDown("disconnected") is the normal end
            self._pump()
        self.port.close()
