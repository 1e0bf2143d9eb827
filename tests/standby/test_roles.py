"""Two daemons as real processes on one simulated serial bus: health, roles, replication, hand-over by command."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.standby.channel import create_secret
from tests.integration.daemon_proc import (
    DaemonProcess,
    SimulatorProcess,
    free_tcp_port,
    gateway_command,
    run_cli,
    wait_until,
)

REPLICATION_TIMEOUT_S = 10.0
HANDOVER_WAIT_S = 3.0  # long enough for the test to demote the primary while a promotion waits


def standby_table(*, role: str, peer_port: int, port: int, secret: Path) -> str:
    return f"""
[standby]
role = "{role}"
peer = "127.0.0.1"
peer_port = {peer_port}
listen = "127.0.0.1"
port = {port}
secret_file = "{secret}"
reconnect_s = 0.2
handover_wait_s = {HANDOVER_WAIT_S}
"""


def answer(daemon: DaemonProcess, *args: str) -> Any:
    done = run_cli(*args, "--json", socket_path=daemon.socket_path)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def last_event(daemon: DaemonProcess, event: str) -> str:
    """ISO time of the daemon's last log line with this event (JSON logs: the times sort as text)."""
    times = [json.loads(line)["timestamp"] for line in daemon.log_text().splitlines() if f'"{event}"' in line]
    assert times, f"no {event} in the log"
    return str(times[-1])


def role_of(daemon: DaemonProcess) -> dict[str, Any]:
    status: dict[str, Any] = answer(daemon, "status")["standby"]
    return status


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[SimulatorProcess]:
    with SimulatorProcess(tmp_path, meters=2) as simulator:
        simulator.start()
        yield simulator


def test_health_is_quiet_and_says_which_check_failed(tmp_path: Path, bus: SimulatorProcess) -> None:
    with DaemonProcess(tmp_path / "lone", device=bus.device, meters=[(17, 17)]) as daemon:
        daemon.start()
        healthy = run_cli("health", socket_path=daemon.socket_path)
        assert (healthy.returncode, healthy.stdout, healthy.stderr) == (0, "", "")  # keepalived wants quiet
        verbose = run_cli("health", "--verbose", socket_path=daemon.socket_path)
        assert verbose.stdout.startswith("healthy (primary)")
        checks = answer(daemon, "health")
        assert checks["healthy"] and checks["checks"] == {"control": True, "wan": True, "registry": True,
                                                          "line:bus0": True}
        refused = run_cli("role", "promote", socket_path=daemon.socket_path)
        assert refused.returncode == 1 and "no [standby] table" in refused.stderr
        daemon.kill()
        gone = run_cli("health", "--verbose", socket_path=daemon.socket_path)
        assert gone.returncode == 3 and "not running" in gone.stderr


