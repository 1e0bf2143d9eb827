"""The replication channel over real TCP: a changed, replayed or reflected frame is refused; the secret is private."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.standby.channel import (
    HANDSHAKE_LINE_BYTES,
    Channel,
    ChannelError,
    SecretFileError,
    client_handshake,
    create_secret,
    load_secret,
    server_handshake,
)

SECRET = bytes(range(32))


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Channel, Channel, asyncio.StreamWriter]]:
    """(standby's channel, primary's channel, the standby's raw writer to forge frames with)."""
    accepted: asyncio.Future[Channel] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(await server_handshake(reader, writer, secret=SECRET))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    standby = await client_handshake(reader, writer, secret=SECRET)
    primary = await accepted
    yield standby, primary, writer
    await standby.close()
    await primary.close()
    server.close()
    await server.wait_closed()


async def test_frames_pass_each_way(pair: tuple[Channel, Channel, asyncio.StreamWriter]) -> None:
    standby, primary, _ = pair
    await standby.send({"type": "applied", "sequence": 1})
    await primary.send({"type": "snapshot", "rows": []})
    assert await primary.receive() == {"type": "applied", "sequence": 1}
    assert await standby.receive() == {"type": "snapshot", "rows": []}


async def test_a_changed_frame_is_refused(pair: tuple[Channel, Channel, asyncio.StreamWriter]) -> None:
    _, primary, writer = pair
    body = b'{"type":"applied","sequence":99}'
    writer.write(len(body).to_bytes(4, "big") + body + bytes(32))  # without the key: no valid MAC
    with pytest.raises(ChannelError, match="MAC"):
        await primary.receive()


async def test_a_replayed_frame_is_refused(pair: tuple[Channel, Channel, asyncio.StreamWriter]) -> None:
    standby, primary, writer = pair
    captured: list[bytes] = []
    original = writer.write
    writer.write = lambda data: (captured.append(data), original(data))[1]  # type: ignore[method-assign]
    await standby.send({"type": "applied", "sequence": 1})
    assert await primary.receive() == {"type": "applied", "sequence": 1}
    original(captured[0])  # the same bytes again: the counter inside the MAC has moved on
    with pytest.raises(ChannelError, match="replayed"):
        await primary.receive()


async def test_a_frame_from_the_other_direction_is_refused(
        pair: tuple[Channel, Channel, asyncio.StreamWriter]) -> None:
    _, primary, writer = pair
    captured: list[bytes] = []
    primary_writer = primary._writer
    original = primary_writer.write
    primary_writer.write = lambda data: (captured.append(data), original(data))[1]  # type: ignore[method-assign]
    await primary.send({"type": "snapshot", "rows": []})
    writer.write(captured[0])  # reflected back to the primary: its direction label does not match
    with pytest.raises(ChannelError):
        await primary.receive()


def test_the_secret_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "replication.toml"
    create_secret(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(load_secret(path)) == 32
    path.chmod(0o644)
    with pytest.raises(SecretFileError, match="chmod 600"):
        load_secret(path)
    path.chmod(0o600)
    path.write_text('replication_secret = "abcd"\n')
    with pytest.raises(SecretFileError) as refused:
        load_secret(path)
    assert "abcd" not in str(refused.value)  # the message names the key, never its value



async def test_a_peer_that_proved_nothing_cannot_make_us_buffer_much() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with pytest.raises(ChannelError, match="handshake line longer"):
            await server_handshake(reader, writer, secret=SECRET)
        refused.set()
        writer.close()

    refused = asyncio.Event()
    server = await asyncio.start_server(serve, "127.0.0.1", 0, limit=HANDSHAKE_LINE_BYTES)
    _, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    writer.write(b"{" + b" " * (HANDSHAKE_LINE_BYTES * 4))  # no newline, ever
    async with asyncio.timeout(5.0):
        await refused.wait()
    writer.close()
    server.close()
    await server.wait_closed()
