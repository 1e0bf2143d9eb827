"""HDLC parameter negotiation: the information field of SNRM and UA (IEC 62056-46, SNRM/UA information field).

    81 80 len | 05 L max_info_tx | 06 L max_info_rx | 07 04 window_tx | 08 04 window_rx

Values are big-endian, 1 to 4 bytes; an absent parameter takes its default. tx and rx are from the
sender's point of view: the client's SNRM proposes its own, the server's UA answers with its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.codec.errors import LocalProtocolError
from gateway.codec.hdlc.errors import HdlcError

_FORMAT_IDENTIFIER = 0x81  # ISO/IEC 13239, parameter negotiation: format identifier
_GROUP_IDENTIFIER = 0x80  # ISO/IEC 13239, parameter negotiation: HDLC parameter group
_MAX_INFO_TX = 0x05  # IEC 62056-46, SNRM/UA information field: max info length, transmit
_MAX_INFO_RX = 0x06
_WINDOW_TX = 0x07
_WINDOW_RX = 0x08
_WINDOW_BYTES = 4  # IEC 62056-46, SNRM/UA information field: window sizes are sent as 4 bytes
MAX_INFO_RANGE = range(32, 2031)  # IEC 62056-6-2, IC 23 HDLC setup: max_info_field_length 32..2030
WINDOW_RANGE = range(1, 8)  # IEC 62056-6-2, IC 23 HDLC setup: window_size 1..7
DEFAULT_MAX_INFO = 128  # IEC 62056-46, SNRM/UA information field: default when not negotiated
DEFAULT_WINDOW = 1


@dataclass(frozen=True, slots=True)
class HdlcParameters:
    """Maximum information field lengths and window sizes, seen from the station that sends them."""

    max_info_tx: int = DEFAULT_MAX_INFO
    max_info_rx: int = DEFAULT_MAX_INFO
    window_tx: int = DEFAULT_WINDOW
    window_rx: int = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        if self.max_info_tx not in MAX_INFO_RANGE or self.max_info_rx not in MAX_INFO_RANGE:
            raise LocalProtocolError(f"maximum information length out of 32..2030 in {self}")
        if self.window_tx not in WINDOW_RANGE or self.window_rx not in WINDOW_RANGE:
            raise LocalProtocolError(f"window size out of 1..7 in {self}")

    def swapped(self) -> HdlcParameters:
        """The same link seen from the other station: tx and rx exchanged."""
        return HdlcParameters(
            max_info_tx=self.max_info_rx,
            max_info_rx=self.max_info_tx,
            window_tx=self.window_rx,
            window_rx=self.window_tx,
        )


DEFAULT_PARAMETERS = HdlcParameters()  # IEC 62056-46: what an SNRM or UA without an information field means


def _parameter(identifier: int, value: int, width: int) -> bytes:
    return bytes([identifier, width]) + value.to_bytes(width, "big")


def encode_parameters(p: HdlcParameters) -> bytes:
    """Return the SNRM/UA information field carrying all four parameters."""
    group = b"".join(
        (
            _parameter(_MAX_INFO_TX, p.max_info_tx, 1 if p.max_info_tx <= 0xFF else 2),
            _parameter(_MAX_INFO_RX, p.max_info_rx, 1 if p.max_info_rx <= 0xFF else 2),
            _parameter(_WINDOW_TX, p.window_tx, _WINDOW_BYTES),
            _parameter(_WINDOW_RX, p.window_rx, _WINDOW_BYTES),
        )
    )
    return bytes([_FORMAT_IDENTIFIER, _GROUP_IDENTIFIER, len(group)]) + group


def decode_parameters(info: bytes) -> HdlcParameters:
    """Decode a SNRM/UA information field; empty means all defaults; unknown parameters are skipped."""
    if not info:
        return HdlcParameters()
    if len(info) < 3 or info[0] != _FORMAT_IDENTIFIER or info[1] != _GROUP_IDENTIFIER:
        raise HdlcError(f"not an HDLC parameter field: {info.hex(' ')}")
    if info[2] != len(info) - 3:
        raise HdlcError(f"parameter group length {info[2]} but {len(info) - 3} bytes follow")
    values: dict[int, int] = {}
    offset = 3
    while offset < len(info):
        if offset + 2 > len(info):
            raise HdlcError("parameter truncated")
        identifier, width = info[offset], info[offset + 1]
        if not 1 <= width <= 4 or offset + 2 + width > len(info):
            raise HdlcError(f"parameter 0x{identifier:02X} has a bad length {width}")
        values[identifier] = int.from_bytes(info[offset + 2 : offset + 2 + width], "big")
        offset += 2 + width
    try:
        return HdlcParameters(
            max_info_tx=values.get(_MAX_INFO_TX, DEFAULT_MAX_INFO),
            max_info_rx=values.get(_MAX_INFO_RX, DEFAULT_MAX_INFO),
            window_tx=values.get(_WINDOW_TX, DEFAULT_WINDOW),
            window_rx=values.get(_WINDOW_RX, DEFAULT_WINDOW),
        )
    except LocalProtocolError as error:
        raise HdlcError(str(error)) from None


def negotiate(*, proposed: HdlcParameters, supported: HdlcParameters) -> HdlcParameters:
    """Return the server's UA parameters: its own capacity capped by the client's SNRM proposal."""
    return HdlcParameters(
        max_info_tx=min(supported.max_info_tx, proposed.max_info_rx),
        max_info_rx=min(supported.max_info_rx, proposed.max_info_tx),
        window_tx=min(supported.window_tx, proposed.window_rx),
        window_rx=min(supported.window_rx, proposed.window_tx),
    )


MOST = HdlcParameters(max_info_tx=MAX_INFO_RANGE[-1], max_info_rx=MAX_INFO_RANGE[-1], window_tx=WINDOW_RANGE[-1],
                      window_rx=WINDOW_RANGE[-1])  # no limit known: what IEC 62056-46 allows


def meter_limit(*, previous: HdlcParameters | None, proposed: HdlcParameters,
                accepted: HdlcParameters) -> HdlcParameters:
    """What a meter is known to accept at most, after its UA answered `accepted` to `proposed` (client's view).

    Where it took less than was proposed, that is its limit. Where it took all, the limit known before
    still holds if the proposal stayed within it (a lower cap revealed nothing); past it, none is known.
    """

    def value(took: int, asked: int, before: int | None, most: int) -> int:
        if took < asked:
            return took
        return before if before is not None and asked <= before else most

    def old(name: str) -> int | None:
        return None if previous is None else int(getattr(previous, name))

    return HdlcParameters(
        max_info_tx=value(accepted.max_info_tx, proposed.max_info_tx, old("max_info_tx"), MOST.max_info_tx),
        max_info_rx=value(accepted.max_info_rx, proposed.max_info_rx, old("max_info_rx"), MOST.max_info_rx),
        window_tx=value(accepted.window_tx, proposed.window_tx, old("window_tx"), MOST.window_tx),
        window_rx=value(accepted.window_rx, proposed.window_rx, old("window_rx"), MOST.window_rx),
    )


def capped(limit: HdlcParameters, cap: HdlcParameters) -> HdlcParameters:
    """The SNRM proposal: a meter's known limit, never above the configured cap (a modem's small buffers)."""
    return HdlcParameters(max_info_tx=min(limit.max_info_tx, cap.max_info_tx),
                          max_info_rx=min(limit.max_info_rx, cap.max_info_rx),
                          window_tx=min(limit.window_tx, cap.window_tx), window_rx=min(limit.window_rx, cap.window_rx))
