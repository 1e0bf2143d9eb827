"""A serial port's file descriptor as an asyncio transport: the meter line's bytes with no layer between.

Theory of operation. pyserial opens and configures the port (8N1, no flow control, exclusive,
non-blocking); from then on the line only needs "bytes arrived" and "send these bytes". Going
through pyserial's ``read`` costs a ``select`` and its Python wrapping per read, on the relay's
hot path (issue 13: a relayed exchange must cost less CPU than a bare relay). So this transport
reads the descriptor itself when the event loop says it is readable, and writes it directly,
buffering only what the kernel did not take (a modem holding CTS, a full pty).

    readable -> os.read(fd, 64 KiB) -> protocol.data_received(bytes)
    write(data) -> os.write(fd) at once; the rest waits for "writable"
    b"" or an OSError on read (the device went away: EIO on a pty, a USB modem unplugged)
        -> connection_lost(exc), the port closed

Ports pyserial reaches through a URL with no descriptor (``rfc2217://``, ``socket://``) keep the
pyserial-asyncio transport (see serial_port.open_serial).
"""

from __future__ import annotations

import asyncio
import errno
import os
from typing import Any, Protocol

READ_SIZE = 65536
_RETRY = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


class Port(Protocol):
    """The opened serial port: what this transport needs of a pyserial ``Serial``."""

    def fileno(self) -> int: ...

    def close(self) -> None: ...


class SerialLostError(OSError):
    """The serial device stopped answering reads (unplugged, or the other end of a pty closed)."""


class FdTransport(asyncio.Transport):
    """Reads and writes one open serial port's descriptor on the running loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: Port, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._loop = loop
        self._port = port
        self._fd = port.fileno()
        self._protocol = protocol
        self._unsent = bytearray()
        self._closing = False
        self._reading = True
        loop.add_reader(self._fd, self._readable)

    # -- asyncio.Transport --------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        if self._unsent:  # keep the order: behind what the kernel has not taken yet
            self._unsent += data
            return
        try:
            written = os.write(self._fd, data)
        except OSError as exc:
            if exc.errno not in _RETRY:
                self._lose(exc)
                return
            written = 0
        if written < len(data):
            self._unsent += memoryview(data)[written:]
            self._loop.add_writer(self._fd, self._writable)

    def get_write_buffer_size(self) -> int:
        return len(self._unsent)

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        if self._reading and not self._closing:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fd, self._readable)

    def get_protocol(self) -> Any:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def close(self) -> None:
        """Stop reading; what is still unsent is dropped with the port (a meter line has no goodbye to flush)."""
        self._finish(None)

    def abort(self) -> None:
        self._finish(None)

    # -- the loop's callbacks -----------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except OSError as exc:
            if exc.errno in _RETRY:
                return
            self._lose(exc)
            return
        if not data:
            self._lose(SerialLostError(errno.EIO, "the serial device returned no data: disconnected"))
            return
        self._protocol.data_received(data)

    def _writable(self) -> None:
        try:
            written = os.write(self._fd, self._unsent)
        except OSError as exc:
            if exc.errno not in _RETRY:
                self._lose(exc)
            return
        del self._unsent[:written]
        if not self._unsent:
            self._loop.remove_writer(self._fd)

    def _lose(self, exc: OSError) -> None:
        self._finish(exc)

    def _finish(self, exc: Exception | None) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._unsent.clear()
        try:
            self._port.close()
        finally:
            self._loop.call_soon(self._protocol.connection_lost, exc)
