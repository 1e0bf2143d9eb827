"""The [standby] table: what a pair needs, and what it must never be configured to do."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config


def test_a_role_needs_a_peer_and_a_secret() -> None:
    with pytest.raises(ConfigError) as problems:
        parse_config('[standby]\nrole = "primary"\nhand_back = "sometimes"\n')
    text = str(problems.value)
    assert "standby.peer" in text and "standby.secret_file" in text and "standby.hand_back" in text
    with pytest.raises(ConfigError, match=r"standby\.role"):
        parse_config('[standby]\nrole = "secondary"\npeer = "10.0.0.2"\nsecret_file = "/x"\n')
    assert parse_config("").standby.paired is False
    pair = '[standby]\nrole = "standby"\npeer = "10.0.0.2"\nsecret_file = "/x"\n'
    with pytest.raises(ConfigError, match="shared medium"):  # two masters on RS-485
        parse_config(pair + 'shared_medium = false\n[[links]]\nname = "bus0"\ndevice = "/dev/ttyUSB0"\n')

