"""What a meter on an IP network is; the channel interface itself is the relay core's.

The mesh (`gateway/media/mesh.py`) implements `gateway.core.channel.MeterMedium` and
`MeterChannel`; this module re-exports the core's types so that mesh code and its tests name
them from one place, and adds the only mesh-specific ones: `IpMeter` (an IPv6 endpoint, the
meter's `MeterAddress` on a mesh) and `IpTransport` (UDP datagrams or a TCP wrapper connection).

On a mesh: one wrapper datagram per APDU (source wPort = client SAP, destination wPort = logical
device); a bounded number of exchanges in flight per network; a timeout is final for the
channel (never resent). Meters that listen only on TCP share the network and its limit, over
one wrapper connection per association.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from gateway.codec.wrapper import WRAPPER_PORT
from gateway.core.channel import (
    ApduReceived,
    Association,
    ChannelDown,
    ChannelError,
    ChannelEvent,
    ChannelListener,
    DownReason,
    MeterAddress,
    MeterChannel,
    MeterMedium,
    Push,
    UnsolicitedPush,
)

__all__ = [
    "ApduReceived", "Association", "ChannelDown", "ChannelError", "ChannelEvent", "ChannelListener", "DownReason",
    "IpMeter", "IpTransport", "MeterAddress", "MeterChannel", "MeterMedium", "Push", "PushListener",
    "UnsolicitedPush",
]


class IpTransport(Enum):
    """How the wrapper reaches an IP meter (IEC 62056-4-7: both on port 4059)."""

    UDP = "udp"  # one datagram per APDU
    TCP = "tcp"  # one connection per association


@dataclass(frozen=True, slots=True)
class IpMeter:
    """A meter on an IP network: its address, its wrapper port and transport."""

    host: ipaddress.IPv6Address
    port: int = WRAPPER_PORT
    transport: IpTransport = IpTransport.UDP

    def __str__(self) -> str:
        if self.port == WRAPPER_PORT and self.transport is IpTransport.UDP:
            return str(self.host)
        return f"{self.transport.value}://[{self.host}]:{self.port}"


PushListener = Callable[[UnsolicitedPush], None]
