"""The replication channel: TCP, both ends proven by HMAC-SHA256 over a shared secret, every frame MACed.

Theory of operation::

    standby (dials)                                       primary (listens)
      {"hello": PROTOCOL, "nonce": Nc}            ──▶
                                                  ◀──   {"nonce": Ns, "proof": HMAC(S, "server"|Nc|Ns)}
      {"proof": HMAC(S, "client"|Nc|Ns)}          ──▶
    then, each way:  length (4 bytes) | JSON | HMAC(K, direction|counter|JSON)
                     with K = HMAC(S, "session"|Nc|Ns)

The handshake lines are short (HANDSHAKE_LINE_BYTES): a peer that has proven nothing cannot make
us buffer more. Only after the proofs may a frame be large (a snapshot), up to MAX_FRAME_BYTES.

Both nonces are fresh 32-byte randoms, so a recorded session cannot be replayed; the labels keep a
server's proof from being reflected as a client's; the per-direction counter inside every frame
MAC stops reordering, replay and splicing within a session. There is no confidentiality: the
registry holds meter places, SAPs and names (a HES reads the SAP list from IC 17 anyway) and never
a key. The secret is the pair's own (a 0600 file), never a meter key, and is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import struct
from pathlib import Path
from typing import Any

from gateway.private_files import read_private_toml

PROTOCOL = "dlms-gateway-replication/1"
SECRET_SIZE = 32  # HMAC-SHA256: a key as long as the hash
NONCE_SIZE = 32
MAX_FRAME_BYTES = 64 * 1024 * 1024  # a snapshot of 100,000 meters fits
HANDSHAKE_LINE_BYTES = 1024  # the stream limit: a handshake line is ~150 bytes
_LENGTH = struct.Struct(">I")
MAC_SIZE = 32
HANDSHAKE_TIMEOUT_S = 5.0


class ChannelError(Exception):
    """The peer broke the protocol, or could not prove it holds the secret."""


class SecretFileError(Exception):
    """The replication secret file is missing, malformed, or readable by others."""


def load_secret(path: Path) -> bytes:
    raw, problem = read_private_toml(path)
    if raw is None:
        raise SecretFileError(problem)
    text = raw.get("replication_secret")
    try:
        secret = bytes.fromhex(text) if isinstance(text, str) else b""
    except ValueError:
        secret = b""
    if len(secret) != SECRET_SIZE:  # the message names the key, never its value
        raise SecretFileError(f"{path}: 'replication_secret' must be {SECRET_SIZE} bytes in hex")
    return secret


def create_secret(path: Path) -> None:
    """A fresh secret in a new file, mode 0600 from the first byte on (copy it to the peer the same way)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(f'replication_secret = "{secrets.token_hex(SECRET_SIZE)}"\n')


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"".join(parts), hashlib.sha256).digest()


class Channel:
    """One authenticated connection: send and receive JSON messages, each under the session key."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, key: bytes,
                 outgoing: bytes, incoming: bytes) -> None:
        self._reader, self._writer = reader, writer
        self._key = key
        self._outgoing, self._incoming = outgoing, incoming  # direction labels: b"c>s" / b"s>c"
        self._sent = self._received = 0
        self.peer = str(writer.get_extra_info("peername"))

    async def send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message, separators=(",", ":")).encode()
        tag = _mac(self._key, self._outgoing, self._sent.to_bytes(8, "big"), body)
        self._sent += 1
        self._writer.write(_LENGTH.pack(len(body)) + body + tag)
        await self._writer.drain()

    async def receive(self) -> dict[str, Any]:
        try:
            (length,) = _LENGTH.unpack(await self._reader.readexactly(_LENGTH.size))
            if length > MAX_FRAME_BYTES:
                raise ChannelError(f"a frame longer than {MAX_FRAME_BYTES} bytes")
            body = await self._reader.readexactly(length)
            tag = await self._reader.readexactly(MAC_SIZE)
        except asyncio.IncompleteReadError:
            raise ChannelError("the peer closed the connection") from None
        expected = _mac(self._key, self._incoming, self._received.to_bytes(8, "big"), body)
        if not hmac.compare_digest(expected, tag):
            raise ChannelError("a frame with a wrong MAC (tampered, replayed or reordered)")
        self._received += 1
        return _object(body)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        raise ChannelError("the peer closed the connection") from None
    except asyncio.LimitOverrunError:
        raise ChannelError(f"a handshake line longer than {HANDSHAKE_LINE_BYTES} bytes") from None
    return line


def _object(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except ValueError:
        raise ChannelError("a frame that is not JSON") from None
    if not isinstance(message, dict):
        raise ChannelError("a frame that is not a JSON object")
    return message


def _nonce(message: dict[str, Any], key: str) -> bytes:
    try:
        value = bytes.fromhex(message[key])
    except (KeyError, TypeError, ValueError):
        raise ChannelError(f"handshake without a valid '{key}'") from None
    if len(value) != NONCE_SIZE:
        raise ChannelError(f"handshake '{key}' of the wrong size")
    return value


async def _handshake_line(reader: asyncio.StreamReader) -> dict[str, Any]:
    return _object((await _read_line(reader)).rstrip(b"\n"))


async def client_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                           secret: bytes) -> Channel:
    """The standby's side: prove the primary first holds the secret, then prove we do."""
    async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
        client_nonce = secrets.token_bytes(NONCE_SIZE)
        writer.write(json.dumps({"hello": PROTOCOL, "nonce": client_nonce.hex()}).encode() + b"\n")
        await writer.drain()
        answer = await _handshake_line(reader)
        if "refused" in answer:
            raise ChannelError(f"the peer refused: {str(answer['refused'])[:80]}")
        server_nonce = _nonce(answer, "nonce")
        proof = _mac(secret, b"server", client_nonce, server_nonce).hex()
        if not hmac.compare_digest(proof, str(answer.get("proof", ""))):
            raise ChannelError("the peer could not prove it holds the replication secret")
        writer.write(json.dumps({"proof": _mac(secret, b"client", client_nonce, server_nonce).hex()}).encode()
                     + b"\n")
        await writer.drain()
    key = _mac(secret, b"session", client_nonce, server_nonce)
    return Channel(reader, writer, key=key, outgoing=b"c>s", incoming=b"s>c")


async def server_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                           secret: bytes) -> Channel:
    """The primary's side: answer the standby's challenge, then require its proof."""
    async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
        hello = await _handshake_line(reader)
        if hello.get("hello") != PROTOCOL:
            raise ChannelError(f"not a {PROTOCOL} client")
        client_nonce = _nonce(hello, "nonce")
        server_nonce = secrets.token_bytes(NONCE_SIZE)
        writer.write(json.dumps({"nonce": server_nonce.hex(),
                                 "proof": _mac(secret, b"server", client_nonce, server_nonce).hex()}).encode()
                     + b"\n")
        await writer.drain()
        answer = await _handshake_line(reader)
        proof = _mac(secret, b"client", client_nonce, server_nonce).hex()
        if not hmac.compare_digest(proof, str(answer.get("proof", ""))):
            raise ChannelError("the peer could not prove it holds the replication secret")
    key = _mac(secret, b"session", client_nonce, server_nonce)
    return Channel(reader, writer, key=key, outgoing=b"s>c", incoming=b"c>s")
