"""The error the HDLC codec raises when a peer breaks IEC 62056-46."""

from gateway.codec.errors import RemoteProtocolError


class HdlcError(RemoteProtocolError):
    """A frame, field or sequence on the line breaks IEC 62056-46."""
