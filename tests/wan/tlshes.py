"""HES-side TLS for tests: a client context, and a gurux channel over a TLS socket."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path


def client_context(*, ca_file: Path, certificate: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """What a head-end would use: verify the gateway against ca_file, show a certificate if given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=ca_file)
    if certificate is not None:
        context.load_cert_chain(certfile=certificate, keyfile=key)
    return context


class TlsChannel:
    """tests.hes.Channel over TLS: gurux hands bytes, we wrap the socket."""

    def __init__(self, host: str, port: int, *, context: ssl.SSLContext, timeout: float = 15.0) -> None:
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("gateway closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()
