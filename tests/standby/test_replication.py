"""Registry replication between two real registries over real TCP: catch-up, refusals, authentication."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.registry.database import open_database
from gateway.registry.store import MeterRegistry, MeterState, RegistryError
from gateway.standby.channel import ChannelError, client_handshake, create_secret, load_secret, server_handshake
from gateway.standby.replication import HEARTBEAT_S, ReplicationClient, ReplicationServer

APPLY_TIMEOUT_S = 10.0


@pytest.fixture
def secret(tmp_path: Path) -> bytes:
    create_secret(tmp_path / "replication.toml")
    return load_secret(tmp_path / "replication.toml")


def _registry(path: Path, *, replica: bool) -> MeterRegistry:
    registry = MeterRegistry(open_database(path))
    registry.replica = replica
    return registry


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[MeterRegistry]:
    registry = _registry(tmp_path / "primary.db", replica=False)
    yield registry
    registry._db.close()


@pytest.fixture
def standby(tmp_path: Path) -> Iterator[MeterRegistry]:
    registry = _registry(tmp_path / "standby.db", replica=True)
    yield registry
    registry._db.close()


@contextlib.asynccontextmanager
async def serving(registry: MeterRegistry, secret: bytes) -> AsyncIterator[ReplicationServer]:
    server = ReplicationServer(registry=registry, secret=secret, host="127.0.0.1", port=0)
    server.serving = True
    registry.on_change = server.changed
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def following(registry: MeterRegistry, secret: bytes,
                    server: ReplicationServer) -> AsyncIterator[ReplicationClient]:
    host, port = server.address
    client = ReplicationClient(registry=registry, secret=secret, host=host, port=port, reconnect_s=0.05)
    task = asyncio.create_task(client.run())
    try:
        yield client
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_for(event: asyncio.Event) -> None:
    async with asyncio.timeout(APPLY_TIMEOUT_S):
        await event.wait()
    event.clear()


async def next_apply(client: ReplicationClient) -> None:
    await wait_for(client.applied)


def places(registry: MeterRegistry) -> list[tuple[int, str, int, int, bytes | None, str]]:
    return [(m.sap, m.link, m.physical_address, m.logical_device, m.logical_device_name, m.state.value)
            for m in registry.rows()]


async def test_every_change_reaches_the_standby_within_seconds(
        primary: MeterRegistry, standby: MeterRegistry, secret: bytes) -> None:
    primary.register(link="bus0", physical_address=17, sap=17)
    async with serving(primary, secret) as server, following(standby, secret, server) as client:
        await next_apply(client)  # the snapshot every connection starts with
        assert places(standby) == places(primary)
        delays = []
        for change in (lambda: primary.register(link="bus0", physical_address=18, sap=40),
                       lambda: primary.set_identity(40, name=b"LGZ0000018", system_title=b"LGZ\x00\x00\x00\x00\x12"),
                       lambda: primary.change_sap(40, 41),
                       lambda: primary.remove(17)):
            started = time.monotonic()
            change()
            await next_apply(client)
            delays.append(time.monotonic() - started)
            assert places(standby) == places(primary)
        assert client.state.sequence == primary.changes
        while server.status()[0]["acknowledged"] != primary.changes:  # the standby says so
            await wait_for(server.acknowledged)
    moved = standby.get(41)
    assert moved is not None and moved.system_title == b"LGZ\x00\x00\x00\x00\x12"  # the identity came along
    quarantined = {m.sap for m in standby.meters(state=MeterState.REMOVED)}
    assert quarantined == {17, 40}  # removed and renumbered SAPs stay in quarantine on the standby too
    print(f"\nchange -> applied on the standby: {', '.join(f'{d * 1e3:.1f} ms' for d in delays)}")


async def test_a_standby_back_from_an_outage_catches_up(
        primary: MeterRegistry, standby: MeterRegistry, secret: bytes) -> None:
    primary.register(link="bus0", physical_address=17)
    async with serving(primary, secret) as server:
        async with following(standby, secret, server) as client:
            await next_apply(client)
        # the standby is down: the primary registers and removes meters meanwhile
        primary.register(link="bus0", physical_address=18)
        primary.register(link="bus0", physical_address=19)
        primary.remove(17)
        async with following(standby, secret, server) as client:
            await next_apply(client)
    assert places(standby) == places(primary)
    assert standby.by_place(link="bus0", physical_address=19) is not None


async def test_a_standby_follows_a_primary_that_restarted(
        primary: MeterRegistry, standby: MeterRegistry, secret: bytes) -> None:
    async with serving(primary, secret) as server:
        port = server.address[1]
        host = "127.0.0.1"
        client = ReplicationClient(registry=standby, secret=secret, host=host, port=port, reconnect_s=0.05)
        task = asyncio.create_task(client.run())
        try:
            await next_apply(client)
            first_origin = client.state.origin
            await server.stop()  # the primary goes away; it registers a meter before its listener is back
            primary.register(link="bus0", physical_address=21)
            restarted = ReplicationServer(registry=primary, secret=secret, host=host, port=port)
            restarted.serving = True
            await restarted.start()
            try:
                await next_apply(client)
            finally:
                await restarted.stop()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert client.state.origin != first_origin
    assert places(standby) == places(primary)


async def test_a_standby_refuses_changes_of_its_own(standby: MeterRegistry) -> None:
    with pytest.raises(RegistryError, match="standby"):
        standby.register(link="bus0", physical_address=17)
    assert standby.rows() == []


async def test_a_primary_does_not_take_its_peers_registry(
        primary: MeterRegistry, tmp_path: Path, secret: bytes) -> None:
    other = _registry(tmp_path / "other.db", replica=False)  # two primaries: a split brain
    other.register(link="bus0", physical_address=30, sap=30)
    primary.register(link="bus0", physical_address=17, sap=17)
    try:
        async with serving(primary, secret) as server, following(other, secret, server) as client:
            await wait_for(client.failed)
        assert "primary" in (client.state.last_error or "")
        assert [m.sap for m in other.meters()] == [30]
    finally:
        other._db.close()


async def test_a_standby_does_not_serve(standby: MeterRegistry, tmp_path: Path, secret: bytes) -> None:
    follower = _registry(tmp_path / "follower.db", replica=True)
    try:
        async with serving(standby, secret) as server:
            server.serving = False  # a standby's listener answers, and refuses
            async with following(follower, secret, server) as client:
                await wait_for(client.failed)
        assert "not primary" in (client.state.last_error or "")
    finally:
        follower._db.close()


async def test_a_peer_without_the_secret_is_refused_both_ways(
        primary: MeterRegistry, standby: MeterRegistry, secret: bytes, tmp_path: Path) -> None:
    create_secret(tmp_path / "other.toml")
    wrong = load_secret(tmp_path / "other.toml")
    primary.register(link="bus0", physical_address=17)
    async with serving(primary, secret) as server, following(standby, wrong, server) as client:
        await wait_for(client.failed)
    assert "secret" in (client.state.last_error or "")  # the standby saw the primary could not prove it
    assert standby.rows() == []
    async with serving(primary, wrong) as server:  # a standby that cannot prove it gets nothing
        reader, writer = await asyncio.open_connection(*server.address)
        with pytest.raises(ChannelError, match="secret"):
            await client_handshake(reader, writer, secret=secret)
        writer.close()
        await wait_for(server.refusal)
        assert not server.followers



async def test_a_primary_that_goes_silent_counts_as_gone(standby: MeterRegistry, secret: bytes) -> None:
    """A host that lost power sends no RST: the standby notices the missing heartbeats."""
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server_handshake(reader, writer, secret=secret)
        await reader.read()  # then silence, until the standby hangs up
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    client = ReplicationClient(registry=standby, secret=secret, host=host, port=port, reconnect_s=5.0,
                               silence_s=0.3)
    task = asyncio.create_task(client.run())
    try:
        await wait_for(client.failed)
        assert "said nothing" in (client.state.last_error or "")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.close()
        await server.wait_closed()


async def test_heartbeats_keep_a_quiet_primary_followed(
        primary: MeterRegistry, standby: MeterRegistry, secret: bytes) -> None:
    async with serving(primary, secret) as server:
        host, port = server.address
        client = ReplicationClient(registry=standby, secret=secret, host=host, port=port, reconnect_s=0.05,
                                   silence_s=HEARTBEAT_S * 2.5)
        task = asyncio.create_task(client.run())
        try:
            await next_apply(client)
            with pytest.raises(TimeoutError):  # no change for several heartbeats: still following
                async with asyncio.timeout(HEARTBEAT_S * 4):
                    await client.failed.wait()
            assert client.state.connected
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
