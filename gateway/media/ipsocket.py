"""Sockets on a meter network: bound to the gateway's source address and, optionally, its interface."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from gateway.codec.wrapper import WRAPPER_PORT


@dataclass(frozen=True, slots=True)
class MeshBinding:
    """Where the gateway's sockets on a meter network live."""

    host: str = "::"  # the source address meters see and push to
    port: int = WRAPPER_PORT  # of the UDP socket; TCP connections to meters use an ephemeral port
    interface: str | None = None  # SO_BINDTODEVICE, and the scope of a link-local source address


def bound_socket(binding: MeshBinding, *, kind: socket.SocketKind = socket.SOCK_DGRAM, port: int | None = None
                 ) -> socket.socket:
    """A non-blocking IPv6 socket bound as `binding` says (at `port` if given). Raises OSError."""
    sock = socket.socket(socket.AF_INET6, kind)
    try:
        scope = 0
        if binding.interface is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, binding.interface.encode())
            scope = socket.if_nametoindex(binding.interface)
        sock.bind((binding.host, binding.port if port is None else port, 0, scope))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
