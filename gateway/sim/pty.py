"""A pseudo-terminal pair standing in for a modem: the gateway opens the slave path through
pyserial exactly like /dev/ttyUSB0; the simulated meters sit on the master side."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PtyPair:
    master_fd: int
    slave_fd: int  # kept open so the master never sees EIO while the gateway reopens the port
    slave_path: str

    def close(self) -> None:
        for fd in (self.master_fd, self.slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def open_pty() -> PtyPair:
    """A raw pty pair (no echo, no line editing: bytes pass as on a serial line)."""
    master_fd, slave_fd = os.openpty()
    tty.setraw(slave_fd)
    tty.setraw(master_fd)
    os.set_blocking(master_fd, False)
    return PtyPair(master_fd=master_fd, slave_fd=slave_fd, slave_path=os.ttyname(slave_fd))


def read_available(fd: int) -> bytes:
    """What a non-blocking descriptor holds now; nothing when it holds nothing or nobody holds the other side."""
    try:
        return os.read(fd, 4096)
    except OSError:  # BlockingIOError, InterruptedError, EIO (no one holds the slave open right now)
        return b""


class FdWriter:
    """Writes to a non-blocking descriptor (a pty master) from the event loop, in order, never blocking."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._unsent = bytearray()

    def write(self, data: bytes) -> None:
        if self._unsent:  # a slower reader: keep order behind what is still queued
            self._unsent += data
            return
        try:
            written = os.write(self.fd, data)
        except BlockingIOError:
            written = 0
        except OSError:  # EIO: nobody holds the other side open right now
            return
        if written < len(data):
            self._unsent += data[written:]
            asyncio.get_running_loop().add_writer(self.fd, self._writable)

    def _writable(self) -> None:
        try:
            written = os.write(self.fd, self._unsent)
        except BlockingIOError:
            return
        except OSError:
            written = len(self._unsent)
        del self._unsent[:written]
        if not self._unsent:
            asyncio.get_running_loop().remove_writer(self.fd)


class PtyEndpoint:
    """The master side of a pty served from the running event loop: what is read goes to ``received``,
    ``write`` answers in order; after ``detach`` (or before ``attach``) nothing is read or written."""

    def __init__(self, received: Callable[[bytes], None]) -> None:
        self._received = received
        self._fd: int | None = None
        self._writer: FdWriter | None = None

    @property
    def attached(self) -> bool:
        return self._fd is not None

    def attach(self, fd: int) -> None:
        self._fd = fd
        self._writer = FdWriter(fd)
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def detach(self) -> None:
        if self._fd is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._fd)
            loop.remove_writer(self._fd)
            self._fd = None
            self._writer = None

    def write(self, data: bytes) -> None:
        if self._writer is not None:
            self._writer.write(data)

    def _readable(self) -> None:
        assert self._fd is not None
        data = read_available(self._fd)
        if data:
            self._received(data)
