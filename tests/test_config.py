"""Configuration: valid files become frozen objects; bad ones name the key and the line."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config

GOOD = """\
[wan]
port = 14059
listen = ["127.0.0.1"]

[relay]
exchange_timeout_s = 5

[[links]]
name = "bus0"
device = "/dev/ttyUSB0"
baudrate = 9600

[[meters]]
sap = 17
link = "bus0"
physical_address = 17

[[meters]]
sap = 18
link = "bus0"
physical_address = 18
logical_device = 1
"""


def test_good_file_becomes_frozen_objects() -> None:
    config = parse_config(GOOD)
    assert config.wan.port == 14059
    assert config.wan.listen == ("127.0.0.1",)
    assert config.relay.exchange_timeout_s == 5.0
    assert isinstance(config.relay.exchange_timeout_s, float)
    assert [m.sap for m in config.meters] == [17, 18]
    assert config.links[0].max_info == 128
    with pytest.raises(FrozenInstanceError):
        config.wan.port = 1  # type: ignore[misc]


def test_empty_file_gives_defaults() -> None:
    config = parse_config("")
    assert config.wan.port == 4059
    assert config.meters == ()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("baudrate = 9600", "baudrate = 9600\nbaud = 1"), r"unknown key 'links\[0\].baud' \(line 12\)"),
        (("port = 14059", 'port = "4059"'), r"'wan.port' \(line 2\): expected int, got str"),
        (("sap = 18", "sap = 17"), r"'meters\[1\].sap' \(line 19\): must be unique"),
        (('link = "bus0"\nphysical_address = 18', 'link = "bus1"\nphysical_address = 18'),
         r"'meters\[1\].link' \(line 20\): no link named 'bus1'"),
        (("[relay]", "[relais]"), r"unknown key 'relais' \(line 5\)"),
        (("physical_address = 17", "physical_address = 5"), r"'meters\[0\].physical_address' \(line 16\)"),
    ],
)
def test_errors_name_the_key_and_line(edit: tuple[str, str], message: str) -> None:
    text = GOOD.replace(*edit, 1)
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_missing_required_key_names_the_table() -> None:
    with pytest.raises(ConfigError, match=r"links\[0\] \(the table at line 1\): missing required key device"):
        parse_config('[[links]]\nname = "x"\n')


def test_invalid_toml_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[wan\nport=1")


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("[wan]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"gw.toml: unknown key 'wan.prot' \(line 2\)"):
        load_config(path)
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "missing.toml")
