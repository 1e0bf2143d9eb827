"""OBIS codes (IEC 62056-6-1): six value groups A..F, one octet each on the wire.

Accepted text: ``1.0.1.8.0.255``, ``1-0:1.8.0*255``, ``1-0:1.8.0.255`` and ``1-0:1.8.0`` (F = 255).
"""

from __future__ import annotations

import re

from gateway.codec.errors import LocalProtocolError

LOGICAL_NAME_OCTETS = 6  # IEC 62056-6-1 4.3: a logical name is octet-string(6)
_DEFAULT_F = 255  # IEC 62056-6-1 4.3: F = 255 when the group is not used

_DOTTED = re.compile(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})", re.ASCII)
_REDUCED = re.compile(r"(\d{1,3})-(\d{1,3}):(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:[.*](\d{1,3}))?", re.ASCII)


class ObisError(LocalProtocolError, ValueError):
    """Text or octets that are not an OBIS code."""


def obis(text: str) -> bytes:
    """Six logical-name octets from OBIS text such as ``1-0:1.8.0*255``."""
    match = _DOTTED.fullmatch(text.strip()) or _REDUCED.fullmatch(text.strip())
    if match is None:
        raise ObisError(f"not an OBIS code: {text!r}")
    groups = [int(g) if g is not None else _DEFAULT_F for g in match.groups()]
    if any(g > 0xFF for g in groups):
        raise ObisError(f"OBIS value group above 255: {text!r}")
    return bytes(groups)


def obis_text(ln: bytes) -> str:
    """Dotted text ``A.B.C.D.E.F`` of six logical-name octets."""
    if len(ln) != LOGICAL_NAME_OCTETS:
        raise ObisError(f"a logical name is 6 octets, not {len(ln)}")
    return ".".join(str(octet) for octet in ln)
