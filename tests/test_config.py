"""Configuration: valid files become frozen objects; bad ones name the key and the line."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from gateway.cli.main import event_loop_factory
from gateway.config import ConfigError, load_config, network_ids, parse_config

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
    assert config.links[0].max_info == 2030  # the default since main b283600: the UA says what the meter takes
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
        (("sap = 18", "sap = 17"), r"'meters\[1\].sap' \(line 19\): SAP 17 is already meters\[0\]'s"),
        (('link = "bus0"\nphysical_address = 18', 'link = "bus1"\nphysical_address = 18'),
         r"'meters\[1\].link' \(line 20\): no link or mesh named 'bus1'"),
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


def test_every_error_is_reported_with_its_line() -> None:
    text = GOOD.replace("baudrate = 9600", "baudrate = 9600\nbaud = 1").replace("port = 14059", 'port = "x"')
    text = text.replace("exchange_timeout_s = 5", "exchange_timeout_s = -5")
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert [(p.key, p.line) for p in caught.value.problems] == [
        ("wan.port", 2), ("relay.exchange_timeout_s", 6), ("links[0].baud", 12)]  # in the order of the file
    assert str(caught.value).splitlines()[2] == "unknown key 'links[0].baud' (line 12)"


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("wan.port = 0\n", "wan.port", 1),
        ('[wan]\nlisten = ["::"]\ntls.key = 1\n', "wan.tls", 3),
        ("\n\nwan = { listen = [\"::\"], prot = 1 }\n", "wan.prot", 3),
        ('[[links]]\nname = "a"\ndevice = "/dev/x"\n\n[[links]]\nname = "b"\ndevice = "/dev/y"\nwindow = 9\n',
         "links[1].window", 8),
        ('links = [\n  { name = "a", device = "/dev/x" },\n  { name = "b", device = "/dev/y", window = 9 },\n]\n',
         "links[1].window", 3),
        ("[relay]\nexchange_timeout_s = 0\n", "relay.exchange_timeout_s", 2),
        ("[relay]\nassociation_idle_s = -1\n", "relay.association_idle_s", 2),
    ],
)
def test_dotted_and_inline_keys_have_their_line(text: str, key: str, line: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert (key, line) in [(p.key, p.line) for p in caught.value.problems], caught.value


def test_two_links_on_one_device_are_refused() -> None:
    text = '[[links]]\nname = "a"\ndevice = "/dev/ttyUSB0"\n[[links]]\nname = "b"\ndevice = "/dev/ttyUSB0"\n'
    with pytest.raises(ConfigError, match=r"'links\[1\].device' \(line 6\): /dev/ttyUSB0 is already links\[0\]"):
        parse_config(text)


def test_a_duplicate_sap_message_gives_the_configured_range() -> None:
    text = GOOD.replace("sap = 18", "sap = 17", 1) + "[registry]\nsap_first = 17\nsap_last = 300\n"
    with pytest.raises(ConfigError, match=r"'meters\[1\].sap' \(line 19\): SAP 17 is already meters\[0\]'s") as caught:
        parse_config(text)
    assert "65535" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"'meters\[1\].sap' \(line 19\): outside the SAP range 17..300"):
        parse_config(GOOD.replace("sap = 18", "sap = 301", 1) + "[registry]\nsap_last = 300\n")


def test_poll_groups_name_credentials_that_the_polling_keys_file_holds(tmp_path: Path) -> None:
    keys = tmp_path / "polling-keys.toml"
    keys.write_text('[credentials.reader]\nmechanism = "lls"\npassword = "12345678"\n')
    keys.chmod(0o600)
    path = tmp_path / "gw.toml"
    poller = (f'[poller]\nenabled = true\nkeys_file = "{keys}"\n\n[[poller.groups]]\nname = "g"\nmeters = [17]\n'
              'credentials = "{name}"\n')
    path.write_text(GOOD + poller.replace("{name}", "reader"))
    assert load_config(path).poller.groups[0].credentials == "reader"
    path.write_text(GOOD + poller.replace("{name}", "residential"))
    with pytest.raises(ConfigError, match=r"'poller.groups\[0\].credentials' \(line 30\): no credentials "
                                          r"'residential' in .*polling-keys.toml \(it holds: reader\)"):
        load_config(path)


MESHES = """
[[links]]
name = "bus0"
device = "/dev/ttyUSB0"

