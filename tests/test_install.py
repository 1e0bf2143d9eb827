"""hw/install.sh into a scratch root, twice: owners and modes the service relies on, nothing overwritten."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from gateway.keys import load_keys

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "hw" / "install.sh"
TOOLS = ("systemd-sysusers", "systemd-tmpfiles", "systemd-analyze")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="install.sh runs as root (CI does)"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS), reason=f"needs {', '.join(TOOLS)} (apt: systemd)"),
    pytest.mark.timeout(300),
]


def install(root: Path) -> str:
    result = subprocess.run([str(SCRIPT), "--root", str(root), "--no-start"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def ids(root: Path, table: str, name: str) -> int:
    for line in (root / "etc" / table).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"{name} not in {table}")


def mode_owner(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid


def test_install_then_upgrade(tmp_path: Path) -> None:
    root = tmp_path / "board"
    first = install(root)
    uid, gid = ids(root, "passwd", "dlms-gateway"), ids(root, "group", "dlms-gateway")
    assert uid != 0 and gid != 0
    etc = root / "etc/dlms-gateway"
    assert mode_owner(etc) == (0o750, 0, gid)
    assert mode_owner(etc / "gateway.toml") == (0o640, 0, gid)
    assert mode_owner(etc / "keys.toml") == (0o600, uid, gid)
    assert mode_owner(root / "var/lib/dlms-gateway") == (0o750, uid, gid)
    assert mode_owner(root / "run/dlms-gateway") == (0o750, uid, gid)
    assert (root / "etc/systemd/system/dlms-gateway.service").read_bytes() == \
        (ROOT / "systemd/dlms-gateway.service").read_bytes()
    assert (root / "etc/modules-load.d/dlms-gateway.conf").is_file()
    assert (root / "etc/udev/rules.d/99-dlms-gateway.rules").is_file()
    assert (root / "usr/local/lib/dlms-gateway/dlms-gateway-notify").stat().st_mode & 0o777 == 0o755
    assert (root / "usr/local/share/dlms-gateway/keepalived.conf.in").is_file()
    assert os.readlink(root / "usr/local/bin/dlms-gateway") == "/opt/dlms-gateway/bin/dlms-gateway"
    version = subprocess.run([str(root / "opt/dlms-gateway/bin/dlms-gateway"), "--version"],
                             capture_output=True, text=True, check=True)
    assert version.stdout.startswith("dlms-gateway ")
    keys = load_keys(etc / "keys.toml")
    assert keys.system_title.startswith(b"DGW") and keys.block_cipher_key != keys.authentication_key
    assert "keys.toml" in first and keys.block_cipher_key.hex() not in first.lower()  # never printed

    # An operator edits the configuration; an upgrade keeps it, and the keys, byte for byte.
    config = (etc / "gateway.toml").read_text() + "\n# site settings\n"
    (etc / "gateway.toml").write_text(config)
    key_bytes = (etc / "keys.toml").read_bytes()
    second = install(root)
    assert (etc / "gateway.toml").read_text() == config
    assert (etc / "keys.toml").read_bytes() == key_bytes
    assert "new:" not in second
    assert ids(root, "passwd", "dlms-gateway") == uid
    assert mode_owner(etc / "keys.toml") == (0o600, uid, gid)


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    result = subprocess.run([str(SCRIPT), "--rot", str(tmp_path)], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "unknown option --rot" in result.stderr
    assert not any(tmp_path.iterdir())
