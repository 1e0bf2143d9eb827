"""WAN access limits: the HES allow-list, TCP liveness options, lazy deadlines, config checks.

A concentrator's WAN side is reachable by more than its head-end. These pieces let the listener
refuse a stranger before reading a byte, notice a vanished peer, and cut off a slow one, with one
timer per connection and no per-connection loop.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING

from gateway.deadline import Deadline

__all__ = ["AllowList", "Deadline", "check_wan", "tune_socket"]

if TYPE_CHECKING:  # config.py calls check_wan: import for annotations only
    from gateway.config import WanConfig

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
    """Low latency, a bounded send buffer, and notice a HES that vanished without a FIN (half-open)."""
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


def check_wan(config: WanConfig) -> list[tuple[str, str]]:
    """Problems in a [wan] table, as (key, message) pairs; empty when it is usable."""
    problems: list[tuple[str, str]] = []
    for entry in config.allow:
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            problems.append(("allow", f"{entry!r} is not an IP address or network (10.1.0.0/16, 2001:db8::/32)"))
    tls = {"tls_certificate_file": config.tls_certificate_file, "tls_private_key_file": config.tls_private_key_file,
           "tls_client_ca_file": config.tls_client_ca_file}
    if any(tls.values()) and not all(tls.values()):
        missing = next(key for key, value in tls.items() if not value)
        problems.append((missing, "TLS needs all three of tls_certificate_file, tls_private_key_file and "
                                  "tls_client_ca_file (a HES must present a certificate)"))
    for key in ("max_connections", "max_connections_per_peer", "max_associations_per_peer"):
        if getattr(config, key) < 1:
            problems.append((key, "must be >= 1"))
    for key in ("idle_timeout_s", "first_pdu_timeout_s", "pdu_timeout_s"):
        if not getattr(config, key) > 0:
            problems.append((key, "must be > 0"))
    if not (config.tcp_keepalive_s == 0 or 1 <= config.tcp_keepalive_s <= KEEPALIVE_IDLE_MAX_S):
        problems.append(("tcp_keepalive_s", f"must be 0 (off) or 1..{KEEPALIVE_IDLE_MAX_S}"))
    if not 0 <= config.tcp_user_timeout_s <= USER_TIMEOUT_MAX_S:
        problems.append(("tcp_user_timeout_s", f"must be 0 (off) or up to {USER_TIMEOUT_MAX_S}"))
    return problems
