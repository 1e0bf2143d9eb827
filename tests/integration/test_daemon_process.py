"""The daemon as a real process: SIGKILL during registrations, restart, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.cli.client import call
from gateway.sim.bus import SimMeter, SimulatedBus
from gateway.sim.meter import build_meter
from gateway.sim.pty import open_pty
from tests.integration.conftest import fixed_clock, meter_settings
from tests.integration.daemon_proc import DaemonProcess, SimulatorProcess, run_cli, wait_until, write_config
from tests.integration.rawhes import GET_LDN, PUBLIC_AARQ, RawHes

SHUTDOWN_LIMIT_S = 5.0  # issue 4: SIGTERM shuts down cleanly within 5 s


def integrity(database: Path) -> str:
    with contextlib.closing(sqlite3.connect(database)) as connection:
        (result,) = connection.execute("PRAGMA integrity_check").fetchone()
        return str(result)


def live_rows(database: Path) -> set[tuple[int, int]]:
    """(SAP, physical address) of every meter that is not removed, straight from the file."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return set(connection.execute("SELECT sap, physical_address FROM meters WHERE state != 'removed'"))


# -- SIGKILL during a burst of registrations --------------------------------------------------


@dataclass
class Burst:
    """Registers meters one after another through the control socket until the daemon dies."""

    socket_path: Path
    first_address: int
    acknowledged: list[tuple[int, int]] = field(default_factory=list)  # (SAP, address) the daemon confirmed
    ended_by: str = ""
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="burst", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        address = self.first_address
        while True:
            try:
                result = call(self.socket_path, "meters.add", link="bus0", address=address, sap=None, timeout_s=10)
            except Exception as exc:  # the kill: connection reset, closed without an answer, not running
                self.ended_by = type(exc).__name__
                return
            assert result["address"] == address
            self.acknowledged.append((result["sap"], address))
            address += 1

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(20)
        assert not self.thread.is_alive()


@pytest.fixture
def daemon_with_a_line(tmp_path: Path) -> Iterator[DaemonProcess]:
    # Identity reads are off: the burst registers addresses where nobody answers.
    with SimulatorProcess(tmp_path, meters=1) as simulator:
        simulator.start()
        with DaemonProcess(tmp_path, device=simulator.device, identify=False) as daemon:
            yield daemon


def test_sigkill_during_a_burst_of_registrations_loses_no_acknowledged_one(
    daemon_with_a_line: DaemonProcess,
) -> None:
    daemon = daemon_with_a_line
    acknowledged: set[tuple[int, int]] = set()
    # Kill after a different number of acknowledgements each round; the burst never pauses, so
    # the kill lands at an arbitrary point of a registration (request, transaction, fsync, answer).
    for round_number, kill_after in enumerate((1, 17, 60, 150)):
        daemon.start()
        if acknowledged:  # the previous round's registrations all came back, with their SAPs
            assert {(m["sap"], m["address"]) for m in call(daemon.socket_path, "meters")} >= acknowledged
        burst = Burst(daemon.socket_path, first_address=16 + 1000 * round_number)
        burst.start()
        wait_until(lambda b=burst, k=kill_after: len(b.acknowledged) >= k, timeout=30,
                   what=f"{kill_after} registrations")
        daemon.kill()
        burst.join()
        assert burst.ended_by, "the burst must have been cut by the kill"
        assert len(set(burst.acknowledged)) == len(burst.acknowledged)
        acknowledged |= set(burst.acknowledged)

        assert integrity(daemon.database) == "ok"
        on_disk = live_rows(daemon.database)
        assert acknowledged <= on_disk
        # at most the one registration in flight at the kill made it without its acknowledgement
        assert len(on_disk - acknowledged) <= round_number + 1

    daemon.start()
    assert {(m["sap"], m["address"]) for m in call(daemon.socket_path, "meters")} >= acknowledged
    status, elapsed = daemon.terminate()
    assert status == 0 and elapsed < SHUTDOWN_LIMIT_S
    assert integrity(daemon.database) == "ok"


def test_sigterm_stops_a_daemon_whose_modem_is_missing(tmp_path: Path) -> None:
    """A modem unplugged (or not there yet) must not keep the service from stopping."""
    with DaemonProcess(tmp_path, device=str(tmp_path / "ttyUSB-unplugged"), meters=[(17, 17)]) as daemon:
        daemon.start()
        assert call(daemon.socket_path, "status")["links"][0]["open"] is False
        status, elapsed = daemon.terminate(timeout=SHUTDOWN_LIMIT_S + 1)
        assert status == 0 and elapsed < SHUTDOWN_LIMIT_S
        assert '"event": "gateway.stopped"' in daemon.log_text()


def test_a_wan_port_already_taken_stops_the_daemon_with_one_line_naming_it(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "gateway.toml", port=port, device=str(tmp_path / "ttyUSB-absent"),
                              state_directory=tmp_path / "state", runtime_directory=tmp_path / "run")
        result = run_cli("run", "--config", str(config))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"dlms-gateway: cannot listen on 127.0.0.1:{port}: ")


