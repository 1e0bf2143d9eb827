"""The two kinds of protocol error every codec raises (after h11)."""


class RemoteProtocolError(Exception):
    """Our peer sent something the protocol does not allow."""


class LocalProtocolError(Exception):
    """We were asked to do something the protocol does not allow."""
