"""WAN access limits: the HES allow-list, TCP liveness options, lazy deadlines, config checks.

A concentrator's WAN side is reachable by more than its head-end. These pieces let the listener
refuse a stranger before reading a byte, notice a vanished peer, and cut off a slow one, with one
timer per connection and no per-connection loop.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from gateway.deadline import Deadline

__all__ = ["AllowList", "Deadline", "tune_socket"]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

KEEPALIVE_PROBES = 4  # unanswered probes before the kernel drops the peer (Linux default 9 is minutes)
KEEPALIVE_IDLE_MAX_S = 32767  # Linux: TCP_KEEPIDLE and TCP_KEEPINTVL are limited to this
USER_TIMEOUT_MAX_S = 2_147_483  # TCP_USER_TIMEOUT is an int of milliseconds
# Kernel send buffer per HES (Linux doubles it). Meter lines deliver kilobytes per second, so this
# never limits a real HES; it bounds what one that stops reading costs us (autotuning grows to 4 MiB).
SEND_BUFFER_BYTES = 64 * 1024


class AllowList:
    """HES addresses and networks allowed in; empty allows everyone."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: tuple[IpNetwork, ...] = tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries)

    def allows(self, host: str) -> bool:
        """True if a peer at this address may connect."""
        if not self.networks:
            return True
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # an IPv4 HES on a dual-stack "::" listener
        return any(address in network for network in self.networks)


def tune_socket(sock: socket.socket, *, keepalive_s: float, user_timeout_s: float) -> None:
    """Low latency, a bounded send buffer, and notice a HES that vanished without a FIN (half-open).

    ``sock`` may be a transport's stand-in for its socket (asyncio's, uvloop's): uvloop's makes a socket object,
    with its system calls, for every option set, so the options are set through one made here for them all.
    """
    if type(sock) is not socket.socket:
        own = socket.socket(sock.family, sock.type, sock.proto, sock.fileno())
        try:
            _set_options(own, keepalive_s=keepalive_s, user_timeout_s=user_timeout_s)
        finally:
            own.detach()  # the descriptor stays the transport's
        return
    _set_options(sock, keepalive_s=keepalive_s, user_timeout_s=user_timeout_s)


def _set_options(sock: socket.socket, *, keepalive_s: float, user_timeout_s: float) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    if keepalive_s > 0:
        idle = max(1, min(KEEPALIVE_IDLE_MAX_S, round(keepalive_s)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):  # Linux and most BSDs; macOS calls it TCP_KEEPALIVE
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, idle // KEEPALIVE_PROBES))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    if user_timeout_s > 0 and hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux only
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, round(user_timeout_s * 1000))
