"""The CLI side of the control socket."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

DEFAULT_SOCKET = Path("/run/dlms-gateway/control.sock")
# Exit codes of every `dlms-gateway` command, for scripts run by technicians and tools.
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3
SOCKET_ENV = "DLMS_GATEWAY_SOCKET"


class DaemonNotRunningError(Exception):
    """Nothing listens on the control socket."""


class DaemonRefusedError(Exception):
    """The daemon answered with an error."""


def report_failure(exc: Exception) -> int:
    """Say what went wrong on stderr; return the exit code it means."""
    print(f"dlms-gateway: {exc}", file=sys.stderr)
    if isinstance(exc, DaemonNotRunningError):
        return EXIT_NOT_RUNNING
    if isinstance(exc, DaemonRefusedError):
        return EXIT_REFUSED
    return EXIT_USAGE


def socket_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    from_env = os.environ.get(SOCKET_ENV)
    return Path(from_env) if from_env else DEFAULT_SOCKET


def call(path: Path, command: str, *, on_progress: Callable[[Mapping[str, Any]], None] | None = None,
         timeout_s: float = 120.0, **arguments: Any) -> Any:
    """Send one command to the daemon and return its result."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise DaemonNotRunningError(f"the daemon is not running (no answer on {path}: {exc.strerror})") from None
    except PermissionError:
        sock.close()
        raise DaemonRefusedError(f"permission denied on {path}: join the service's group") from None
    with sock, sock.makefile("rb") as answers:
        # the daemon may refuse us before reading: its answer is still there to read
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(json.dumps({"command": command, **arguments}).encode() + b"\n")
        for line in answers:
            message = json.loads(line)
            if "progress" in message:
                if on_progress is not None:
                    on_progress(message["progress"])
                continue
            if not message.get("ok"):
                raise DaemonRefusedError(message.get("error", "refused"))
            return message.get("result")
    raise DaemonNotRunningError("the daemon closed the connection without an answer")


def print_table(rows: list[Mapping[str, Any]], columns: list[tuple[str, str]], *, out: Any = None) -> None:
    """A plain text table: (key, heading) columns, widths fitted to the content."""
    out = out or sys.stdout
    cells = [[heading for _, heading in columns]]
    cells += [["" if row.get(key) is None else str(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for index, row in enumerate(cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)
        if index == 0:
            print("  ".join("-" * width for width in widths), file=out)


def progress_bar(update: Mapping[str, Any]) -> None:
    """One line of progress on stderr, rewritten in place on a terminal."""
    done, total = int(update.get("done", 0)), int(update.get("total", 0)) or 1
    width = 30
    filled = width * done // total
    text = f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {update.get('note', '')}"
    if sys.stderr.isatty():
        print(text.ljust(70), end="", file=sys.stderr, flush=True)
        if done >= total:
            print(file=sys.stderr)
    elif done >= total or done % max(1, total // 10) == 0:
        print(text.strip(), file=sys.stderr)
