"""Misbehaving HES connections, run as a separate process so their work is not the gateway's.

    python -m tests.wan.storm HOST PORT --slowloris 34 --oversized 33 --silent 29 --unread 4

Prints "connected" once every connection is open, then one JSON object: for each kind, the seconds
from connecting until the gateway hung up (null if it had not within --give-up seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys

HEADER = bytes.fromhex("00010010001100")  # version 1, wPorts 16 -> 17, length high byte ...
OVERSIZED = bytes.fromhex("000100100011FFFF")  # 65535 announced: more than the gateway's max_apdu
UNREAD_REQUEST = bytes.fromhex("00010010 03E7 000D C001C1000100002A0000FF0200".replace(" ", ""))  # to SAP 999


async def hung_up(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Wait for the gateway to close; False if it did not within timeout."""
    try:
        return await asyncio.wait_for(reader.read(65536), timeout) == b""
    except TimeoutError:
        return False
    except OSError:  # reset
        return True


class Storm:
    def __init__(self, host: str, port: int, *, give_up: float, total: int) -> None:
        self.host, self.port, self.give_up = host, port, give_up
        self.loop = asyncio.get_running_loop()
        self.total = total
        self.attempts = 0
        self.all_open = asyncio.Event()  # every connection attempted (a failed one raises in its task)

    def _attempted(self) -> None:
        self.attempts += 1
        if self.attempts == self.total:
            self.all_open.set()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float]:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        finally:
            self._attempted()
        return reader, writer, self.loop.time()

    def _since(self, start: float) -> float | None:
        elapsed = self.loop.time() - start
        return elapsed if elapsed < self.give_up else None

    async def slowloris(self) -> float | None:
        """A header, one byte per second, never finished."""
        reader, writer, start = await self._open()
        for index in range(int(self.give_up) + 1):
            with contextlib.suppress(OSError):
                writer.write(HEADER[index % len(HEADER) : index % len(HEADER) + 1])
            if await hung_up(reader, 1.0):
                writer.close()
                return self._since(start)
        writer.close()
        return None

    async def oversized(self) -> float | None:
        reader, writer, start = await self._open()
        writer.write(OVERSIZED)
        closed = await hung_up(reader, self.give_up)
        writer.close()
        return self._since(start) if closed else None

    async def silent(self) -> float | None:
        """Connect and never send a byte (what a half-open connection looks like from our side)."""
        reader, writer, start = await self._open()
        closed = await hung_up(reader, self.give_up)
        writer.close()
        return self._since(start) if closed else None

    async def unread(self) -> float | None:
        """Send requests as fast as the gateway takes them, never read an answer."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        with sock:
            try:
                await self.loop.sock_connect(sock, (self.host, self.port))
            finally:
                self._attempted()
            start = self.loop.time()
            blob = UNREAD_REQUEST * 1000
            try:
                async with asyncio.timeout(self.give_up):
                    while True:
                        await self.loop.sock_sendall(sock, blob)
            except OSError:
                return self._since(start)
            except TimeoutError:
                return None


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    for kind in ("slowloris", "oversized", "silent", "unread"):
        parser.add_argument(f"--{kind}", type=int, default=0)
    parser.add_argument("--give-up", type=float, default=15.0)
    args = parser.parse_args(argv)
    total = sum(getattr(args, kind) for kind in ("slowloris", "oversized", "silent", "unread"))
    storm = Storm(args.host, args.port, give_up=args.give_up, total=total)
    kinds = {"slowloris": storm.slowloris, "oversized": storm.oversized, "silent": storm.silent,
             "unread": storm.unread}
    tasks = {kind: [asyncio.create_task(run()) for _ in range(getattr(args, kind))] for kind, run in kinds.items()}
    await storm.all_open.wait()
    print("connected", flush=True)
    results = {kind: [await task for task in group] for kind, group in tasks.items()}
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
