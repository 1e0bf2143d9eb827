"""[poller] in the TOML file and the polling key file: valid input parses, mistakes name key and line."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import structlog

from gateway.codec.acse import Mechanism
from gateway.config import ConfigError, parse_config
from gateway.log import configure
from gateway.poller.config import DEFAULT_CLIENT_SAP
from gateway.poller.credentials import CredentialsError, load_polling_keys
from tests.poller.conftest import write_polling_keys
from tests.poller.meters import GATEWAY_TITLE, READER_AUTHENTICATION_KEY, READER_BLOCK_CIPHER_KEY

GOOD = """
[[links]]
name = "bus0"
device = "/dev/ttyUSB0"

[poller]
enabled = true
retention_days = 30

[[poller.groups]]
name = "residential"
meters = [17, "SIM0000000000001"]
credentials = "reader"
interval_s = 900
registers = ["1.0.1.8.0.255"]
profiles = ["1.0.99.1.0.255"]
event_logs = ["0.0.99.98.0.255"]

[poller.mqtt]
host = "broker.example"
topic_prefix = "utility/dc"
"""


def test_a_full_poller_table_parses() -> None:
    poller = parse_config(GOOD).poller
    assert poller.enabled and poller.retention_days == 30.0
    (group,) = poller.groups
    assert group.meters == (17, "SIM0000000000001") and group.client_sap == DEFAULT_CLIENT_SAP
    assert group.event_logs == ("0.0.99.98.0.255",) and group.retries == 2
    assert poller.mqtt.host == "broker.example" and poller.mqtt.qos == 1 and poller.mqtt.port == 1883


def test_polling_is_off_by_default() -> None:
    assert parse_config('[[links]]\nname = "bus0"\ndevice = "/dev/ttyUSB0"\n').poller.enabled is False


@pytest.mark.parametrize(("change", "message"), [
    (("interval_s = 900", "interval_s = 0"), r"'poller.groups\[0\].interval_s' \(line 14\)"),
    (('registers = ["1.0.1.8.0.255"]', 'registers = ["1.0.1.8"]'), r"'poller.groups\[0\].registers' \(line 15\)"),
    (("interval_s = 900", "interval_s = 900\nclient_sap = 1"), r"'poller.groups\[0\].client_sap' \(line 15\).*"
                                                                 "management client"),
    (("interval_s = 900", "interval_s = 900\nwhen = 3"), r"unknown key 'poller.groups\[0\].when' \(line 15\)"),
    (('host = "broker.example"', 'host = "broker.example"\nqos = 0'), r"'poller.mqtt.qos' \(line 21\)"),
    (('topic_prefix = "utility/dc"', 'topic_prefix = "utility/#"'), r"'poller.mqtt.topic_prefix' \(line 21\)"),
    (('meters = [17, "SIM0000000000001"]', "meters = [1]"), r"'poller.groups\[0\].meters' \(line 12\)"),
])
def test_mistakes_name_the_key_and_its_line(change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(GOOD.replace(*change))


def test_the_key_file_loads_and_must_be_private(tmp_path: Path) -> None:
    path = write_polling_keys(tmp_path / "polling-keys.toml", extra=(
        '[credentials.old]\nmechanism = "lls"\npassword = "12345678"\n'
        '[meters."SIM0000000000003"]\nmechanism = "none"\n'))
    keys = load_polling_keys(path)
    reader = keys.for_meter(group_credentials="reader", sap=17, name="SIM0000000000001")
    assert reader is not None and reader.mechanism is Mechanism.HLS_GMAC and reader.system_title == GATEWAY_TITLE
    assert reader.block_cipher_key == READER_BLOCK_CIPHER_KEY and reader.authentication_key == READER_AUTHENTICATION_KEY
    own = keys.for_meter(group_credentials="reader", sap=19, name="SIM0000000000003")
    assert own is not None and own.mechanism is Mechanism.NONE  # a meter's own credentials win
    for secret in (READER_BLOCK_CIPHER_KEY.hex(), READER_AUTHENTICATION_KEY.hex(), "12345678"):
        assert secret not in repr(keys) + repr(reader) + repr(keys.named["old"])
    os.chmod(path, 0o640)
    with pytest.raises(CredentialsError, match="chmod 600"):
        load_polling_keys(path)


@pytest.mark.parametrize("body", [
    '[credentials.x]\nmechanism = "hls-gmac"\nsystem_title = "0102"\n',
    '[credentials.x]\nmechanism = "lls"\n',
    '[credentials.x]\nmechanism = "hls-md5"\n',
    '[credentials.x]\nmechanism = "none"\nblock_cipher_key = "00112233445566778899AABBCCDDEEFF"\n',
])
def test_bad_key_files_are_refused_without_showing_values(tmp_path: Path, body: str) -> None:
    path = tmp_path / "k.toml"
    path.write_text(body)
    path.chmod(0o600)
    with pytest.raises(CredentialsError) as caught:
        load_polling_keys(path)
    assert "00112233" not in str(caught.value) and "[credentials.x]" in str(caught.value)


def test_keys_never_reach_the_log(tmp_path: Path) -> None:
    """The service logs its start, polls and failures; a key or password never appears."""
    stream = io.StringIO()
    configure(level="debug", fmt="json", stream=stream)
    try:
        path = write_polling_keys(tmp_path / "polling-keys.toml")
        keys = load_polling_keys(path)
        structlog.get_logger("test").info("poll.keys_loaded", keys=keys, reader=keys.named["reader"])
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    assert "poll.keys_loaded" in text
    assert READER_BLOCK_CIPHER_KEY.hex() not in text.lower() and READER_AUTHENTICATION_KEY.hex() not in text.lower()


def test_the_example_configuration_documents_a_polling_keys_file_that_loads(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "systemd" / "gateway.toml.example"
    documented = [line[len("##   "):] for line in example.read_text().splitlines() if line.startswith("##   ")]
    keys = tmp_path / "polling-keys.toml"
    keys.write_text("\n".join(documented) + "\n")
    keys.chmod(0o600)
    loaded = load_polling_keys(keys)
    assert set(loaded.named) == {"residential", "old_meters"} and set(loaded.per_meter) == {"SIM0000000000001"}
    assert loaded.named["residential"].mechanism is Mechanism.HLS_GMAC
    assert loaded.named["old_meters"].password == b"12345678"