[[meshes]]
name = "wisun0"
source_address = "fd00::1"
max_in_flight = 4

[[meshes]]
name = "g3"
network_id = 9

[[meters]]
sap = 17
link = "bus0"
physical_address = 17

[[meters]]
sap = 18
link = "wisun0"
address = "FD00:0::17"
logical_device = 1
eui64 = "00:11:22:33:44:55:66:77"
"""


def test_meshes_sit_beside_lines_with_their_own_network_ids() -> None:
    config = parse_config(MESHES)
    assert [(m.name, m.port, m.max_in_flight, m.wisun_bus) for m in config.meshes] == [
        ("wisun0", 4059, 4, ""), ("g3", 4059, 8, "")]
    assert network_ids(config.links, config.meshes) == {1: "bus0", 2: "wisun0", 9: "g3"}
    assert parse_config(MESHES.replace("max_in_flight = 4", 'broadcast_group = "ff03::1"')).meshes[0].broadcast_group \
        == "ff03::1"
    mesh_meter = config.meters[1]
    assert (mesh_meter.address, mesh_meter.eui64_bytes) == ("FD00:0::17", bytes.fromhex("0011223344556677"))


@pytest.mark.parametrize(("edit", "message"), [
    (("network_id = 9", "network_id = 1"), r"'meshes\[1\].network_id' \(line 13\): network 1 is already 'bus0'"),
    (('address = "FD00:0::17"', 'address = "10.0.0.1"'), r"'meters\[1\].address' \(line 23\): '10.0.0.1' is not"),
    (('address = "FD00:0::17"', "physical_address = 17"), r"'meters\[1\].physical_address' .*is a mesh"),
    (('name = "g3"', 'name = "bus0"'), r"'meshes\[1\].name' \(line 12\): 'bus0' is already"),
    (('eui64 = "00:11:22:33:44:55:66:77"', 'eui64 = "0011"'), r"'meters\[1\].eui64'.*16 hex digits"),
    (('physical_address = 17', 'address = "fd00::9"'), r"'meters\[0\].address'.*is a serial line"),
    (('eui64 = "00:11:22:33:44:55:66:77"', 'transport = "sctp"'), r"'meters\[1\].transport'.*\"udp\" or \"tcp\""),
    (('physical_address = 17', 'physical_address = 17\ntransport = "tcp"'), r"'meters\[0\].transport'.*serial"),
    (("max_in_flight = 4", 'max_in_flight = 4\nbroadcast_group = "fd00::1"'),
     r"'meshes\[0\].broadcast_group' \(line 10\): 'fd00::1' is not an IPv6 multicast address"),
])
def test_mesh_errors_name_the_key_and_line(edit: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(MESHES.replace(*edit, 1))


def test_the_event_loop_choice_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"'relay.event_loop'.*must be auto, uvloop or asyncio"):
        parse_config(GOOD.replace("[relay]", '[relay]\nevent_loop = "trio"', 1))
    assert parse_config(GOOD).relay.event_loop == "auto"


def test_auto_runs_the_daemon_on_uvloop_when_installed_and_asyncio_stays_selectable() -> None:
    uvloop = pytest.importorskip("uvloop")  # a dependency on Linux: CI has it
    factory = event_loop_factory("auto")
    assert callable(factory)
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    assert event_loop_factory("asyncio") is None  # asyncio.Runner's default loop
    assert event_loop_factory("uvloop") is factory
