"""The CLI side of the control socket."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO, TypeVar

DEFAULT_SOCKET = Path("/run/dlms-gateway/control.sock")
# Exit codes of every `dlms-gateway` command, for scripts run by technicians and tools.
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3
EXIT_INTERRUPTED = 128 + 2  # a shell's status for a command ended by SIGINT (Ctrl-C)
EXIT_BROKEN_PIPE = 128 + 13  # a shell's status for a command ended by SIGPIPE (`| head` quit)
SOCKET_ENV = "DLMS_GATEWAY_SOCKET"
_ParserT = TypeVar("_ParserT", bound=argparse.ArgumentParser)


class DaemonNotRunningError(Exception):
    """Nothing listens on the control socket."""


class DaemonRefusedError(Exception):
    """The daemon answered with an error."""


def common_options(parser_class: type[_ParserT]) -> _ParserT:
    """--socket and --json, for the top level and every command: they work before or after it.

    Their defaults are SUPPRESS, so that a command's parser leaves what the top level set alone.
    """
    options = parser_class(add_help=False)
    options.add_argument("--socket", type=Path, default=argparse.SUPPRESS,
                         help=f"control socket (default: ${SOCKET_ENV}, else {DEFAULT_SOCKET})")
    options.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help="machine-readable output (an error is {\"ok\": false, \"error\": ...} on stdout)")
    return options


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def report_failure(exc: Exception, *, as_json: bool = False) -> int:
    """Say what went wrong on stderr (and as a JSON object on stdout under --json); return its exit code."""
    print(f"dlms-gateway: {exc}", file=sys.stderr)
    if as_json:
        print(json.dumps({"ok": False, "error": str(exc)}))
    if isinstance(exc, DaemonNotRunningError):
        return EXIT_NOT_RUNNING
    if isinstance(exc, DaemonRefusedError):
        return EXIT_REFUSED
    return EXIT_USAGE


def socket_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return Path(explicit)
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


# Keys of the control protocol that hold UTC seconds: people (and scripts) get ISO 8601 times.
TIME_KEYS = frozenset({"last_seen", "first_seen", "since", "captured_at", "read_at", "removed_at", "started_at",
                       "finished_at"})


def iso_time(seconds: float) -> str:
    """UTC seconds as ISO 8601 with its zone, to the second: 2026-11-30T18:06:38Z."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def readable(value: Any, key: str = "") -> Any:
    """A daemon answer as people read it: times in ISO 8601, durations to a tenth (ms or s)."""
    if isinstance(value, Mapping):
        return {k: readable(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [readable(v, key) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        if key in TIME_KEYS:
            return iso_time(value)
        if isinstance(value, float) and key.endswith(("_ms", "_s")):
            return round(value, 1)
    return value


def duration(seconds: float) -> str:
    """0:07, 2:05, 1:02:05."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class ProgressBar:
    """Progress of a long command on stderr, with the time it took and an estimate of what is left.

    On a terminal one line is rewritten in place; otherwise (a log, a pipe) a line is printed for
    the first step, every tenth and the last. A scan's first update (done 0) says what the worst
    case costs: each silent address waits out its retries.
    """

    def __init__(self, *, out: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._out = out or sys.stderr
        self._clock = clock
        self._started = clock()

    def __call__(self, update: Mapping[str, Any]) -> None:
        done, total = int(update.get("done", 0)), int(update.get("total", 0)) or 1
        if done == 0:
            if "seconds_per_silent_address" in update:
                per_address = float(update["seconds_per_silent_address"])
                print(f"scanning {total} addresses on {update.get('link', '')}: up to about "
                      f"{duration(per_address * total)} ({per_address:.1f} s per silent address)", file=self._out)
            return
        width = 30
        filled = width * done // total
        elapsed = self._clock() - self._started
        note = f" {update['note']}," if update.get("note") else ""
        text = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}{note} {duration(elapsed)} elapsed"
        if done < total:
            text += f", about {duration(elapsed / done * (total - done))} left"
        if self._out.isatty():
            print(f"\r{text}".ljust(90), end="", file=self._out, flush=True)
            if done >= total:
                print(file=self._out)
        elif done in (1, total) or done % max(1, total // 10) == 0:
            print(text, file=self._out, flush=True)
