"""The serial line's own transport on a real pty opened through pyserial: order, back-pressure, loss."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Iterator

import pytest

from gateway.link.fd_transport import FdTransport
from gateway.link.serial_port import LineOpenError, open_serial


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.arrived = asyncio.Event()
        self.lost: list[Exception | None] = []
        self.gone = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)
        self.gone.set()


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(master)
    path = os.ttyname(slave)
    os.close(slave)  # the transport opens the device by its path, as the daemon does
    os.set_blocking(master, False)
    yield master, path
    with contextlib.suppress(OSError):  # a test may have closed it: the modem unplugged
        os.close(master)


async def opened(path: str) -> tuple[FdTransport, Recorder]:
    recorder = Recorder()
    transport = await open_serial(device=path, baudrate=9600, protocol_factory=lambda: recorder)
    assert isinstance(transport, FdTransport)  # a device path: read and written through its descriptor
    return transport, recorder


def drain(master: int) -> bytes:
    out = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except BlockingIOError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


async def test_bytes_cross_both_ways_unchanged(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    transport, recorder = await opened(path)
    try:
        frame = bytes(range(256))  # raw: no byte is translated (0x0D, 0x0A, 0x11, 0x13, 0x7E ...)
        transport.write(frame)
        await asyncio.sleep(0.05)
        assert drain(master) == frame
        os.write(master, frame)
        while len(recorder.data) < len(frame):
            recorder.arrived.clear()
            await asyncio.wait_for(recorder.arrived.wait(), 5)
        assert bytes(recorder.data) == frame
    finally:
        transport.close()


async def test_what_the_kernel_does_not_take_waits_in_order_and_nothing_is_lost(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    transport, _ = await opened(path)
    try:
        chunks = [bytes([n]) * 4096 for n in range(64)]  # 256 KiB: far more than a pty buffers
        for chunk in chunks:
            transport.write(chunk)
        assert transport.get_write_buffer_size() > 0  # the rest waits for "writable"
        received = bytearray()
        for _ in range(2000):
            received += drain(master)
            if len(received) == sum(map(len, chunks)):
                break
            await asyncio.sleep(0.005)
        assert bytes(received) == b"".join(chunks)
        assert transport.get_write_buffer_size() == 0
    finally:
        transport.close()


async def test_the_other_end_going_away_is_reported_once_and_the_port_closed(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    transport, recorder = await opened(path)
    os.close(master)  # the modem is unplugged: reads fail with EIO
    await asyncio.wait_for(recorder.gone.wait(), 5)
    await asyncio.sleep(0.05)
    assert len(recorder.lost) == 1 and isinstance(recorder.lost[0], OSError)
    assert transport.is_closing()
    transport.write(b"\x7e")  # ignored: no exception, nothing written
    transport.close()  # idempotent
    await asyncio.sleep(0.05)
    assert len(recorder.lost) == 1


async def test_close_reports_a_clean_end(pty_pair: tuple[int, str]) -> None:
    _, path = pty_pair
    transport, recorder = await opened(path)
    transport.close()
    await asyncio.wait_for(recorder.gone.wait(), 5)
    assert recorder.lost == [None]


async def test_a_missing_device_is_a_clear_error(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(LineOpenError, match="ttyNOPE"):
        await open_serial(device=f"{tmp_path}/ttyNOPE", baudrate=9600, protocol_factory=Recorder)
