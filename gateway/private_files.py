"""Files that hold secrets the gateway owns (its keys, polling credentials, the TLS key), and the
files and directories it writes (databases, state and runtime directories).

Secrets, like ssh with a private key: refused when group or others may read or write them.
What the daemon creates is private whatever the umask it was started with (systemd's unit sets
UMask=0077, a technician's shell 022): directories 0750 at most (the service group reaches the
control socket), SQLite files 0600. SQLite gives a database's -wal and -shm files the mode of
the database file itself, so creating that file 0600 first covers all three.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import tomllib
from pathlib import Path
from typing import Any


def private_file_problem(path: Path) -> str | None:
    """Why ``path`` must not be used as a secret file, or None when it is fine."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path}: mode {stat.S_IMODE(mode):04o} lets others read it; chmod 600 {path}"
    return None


def read_private_toml(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the parsed file, None) or (None, why not); the message never quotes the content."""
    problem = private_file_problem(path)
    if problem is not None:
        return None, problem
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return None, f"{path}: not a readable TOML key file ({type(exc).__name__})"


DIRECTORY_MODE = 0o750  # the service user, and its group (technicians reach control.sock through it)
DATABASE_MODE = 0o600


def private_directory(path: Path) -> Path:
    """Create the directory (and missing parents); it never lets more than DIRECTORY_MODE in."""
    path.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)  # mkdir's mode is masked by the umask only
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & ~DIRECTORY_MODE:
        os.chmod(path, mode & DIRECTORY_MODE)  # one left from a start by hand under umask 022
    return path


def connect_private(path: Path) -> sqlite3.Connection:
    """Open a SQLite database that only the service user can read, with its -wal and -shm files."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, DATABASE_MODE)
        try:
            os.fchmod(descriptor, DATABASE_MODE)
        finally:
            os.close(descriptor)
        for sidecar in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if sidecar.exists():
                os.chmod(sidecar, DATABASE_MODE)
    except OSError as exc:
        raise sqlite3.OperationalError(f"cannot create {path} private: {exc.strerror}") from None
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)
