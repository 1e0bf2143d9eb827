"""An outside head-end for tests: the gurux-dlms client (GPL, tests only) over TCP or a serial port.

Blocking I/O on purpose: it is a different program's way of talking DLMS, run in a thread from
async tests (``asyncio.to_thread``) so the gateway under test keeps its event loop.
"""

from __future__ import annotations

import contextlib
import io
import socket
from dataclasses import dataclass
from typing import Any, Protocol

import serial
from gurux_dlms import GXByteBuffer, GXDLMSGateway, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType, Security
from gurux_dlms.objects import GXDLMSObject
from gurux_dlms.secure import GXDLMSSecureClient


class Channel(Protocol):
    def send(self, data: bytes) -> None: ...

    def receive(self) -> bytes: ...

    def close(self) -> None: ...


class TcpChannel:
    def __init__(self, host: str, port: int, *, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("gateway closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()


class SerialChannel:
    def __init__(self, device: str, *, timeout: float = 15.0) -> None:
        self.port = serial.Serial(device, baudrate=115200, timeout=timeout)

    def send(self, data: bytes) -> None:
        self.port.write(data)

    def receive(self) -> bytes:
        first = self.port.read(1)
        if not first:
            raise TimeoutError("no answer on the serial line")
        return bytes(first + self.port.read(self.port.in_waiting))

    def close(self) -> None:
        self.port.close()


@dataclass(frozen=True)
class HesCredentials:
    client_sap: int = 16
    hls_gmac: bool = False
    block_cipher_key: bytes = b""
    authentication_key: bytes = b""
    system_title: bytes = b"HES00001"


class GuruxHes:
    """A DLMS client association through a channel (wrapper over TCP, or HDLC over serial)."""

    def __init__(
        self,
        channel: Channel,
        *,
        credentials: HesCredentials,
        server_sap: int,
        physical_address: int | None = None,
        max_pdu: int = 1024,
        gateway: tuple[int, bytes] | None = None,
    ) -> None:
        self.channel = channel
        hdlc = physical_address is not None
        server = GXDLMSSecureClient.getServerAddress(server_sap, physical_address) if hdlc else server_sap
        self.client = GXDLMSSecureClient(
            True,
            credentials.client_sap,
            server,
            Authentication.HIGH_GMAC if credentials.hls_gmac else Authentication.NONE,
            None,
            InterfaceType.HDLC if hdlc else InterfaceType.WRAPPER,
        )
        self.hdlc = hdlc
        self.client.setMaxReceivePDUSize(max_pdu)
        if gateway is not None:  # the DLMS gateway protocol: every request in a gateway-request (E6)
            settings = GXDLMSGateway()
            settings.networkId, settings.physicalDeviceAddress = gateway[0], bytearray(gateway[1])
            self.client.gateway = settings
        if credentials.hls_gmac:
            ciphering = self.client.ciphering
            ciphering.security = Security.AUTHENTICATION_ENCRYPTION
            ciphering.systemTitle = bytearray(credentials.system_title)
            ciphering.blockCipherKey = bytearray(credentials.block_cipher_key)
            ciphering.authenticationKey = bytearray(credentials.authentication_key)

    def _exchange(self, data: Any, reply: GXReplyData) -> None:
        self.channel.send(bytes(data))
        buffer = GXByteBuffer()
        while True:
            buffer.set(self.channel.receive())
            # gurux print()s on every decipher; keep it out of the test output.
            with contextlib.redirect_stdout(io.StringIO()):
                complete = self.client.getData(buffer, reply, None)
            if complete:
                return

    def request(self, frames: Any) -> GXReplyData:
        reply = GXReplyData()
        for frame in frames if isinstance(frames, list) else [frames]:
            reply.clear()
            self._exchange(frame, reply)
        while reply.isMoreData():
            self._exchange(self.client.receiverReady(reply), reply)
        return reply

    def associate(self) -> None:
        if self.hdlc:
            reply = self.request(self.client.snrmRequest())
            self.client.parseUAResponse(reply.data)
        reply = self.request(self.client.aarqRequest())
        with contextlib.redirect_stdout(io.StringIO()):
            self.client.parseAareResponse(reply.data)
            if self.client.getIsAuthenticationRequired():
                reply = self.request(self.client.getApplicationAssociationRequest())
                self.client.parseApplicationAssociationResponse(reply.data)

    def read(self, obj: GXDLMSObject, attribute: int) -> Any:
        reply = self.request(self.client.read(obj, attribute))
        with contextlib.redirect_stdout(io.StringIO()):
            return self.client.updateValue(obj, attribute, reply.value)

    def read_rows_by_range(self, profile: Any, start: Any, end: Any) -> Any:
        reply = self.request(self.client.readRowsByRange(profile, start, end))
        with contextlib.redirect_stdout(io.StringIO()):
            return self.client.updateValue(profile, 2, reply.value)

    def method(self, obj: GXDLMSObject, index: int, data: Any, data_type: Any) -> GXReplyData:
        return self.request(self.client.method(obj, index, data, data_type))

    def release(self) -> None:
        with contextlib.suppress(Exception):
            self.request(self.client.releaseRequest())
        if self.hdlc:
            with contextlib.suppress(Exception):
                self.request(self.client.disconnectRequest())

    def close(self) -> None:
        self.channel.close()
