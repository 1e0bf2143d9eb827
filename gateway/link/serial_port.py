"""Opening a meter line: a serial device (or a pyserial URL) as an asyncio transport."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import serial
import serial_asyncio_fast


class LineOpenError(Exception):
    """The serial device could not be opened."""


async def open_serial(
    *, device: str, baudrate: int, protocol_factory: Callable[[], asyncio.Protocol]
) -> asyncio.Transport:
    """Open ``device`` (a path such as /dev/ttyUSB0 or a pty, or a pyserial URL), 8N1, no flow control."""
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await serial_asyncio_fast.create_serial_connection(
            loop,
            protocol_factory,
            device,
            baudrate=baudrate,
            bytesize=serial.EIGHTBITS,
            parity=serial.PARITY_NONE,
            stopbits=serial.STOPBITS_ONE,
            exclusive=True,  # two daemons on one modem would corrupt each other's frames
        )
    except (serial.SerialException, OSError, ValueError) as exc:
        raise LineOpenError(f"{device}: {exc}") from None
    return cast(asyncio.Transport, transport)
