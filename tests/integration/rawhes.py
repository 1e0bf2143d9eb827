"""A bare wrapper-level head-end for tests that need exact bytes and bad behaviour."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.codec.wrapper import WrapperDecoder, WrapperPdu, encode

# AARQ, LN referencing without ciphering, no authentication, conformance get/set/action/block/selective.
PUBLIC_AARQ = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400001E1DFFFF")
# GET logical device name 0.0.42.0.0.255 attribute 2, invoke-id 0x81 (priority high, confirmed)
GET_LDN = bytes.fromhex("C001C1000100002A0000FF0200")
RLRQ = bytes.fromhex("6203800100")


class RawHes:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = WrapperDecoder()
        self.pending: list[WrapperPdu] = []

    @classmethod
    async def connect(cls, host: str, port: int) -> RawHes:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    def send(self, *, client_sap: int, meter_sap: int, apdu: bytes) -> None:
        self.writer.write(encode(WrapperPdu(source=client_sap, destination=meter_sap, apdu=apdu)))

    async def receive(self, timeout: float = 10.0) -> WrapperPdu:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise ConnectionError("closed by the gateway")
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    async def request(self, *, client_sap: int, meter_sap: int, apdu: bytes, timeout: float = 10.0) -> WrapperPdu:
        self.send(client_sap=client_sap, meter_sap=meter_sap, apdu=apdu)
        return await self.receive(timeout)

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        data = await asyncio.wait_for(self.reader.read(65536), timeout)
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
