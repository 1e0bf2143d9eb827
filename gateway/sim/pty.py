"""A pseudo-terminal pair standing in for a modem: the gateway opens the slave path through
pyserial exactly like /dev/ttyUSB0; the simulated meters sit on the master side."""

from __future__ import annotations

import contextlib
import os
import tty
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
