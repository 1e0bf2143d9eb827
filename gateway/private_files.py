"""Files that hold secrets the gateway owns (its keys, polling credentials, the TLS key).

Like ssh with a private key: refused when group or others may read or write them.
"""

from __future__ import annotations

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
