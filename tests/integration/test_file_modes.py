"""Started by hand under umask 022, the daemon still keeps its directories and databases private."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.cli.client import call
from gateway.poller.store import ReadingsStore
from tests.integration.daemon_proc import DaemonProcess, SimulatorProcess


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_directories_and_databases_are_private_under_umask_022(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    leftover = sqlite3.connect(state / "pushes.db")  # from an earlier start by hand: world-readable
    leftover.execute("CREATE TABLE t (x)")
    leftover.close()
    os.chmod(state / "pushes.db", 0o644)
    with SimulatorProcess(tmp_path, meters=2) as simulator, umask(0o022):
        simulator.start()
        with DaemonProcess(tmp_path, device=simulator.device, meters=[(17, 17)]) as daemon:
            daemon.start()
            call(daemon.socket_path, "meters.add", link="bus0", address=18)  # a write: the -wal files exist
            files = sorted(daemon.state_directory.iterdir())
            names = {path.name for path in files}
            assert {"registry.db", "registry.db-wal", "registry.db-shm", "pushes.db", "pushes.db-wal"} <= names
            assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}
            assert mode(daemon.state_directory) == 0o750
            assert mode(daemon.runtime_directory) & 0o027 == 0


def test_the_readings_store_is_private_under_umask_022(tmp_path: Path) -> None:
    with umask(0o022):
        store = ReadingsStore(tmp_path / "readings.db")
        try:
            files = sorted(tmp_path.iterdir())
            assert {path.name for path in files} >= {"readings.db", "readings.db-wal", "readings.db-shm"}
            assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}
        finally:
            store.close()
