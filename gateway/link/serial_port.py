"""Opening a meter line: a serial device (or a pyserial URL) as an asyncio transport."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import serial
import serial_asyncio_fast

from gateway.link.fd_transport import FdTransport


class LineOpenError(Exception):
    """The serial device could not be opened."""


def _settings(baudrate: int) -> dict[str, object]:
    return {"baudrate": baudrate, "bytesize": serial.EIGHTBITS, "parity": serial.PARITY_NONE,
            "stopbits": serial.STOPBITS_ONE,
            "exclusive": True}  # two daemons on one modem would corrupt each other's frames


async def open_serial(
    *, device: str, baudrate: int, protocol_factory: Callable[[], asyncio.Protocol]
) -> asyncio.Transport:
    """Open ``device`` (a path such as /dev/ttyUSB0 or a pty, or a pyserial URL), 8N1, no flow control.

    A device with a file descriptor is read and written through it (fd_transport: no pyserial
    call per read); a URL without one (rfc2217://, socket://) goes through pyserial-asyncio.
    """
    loop = asyncio.get_running_loop()
    try:
        if "://" in device:
            by_url, _ = await serial_asyncio_fast.create_serial_connection(
                loop, protocol_factory, device, **_settings(baudrate))
            return cast(asyncio.Transport, by_url)
        port = serial.serial_for_url(device, timeout=0, write_timeout=0, **_settings(baudrate))  # a path: a descriptor
    except (serial.SerialException, OSError, ValueError) as exc:
        raise LineOpenError(f"{device}: {exc}") from None
    protocol = protocol_factory()
    transport = FdTransport(loop, port, protocol)
    protocol.connection_made(transport)
    return transport
