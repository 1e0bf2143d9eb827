"""Network namespaces for tests: created with `ip`, always deleted; sockets made inside them with setns(2).

A socket belongs to the namespace it was created in, whatever thread uses it later, so one
asyncio loop can serve the gateway, the emulator and the meters, each in its own namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000  # linux/sched.h
_libc = ctypes.CDLL(None, use_errno=True)


def unavailable_reason() -> str | None:
    """Why namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "no `ip` command (apt-get install iproute2)"
    if not hasattr(_libc, "setns"):
        return "libc has no setns()"
    return None


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@contextlib.contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Run the block with this thread in `namespace` (sockets made here stay in it)."""
    with open("/proc/thread-self/ns/net", "rb") as original, open(f"/run/netns/{namespace}", "rb") as target:
        if _libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
        try:
            yield
        finally:
            if _libc.setns(original.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")


def udp_socket(namespace: str, host: str, port: int) -> socket.socket:
    """An IPv6 UDP socket bound inside `namespace`."""
    with inside(namespace):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
    return sock


@dataclass
class Namespaces:
    """The namespaces a test made; `delete` removes them all, whatever happened."""

    prefix: str
    names: list[str] = field(default_factory=list)

    def add(self, suffix: str) -> str:
        name = f"{self.prefix}{suffix}"
        ip("netns", "add", name)
        self.names.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    def veth(self, left: str, left_name: str, right: str, right_name: str) -> None:
        """A veth pair between two of our namespaces, both ends up."""
        ip("-n", left, "link", "add", left_name, "type", "veth", "peer", "name", right_name, "netns", right)
        ip("-n", left, "link", "set", left_name, "up")
        ip("-n", right, "link", "set", right_name, "up")

    def address(self, namespace: str, device: str, cidr: str) -> None:
        ip("-n", namespace, "-6", "addr", "add", cidr, "dev", device, "nodad")  # usable at once, no DAD wait

    def delete(self) -> None:
        for name in reversed(self.names):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=10)
        self.names.clear()
