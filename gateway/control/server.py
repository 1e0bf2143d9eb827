"""The control socket: the CLI talks to the running daemon over a Unix socket.

One JSON object per line each way. A request is ``{"command": NAME, ...arguments}``; the
answer is ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``, possibly after
``{"progress": {...}}`` lines for long operations. A client that closes the connection (or
its sending side) before the answer has given up (Ctrl-C): its command is cancelled, so that a
scan nobody waits for stops holding the line. The socket is group-restricted (0660) and
the peer's credentials are checked again on accept: root, the service user, or its group.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from gateway.private_files import private_directory

log = structlog.get_logger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
MAX_NUMBER = 2**63 - 1  # any count, SAP or address fits; a 5,000-digit integer is refused, not converted
Progress = Callable[[Mapping[str, Any]], None]
Handler = Callable[[Mapping[str, Any], Progress], Awaitable[Any]]


class CommandError(Exception):
    """The daemon says no: the message is for the technician."""


_MISSING: Any = object()


def number(request: Mapping[str, Any], key: str, *, default: int = _MISSING) -> int:
    """A whole-number argument; CommandError naming it when it is missing or of another type."""
    value = request.get(key)
    value = default if value is None else value  # null is "not given"
    if value is _MISSING:
        raise CommandError(f"'{key}' is missing: a whole number")
    if type(value) is not int or not -MAX_NUMBER <= value <= MAX_NUMBER:  # bool is not a number here
        raise CommandError(f"'{key}' must be a whole number, not {_kind(value)}")
    return value


def text(request: Mapping[str, Any], key: str, *, default: str = _MISSING) -> str:
    """A string argument without NUL characters; CommandError naming it otherwise."""
    value = request.get(key)
    value = default if value is None else value  # null is "not given"
    if value is _MISSING:
        raise CommandError(f"'{key}' is missing: a string")
    if not isinstance(value, str):
        raise CommandError(f"'{key}' must be a string, not {_kind(value)}")
    if "\0" in value:
        raise CommandError(f"'{key}' must not hold NUL characters")
    return value


def sap_or_name(request: Mapping[str, Any], key: str) -> int | str:
    """A meter given by SAP (a number, or a string of ASCII digits) or by logical device name."""
    value = request.get(key)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        return int(value)
    if isinstance(value, str):
        return text(request, key)
    return number(request, key)


def _kind(value: object) -> str:
    """What a wrong argument is, in JSON terms (never the value: it may be huge)."""
    if isinstance(value, bool):
        return "true/false"
    if type(value) is int:
        return "a number that large"
    names = {dict: "an object", list: "an array", str: "a string", float: "a fraction", type(None): "null"}
    return names.get(type(value), "that")


def parse_request(line: bytes) -> dict[str, Any]:
    """One request line as a JSON object with a string 'command'; CommandError saying what is wrong."""
    try:
        request = json.loads(line)
    except RecursionError:
        raise CommandError("not a request: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers beyond Python's digit limit
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "a number too long"
        raise CommandError(f"not a JSON request: {reason}") from None
    if not isinstance(request, dict):
        raise CommandError("a request is a JSON object with a 'command'")
    command = request.get("command", _MISSING)
    if command is _MISSING:
        raise CommandError("a request is a JSON object with a 'command'")
    text(request, "command")
    return request


def peer_allowed(sock: socket.socket) -> bool:
    """Root, our own user, or a member of our group may use the socket."""
    pid_uid_gid = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, gid = struct.unpack("3i", pid_uid_gid)
    if uid in (0, os.getuid()) or gid == os.getgid():
        return True
    try:
        members = grp.getgrgid(os.getgid()).gr_mem
    except KeyError:
        return False
    import pwd  # noqa: PLC0415 - only for the rare case of a supplementary group

    try:
        return pwd.getpwuid(uid).pw_name in members
    except KeyError:
        return False


def _has_request(next_line: asyncio.Future[bytes]) -> bool:
    """Whether the client sent another request (pipelined) rather than hanging up."""
    return next_line.done() and not next_line.cancelled() and next_line.exception() is None \
        and bool(next_line.result())


async def _cancel(answering: asyncio.Future[dict[str, Any]], line: bytes) -> None:
    answering.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await answering
    try:
        command = json.loads(line).get("command")
    except (ValueError, AttributeError):
        command = None
    log.info("control.cancelled", command=command, reason="the client went away")


class ControlServer:
    """Serves CLI requests on a Unix socket."""

    def __init__(self, *, path: Path, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self._handlers = handlers
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        private_directory(self.path.parent)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket from a killed daemon
        old_umask = os.umask(0o117)  # created 0660: never a moment when others could connect
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                           limit=MAX_REQUEST_BYTES)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)
        log.info("control.listening", path=str(self.path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._clients):
            task.cancel()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            sock = writer.get_extra_info("socket")
            if sock is None or not peer_allowed(sock):
                await self._send(writer, {"ok": False, "error": "permission denied"})
                return
            line = await reader.readline()
            while line:
                answering = asyncio.ensure_future(self._answer(line, writer))
                next_line = asyncio.ensure_future(reader.readline())
                try:
                    await asyncio.wait({answering, next_line}, return_when=asyncio.FIRST_COMPLETED)
                    if not answering.done() and not _has_request(next_line):
                        await _cancel(answering, line)  # the client hung up (Ctrl-C): its command stops now
                        return
                    await self._send(writer, await answering)
                    line = await next_line
                finally:
                    for task in (answering, next_line):
                        task.cancel()
        except (ValueError, asyncio.LimitOverrunError):  # over MAX_REQUEST_BYTES: say so, then end that client only
            with contextlib.suppress(ConnectionError):
                await self._send(writer, {"ok": False, "error": f"request longer than {MAX_REQUEST_BYTES} bytes"})
        except ConnectionError:
            pass  # a broken connection ends that client only
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, line: bytes, writer: asyncio.StreamWriter) -> dict[str, Any]:
        try:
            request = parse_request(line)
            handler = self._handlers.get(request["command"])
            if handler is None:
                raise CommandError(f"unknown command {request['command'][:40]!r}")

            def progress(update: Mapping[str, Any]) -> None:
                if not writer.is_closing():  # a client gone meanwhile: its command is being cancelled
                    writer.write(json.dumps({"progress": dict(update)}).encode() + b"\n")

            return {"ok": True, "result": await handler(request, progress)}
        except CommandError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug must not take the daemon down with it
            log.exception("control.handler_failed")
            return {"ok": False, "error": f"internal error: {exc}"}

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, message: Mapping[str, Any]) -> None:
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