def test_a_standby_copies_the_registry_never_opens_the_bus_and_takes_over_on_promote(
        tmp_path: Path, bus: SimulatorProcess) -> None:
    secret = tmp_path / "replication.toml"
    create_secret(secret)
    port_a, port_b = free_tcp_port(), free_tcp_port()
    primary = DaemonProcess(tmp_path / "a", device=bus.device, meters=[(17, 17)],
                            extra=standby_table(role="primary", peer_port=port_b, port=port_a, secret=secret))
    standby = DaemonProcess(tmp_path / "b", device=bus.device, meters=[(30, 18)],  # a seed the standby ignores
                            extra=standby_table(role="standby", peer_port=port_a, port=port_b, secret=secret))
    with primary, standby:
        primary.start()
        standby.start()
        assert role_of(primary)["role"] == "primary" and role_of(standby)["role"] == "standby"
        wait_until(lambda: role_of(standby)["replication"]["sequence"] is not None,
                   timeout=REPLICATION_TIMEOUT_S, what="the first snapshot on the standby")
        assert [m["sap"] for m in answer(standby, "meters")] == [17]

        added = answer(primary, "meters", "add", "--link", "bus0", "--address", "18")
        wait_until(lambda: [m["sap"] for m in answer(standby, "meters")] == [17, added["sap"]],
                   timeout=REPLICATION_TIMEOUT_S, what="the new meter on the standby")
        replication = role_of(standby)["replication"]
        assert replication["connected"] and replication["change_age_s"] is not None
        refused = run_cli("meters", "add", "--link", "bus0", "--address", "19", socket_path=standby.socket_path)
        assert refused.returncode == 1 and "standby" in refused.stderr
        links = answer(standby, "status")["links"]
        assert [(line["open"], line["frames_sent"]) for line in links] == [(False, 0)]  # one master on RS-485
        assert answer(standby, "health")["healthy"]

        # an operator promoting the standby while the primary lives and holds the bus: refused
        refused = run_cli("role", "promote", socket_path=standby.socket_path)
        assert refused.returncode == 1 and "still primary" in refused.stderr
        assert role_of(standby)["role"] == "standby"
        assert [line["open"] for line in answer(standby, "status")["links"]] == [False]

        # keepalived's hooks run on both at once: the promotion waits until the old primary let go of the bus
        waits = standby.log_text().count("replication.waiting_for_peer_release")
        promoting = subprocess.Popen([*gateway_command(), "role", "promote", "--json", "--socket",
                                      str(standby.socket_path)], stdout=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: standby.log_text().count("replication.waiting_for_peer_release") > waits,
                       timeout=REPLICATION_TIMEOUT_S, what="the promotion waiting for the primary")
            assert [line["open"] for line in answer(standby, "status")["links"]] == [False]
            assert answer(primary, "role", "demote")["role"] == "standby"
            promoted = json.loads(promoting.communicate(timeout=30)[0])
        finally:
            promoting.kill()
            promoting.wait()
        assert promoted["changed"] and promoted["role"] == "primary"
        assert [line["open"] for line in answer(primary, "status")["links"]] == [False]
        assert last_event(primary, "line.released") <= last_event(standby, "line.open")  # never both on the bus
        assert standby.log_text().count("standby.peer_still_primary") == 1  # the operator's refused attempt only
        assert answer(standby, "ping", "17")["sap"] == 17  # it reads the meter on the bus at the same SAP
        moved = answer(standby, "meters", "add", "--link", "bus0", "--address", "19")
        wait_until(lambda: moved["sap"] in [m["sap"] for m in answer(primary, "meters")],
                   timeout=REPLICATION_TIMEOUT_S, what="the old primary following the new one")

        text = run_cli("status", socket_path=primary.socket_path).stdout
        assert "Role: standby; peer 127.0.0.1:" in text and "Replication: connected; applied change" in text
        assert primary.terminate()[0] == 0  # a standby shuts down cleanly too
        primary.start()  # it comes back standby: the peer holds the bus now
        assert role_of(primary)["role"] == "standby"


def test_health_fails_once_a_line_stays_down(tmp_path: Path) -> None:
    """A gateway whose serial adapter is gone: healthy while it keeps trying, then not (the peer takes over)."""
    with DaemonProcess(tmp_path / "lone", device=str(tmp_path / "no-such-tty"),
                       extra="\n[standby]\nunhealthy_line_down_s = 0.5\n") as daemon:
        daemon.start()
        wait_until(lambda: run_cli("health", socket_path=daemon.socket_path).returncode == 1, timeout=10.0,
                   what="health failing on a line down for 0.5 s")
        verbose = run_cli("health", "--verbose", socket_path=daemon.socket_path)
        assert verbose.stdout.strip() == "UNHEALTHY (primary): failed line:bus0"


def test_only_the_primary_dials_out_to_the_hes(tmp_path: Path, bus: SimulatorProcess) -> None:
    """A HES reached by dial-out: the standby stays silent; once promoted, it dials."""
    secret = tmp_path / "replication.toml"
    create_secret(secret)
    with socket.create_server(("127.0.0.1", 0)) as hes:
        hes.settimeout(REPLICATION_TIMEOUT_S)
        dial_out = f'\n[[dial_out]]\nhost = "127.0.0.1"\nport = {hes.getsockname()[1]}\n'
        # its primary is nowhere: this gateway stays standby until promoted
        extra = standby_table(role="standby", peer_port=free_tcp_port(), port=free_tcp_port(), secret=secret)
        with DaemonProcess(tmp_path / "b", device=bus.device, extra=extra + dial_out) as standby:
            standby.start()
            assert answer(standby, "status")["wan"]["dial_out"][0]["dials"] == 0
            assert answer(standby, "role", "promote")["role"] == "primary"
            connection, _ = hes.accept()  # the promoted gateway dials the HES
            connection.close()


def test_a_pair_without_its_secret_does_not_start(tmp_path: Path) -> None:
    secret = tmp_path / "replication.toml"
    create_secret(secret)
    secret.chmod(0o644)  # readable by others: refused, as ssh refuses such a private key
    daemon = DaemonProcess(tmp_path / "a", device=str(tmp_path / "no-tty"),
                           extra=standby_table(role="primary", peer_port=free_tcp_port(), port=free_tcp_port(),
                                               secret=secret))
    done = run_cli("run", "--config", str(daemon.config_file), timeout=30.0)
    assert done.returncode == 1
    assert "no replication secret" in done.stderr and "chmod 600" in done.stderr
    assert "Traceback" not in done.stderr
