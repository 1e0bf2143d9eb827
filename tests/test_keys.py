"""The gateway's own key file: 0600 or refused, every key named on error, never shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.keys import KeyFileError, create_keys, load_keys


def test_created_keys_are_private_and_load_back(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    keys = create_keys(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_keys(path) == keys
    shown = repr(keys)
    assert keys.block_cipher_key.hex() not in shown.lower()
    assert keys.authentication_key.hex() not in shown.lower()


def test_create_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    create_keys(path)
    with pytest.raises(FileExistsError):
        create_keys(path)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "keys.toml"
    create_keys(path)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match=f"mode {mode:04o} lets others read it; chmod 600"):
        load_keys(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('system_title = "0011"\nblock_cipher_key = "00"\nauthentication_key = "00"', "'system_title' must be 8 bytes"),
        ('system_title = "4447570000000001"\nblock_cipher_key = "zz"\nauthentication_key = "00"',
         "'block_cipher_key' must be 16 bytes"),
        ("this is not toml", "not a readable TOML key file"),
    ],
)
def test_bad_content_names_the_key_never_the_value(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(text)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match=message) as caught:
        load_keys(path)
    assert "zz" not in str(caught.value).replace(str(path), "")  # the path is the test's own (random) folder


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="No such file"):
        load_keys(tmp_path / "absent.toml")
