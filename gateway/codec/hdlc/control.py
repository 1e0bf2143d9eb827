"""The HDLC control field (IEC 62056-46, control field): frame kinds, P/F bit, N(S) and N(R)."""

from enum import Enum

POLL_FINAL = 0x10  # IEC 62056-46, control field: the P/F bit, bit 4 of every control field
SEQUENCE_MODULUS = 8  # IEC 62056-46, control field: N(S) and N(R) are 3-bit counters


class FrameKind(Enum):
    """The commands and responses DLMS uses (IEC 62056-46, commands and responses)."""

    I = "I"  # noqa: E741 -- the standard's name for an information frame
    RR = "RR"
    RNR = "RNR"
    SNRM = "SNRM"
    UA = "UA"
    DISC = "DISC"
    DM = "DM"
    FRMR = "FRMR"
    UI = "UI"


# IEC 62056-46, control field encodings: control bytes with the P/F bit cleared
_SUPERVISORY = {0x01: FrameKind.RR, 0x05: FrameKind.RNR}
_UNNUMBERED = {
    0x83: FrameKind.SNRM,
    0x63: FrameKind.UA,
    0x43: FrameKind.DISC,
    0x0F: FrameKind.DM,
    0x87: FrameKind.FRMR,
    0x03: FrameKind.UI,
}
_UNNUMBERED_CONTROL = {kind: control for control, kind in _UNNUMBERED.items()}
_SUPERVISORY_CONTROL = {kind: control for control, kind in _SUPERVISORY.items()}


def _kind_of(control: int) -> FrameKind | None:
    if control & 0x01 == 0:
        return FrameKind.I
    if control & 0x03 == 0x01:
        return _SUPERVISORY.get(control & 0x0F)
    return _UNNUMBERED.get(control & ~POLL_FINAL & 0xFF)


FRAME_KINDS: tuple[FrameKind | None, ...] = tuple(_kind_of(control) for control in range(0x100))  # by control byte


def frame_kind(control: int) -> FrameKind | None:
    """Return the kind of a control byte, or None for one DLMS does not define."""
    return FRAME_KINDS[control]


def send_seq_of(control: int) -> int:
    """N(S) of an I-frame's control byte."""
    return control >> 1 & 0x07


def recv_seq_of(control: int) -> int:
    """N(R) of an I, RR or RNR frame's control byte."""
    return control >> 5


def i_control(*, send_seq: int, recv_seq: int, poll: bool) -> int:
    """Return the control byte of an I-frame."""
    return (recv_seq % SEQUENCE_MODULUS) << 5 | (POLL_FINAL if poll else 0) | (send_seq % SEQUENCE_MODULUS) << 1


def s_control(kind: FrameKind, *, recv_seq: int, poll: bool) -> int:
    """Return the control byte of an RR or RNR frame."""
    return (recv_seq % SEQUENCE_MODULUS) << 5 | (POLL_FINAL if poll else 0) | _SUPERVISORY_CONTROL[kind]


def u_control(kind: FrameKind, *, poll: bool) -> int:
    """Return the control byte of an unnumbered frame (SNRM, UA, DISC, DM, FRMR, UI)."""
    return _UNNUMBERED_CONTROL[kind] | (POLL_FINAL if poll else 0)
