"""Writes captured units to a pcapng file, with a size cap, or to a ring of files (like dumpcap's)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import BinaryIO

from gateway import __version__
from gateway.capture import pcapng
from gateway.capture.tap import CapturedUnit

# A meter line has no IP addresses: stand-ins from the link-local range, the same for every line
# (the interface name tells lines apart).
LINE_GATEWAY = "169.254.0.1"
LINE_METERS = "169.254.0.2"


def _split(address: str) -> tuple[str, int]:
    """"127.0.0.1:4059" or "[::1]:4059" -> (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def endpoints(unit: CapturedUnit) -> pcapng.Endpoints:
    if unit.leg == "wan":
        host, port = _split(unit.peer)
        local, _ = _split(unit.local)
        return pcapng.Endpoints(gateway=local, peer=host, peer_port=port)
    return pcapng.Endpoints(gateway=LINE_GATEWAY, peer=LINE_METERS)


class CaptureFullError(Exception):
    """The size cap is reached and there is no ring to turn."""


class CaptureWriter:
    """One pcapng section per file; interfaces are described as legs first appear."""

    def __init__(self, path: Path, *, max_bytes: int | None = None, ring_files: int = 0) -> None:
        if ring_files and not max_bytes:
            raise ValueError("a ring of files needs a size per file")
        self.path = path
        self.max_bytes = max_bytes
        self.ring_files = ring_files
        self.packets = 0
        self.files: list[Path] = []
        self._sequence = 0
        self._file: BinaryIO | None = None
        self._size = 0
        self._packets_in_file = 0
        self._interfaces: dict[str, int] = {}

    def write(self, unit: CapturedUnit) -> None:
        """Add one unit; raises CaptureFullError when the cap is reached without a ring."""
        if self._file is None:
            self._next_file()
        block = self._packet_block(unit)
        if self.max_bytes is not None and self._packets_in_file and self._size + len(block) > self.max_bytes:
            if not self.ring_files:
                raise CaptureFullError(f"{self.path}: {self._size} bytes, the cap is {self.max_bytes}")
            self._next_file()
            block = self._packet_block(unit)
        self._emit(block)
        self.packets += 1
        self._packets_in_file += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _packet_block(self, unit: CapturedUnit) -> bytes:
        interface_id = self._interfaces.get(unit.leg)
        if interface_id is None:
            interface_id = len(self._interfaces)
            self._interfaces[unit.leg] = interface_id
            if self._file is not None:  # always open here: write() opens a file first
                description = "HES wrapper PDUs (IEC 62056-4-7)" if unit.leg == "wan" else "HDLC frames (IEC 62056-46)"
                self._emit(pcapng.interface(name=unit.leg, description=description))
        return pcapng.packet(interface_id=interface_id, timestamp=unit.timestamp, endpoints=endpoints(unit),
                             direction=unit.direction, payload=unit.data, comment=unit.note or None)

    def _next_file(self) -> None:
        self.close()
        if self.ring_files:
            self._sequence += 1
            path = self.path.with_name(f"{self.path.stem}-{self._sequence:05d}{self.path.suffix}")
        else:
            path = self.path
        self.files.append(path)
        if self.ring_files and len(self.files) > self.ring_files:
            with contextlib.suppress(FileNotFoundError):
                self.files.pop(0).unlink()
        self._file = path.open("wb")
        self._size = 0
        self._packets_in_file = 0
        self._interfaces = {}
        self._emit(pcapng.section_header(application=f"dlms-gateway {__version__}"))

    def _emit(self, block: bytes) -> None:
        assert self._file is not None
        self._file.write(block)
        self._size += len(block)
