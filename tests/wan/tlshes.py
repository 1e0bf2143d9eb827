"""HES-side TLS for tests: a client context, and a gurux channel over a TLS socket."""

from __future__ import annotations

import ssl
from pathlib import Path

from tests.hes import TcpChannel


def client_context(*, ca_file: Path, certificate: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """What a head-end would use: verify the gateway against ca_file, show a certificate if given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=ca_file)
    if certificate is not None:
        context.load_cert_chain(certfile=certificate, keyfile=key)
    return context


class TlsChannel(TcpChannel):
    """tests.hes.Channel over TLS: gurux hands bytes, we wrap the socket."""

    def __init__(self, host: str, port: int, *, context: ssl.SSLContext, timeout: float = 15.0) -> None:
        super().__init__(host, port, timeout=timeout)
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