# -- restart keeps every SAP ------------------------------------------------------------------


def test_restart_keeps_every_sap_and_the_quarantine(tmp_path: Path) -> None:
    with SimulatorProcess(tmp_path, meters=4) as simulator:
        simulator.start()
        with DaemonProcess(tmp_path, device=simulator.device, meters=[(17, 17)]) as daemon:
            restart_keeps_every_sap(daemon)


def restart_keeps_every_sap(daemon: DaemonProcess) -> None:
    daemon.start()
    assert run_cli("meters", "add", "--link", "bus0", "--address", "18", "--sap", "250",
                   socket_path=daemon.socket_path).returncode == 0
    assert run_cli("meters", "add", "--link", "bus0", "--address", "40", "--sap", "260",
                   socket_path=daemon.socket_path).returncode == 0
    scanned = run_cli("meters", "scan", "--link", "bus0", "--range", "19-20", socket_path=daemon.socket_path)
    assert scanned.returncode == 0, scanned.stderr
    assert run_cli("meters", "remove", "260", socket_path=daemon.socket_path).returncode == 0
    wait_until(lambda: all(m["name"] for m in call(daemon.socket_path, "meters")), timeout=15,
               what="every meter to be identified")

    def snapshot() -> set[tuple[int, str, int, str]]:
        return {(m["sap"], m["name"], m["address"], m["registered_by"])
                for m in call(daemon.socket_path, "meters")}

    before = snapshot()
    assert {sap for sap, *_ in before} == {17, 250, 18, 19}  # the scan gave 19 and 20 the next free SAPs
    status, elapsed = daemon.terminate()
    assert status == 0 and elapsed < SHUTDOWN_LIMIT_S

    daemon.start()
    assert snapshot() == before
    assert [m["sap"] for m in call(daemon.socket_path, "meters", state="removed")] == [260]
    refused = run_cli("meters", "add", "--link", "bus0", "--address", "41", "--sap", "260",
                      socket_path=daemon.socket_path)
    assert refused.returncode == 1 and "quarantine" in refused.stderr
    status, _ = daemon.terminate()
    assert status == 0


# -- SIGTERM: DISC on every open data link, registry flushed ----------------------------------


class ReleaseLog:
    """A simulated meter's logical device that also notes each client whose data link was closed."""

    def __init__(self, device: SimMeter) -> None:
        self.inner = device.device
        self.released: list[int] = []

    def handle(self, *, client_sap: int, apdu: bytes) -> bytes | None:
        return self.inner.handle(client_sap=client_sap, apdu=apdu)

    def release(self, *, client_sap: int) -> None:  # the HDLC server saw DISC from this client
        self.released.append(client_sap)
        self.inner.release(client_sap=client_sap)


def last_seen(database: Path, sap: int) -> float | None:
    with contextlib.closing(sqlite3.connect(database)) as connection:
        (value,) = connection.execute("SELECT last_seen FROM meters WHERE sap = ? AND state != 'removed'",
                                      (sap,)).fetchone()
        return None if value is None else float(value)


async def test_sigterm_sends_disc_to_open_data_links_flushes_and_exits_0_within_5_s(tmp_path: Path) -> None:
    pty = open_pty()
    meters = [SimMeter(physical_address=address, device=build_meter(meter_settings(address - 16), clock=fixed_clock))
              for address in (17, 18)]
    watched = {m.physical_address: ReleaseLog(m) for m in meters}
    bus = SimulatedBus(meters=[SimMeter(physical_address=a, device=log) for a, log in watched.items()])
    bus.attach(pty.master_fd)  # in this event loop; the daemon is another process
    # flush_interval_s is long: only the shutdown can write last_seen
    daemon = DaemonProcess(tmp_path, device=pty.slave_path, meters=[(17, 17), (18, 18)], identify=False,
                           flush_interval_s=3600.0)
    try:
        await asyncio.to_thread(daemon.start)
        before_association = time.time()
        hes = await RawHes.connect("127.0.0.1", daemon.port)
        aare = await hes.request(client_sap=16, meter_sap=17, apdu=PUBLIC_AARQ)
        assert aare.apdu[0] == 0x61
        answer = await hes.request(client_sap=16, meter_sap=17, apdu=GET_LDN)
        assert answer.apdu[:3] == bytes.fromhex("C401C1") and b"SIM0000000000001" in answer.apdu
        assert last_seen(daemon.database, 17) is None  # seen in memory only, so far
        assert watched[17].released == []

        status, elapsed = await asyncio.to_thread(daemon.terminate)

        assert status == 0 and elapsed < SHUTDOWN_LIMIT_S
        assert watched[17].released == [16]  # the public client's data link was DISConnected
        assert watched[18].released == []  # no data link there, nothing to close
        assert await hes.closed_by_peer()
        seen = last_seen(daemon.database, 17)
        assert seen is not None and before_association - 1 <= seen <= time.time()
        assert last_seen(daemon.database, 18) is None
        assert integrity(daemon.database) == "ok"
        await hes.close()
    finally:
        daemon.stop()
        bus.detach()
        pty.close()
