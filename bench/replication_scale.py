"""Replication scale: how long a standby needs to hold the primary's registry, by registry size. Prints a table.

Two real registries (SQLite files) and the replication channel over TCP on loopback, in one process:
the first snapshot after the standby connects (the catch-up), and one change afterwards (a change
right after a snapshot waits out the primary's pause: 0.2 s, or ten times the encoding time).

    python -m bench.replication_scale [--meters 100,1000,10000]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

from gateway.log import configure
from gateway.registry.database import open_database
from gateway.registry.store import MeterRegistry
from gateway.standby.channel import create_secret, load_secret
from gateway.standby.replication import ReplicationClient, ReplicationServer


def _fill(database: sqlite3.Connection, meters: int) -> None:
    """Rows written directly (one transaction): the registry's own registration is not what is measured."""
    database.execute("BEGIN")
    database.executemany("INSERT INTO meters (sap, link, physical_address, logical_device, registered_by)"
                         " VALUES (?, 'bus0', ?, 1, 'provisioning')", [(17 + i, 16 + i) for i in range(meters)])
    database.execute("COMMIT")


async def measure(meters: int, directory: Path) -> tuple[float, float]:
    create_secret(directory / "secret.toml")
    secret = load_secret(directory / "secret.toml")
    primary_db = open_database(directory / "primary.db")
    _fill(primary_db, meters)
    primary = MeterRegistry(primary_db)
    standby = MeterRegistry(open_database(directory / "standby.db"))
    standby.replica = True
    server = ReplicationServer(registry=primary, secret=secret, host="127.0.0.1", port=0)
    server.serving = True
    primary.on_change = server.changed
    await server.start()
    client = ReplicationClient(registry=standby, secret=secret, host="127.0.0.1", port=server.address[1],
                               reconnect_s=0.1)
    started = time.perf_counter()
    task = asyncio.create_task(client.run())
    try:
        await client.applied.wait()
        client.applied.clear()
        catch_up = time.perf_counter() - started
        started = time.perf_counter()
        primary.register(link="bus0", physical_address=16_000)
        await client.applied.wait()
        change = time.perf_counter() - started
        assert len(standby) == meters + 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()
        primary_db.close()
    return catch_up, change


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", default="100,1000,10000")
    args = parser.parse_args()
    configure(level="warning", fmt="console")
    print("| meters | catch-up (first snapshot) | one change after a snapshot |")
    print("|---:|---:|---:|")
    for meters in (int(n) for n in args.meters.split(",")):
        with tempfile.TemporaryDirectory() as directory:
            catch_up, change = asyncio.run(measure(meters, Path(directory)))
        print(f"| {meters:,} | {catch_up * 1e3:.0f} ms | {change * 1e3:.0f} ms |")


if __name__ == "__main__":
    main()
