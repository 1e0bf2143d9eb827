"""The technician's `dlms-gateway` commands against a real daemon and a real simulator, both subprocesses.

One daemon serves the whole module. Simulated meters answer at physical addresses 17..21;
each test works on its own addresses so the order of the tests does not matter:
17, 18 seeded (SAPs 17, 18) · 19 add/remove · 20-21 scan · 40 nobody answers.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gurux_dlms.objects import GXDLMSData

from gateway.cli.client import call
from tests.hes import GuruxHes, HesCredentials, TcpChannel
from tests.integration.daemon_proc import DaemonProcess, SimulatorProcess, run_cli, wait_until

SEEDED = {17: "SIM0000000000001", 18: "SIM0000000000002"}
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3
NOBODY = 65534


@dataclass
class Running:
    daemon: DaemonProcess
    simulator: SimulatorProcess

    @property
    def sock(self) -> Path:
        return self.daemon.socket_path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, socket_path=self.sock)

    def json(self, *args: str) -> Any:
        done = self.cli(*args, "--json")
        assert done.returncode == EXIT_OK, done.stderr
        return json.loads(done.stdout)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("cli")
    with SimulatorProcess(directory, meters=5) as simulator:
        simulator.start()
        with DaemonProcess(directory, device=simulator.device, meters=[(sap, sap) for sap in SEEDED]) as daemon:
            daemon.start()

            def seeds_identified() -> bool:
                meters = call(daemon.socket_path, "meters", state="online")
                return {m["sap"] for m in meters} >= set(SEEDED)

            wait_until(seeds_identified, timeout=20, what="the seeded meters to be identified")
            yield Running(daemon, simulator)


def test_status_says_what_the_gateway_is_doing(running: Running) -> None:
    done = running.cli("status")
    assert done.returncode == EXIT_OK, done.stderr
    text = done.stdout
    assert re.search(r"^dlms-gateway \d+\.\d+\.\d+, up \d+ s$", text, re.M)
    assert f"listening on 127.0.0.1:{running.daemon.port}" in text
    link_row = next(line for line in text.splitlines() if line.startswith("bus0"))
    assert link_row.split()[1:3] == [running.simulator.device, "True"]
    assert re.search(r"^Meters: \d+ registered, \d+ online, \d+ offline$", text, re.M)

    status = running.json("status")
    assert status["wan"]["listening"] == [f"127.0.0.1:{running.daemon.port}"]
    (link,) = status["links"]
    assert (link["name"], link["device"], link["open"]) == ("bus0", running.simulator.device, True)
    assert link["frames_sent"] > 0 and link["frames_received"] > 0  # the seeds were identified over it
    assert status["meters"]["online"] >= len(SEEDED)
    assert status["uptime_s"] >= 0


def test_meters_lists_every_meter_and_filters_by_state(running: Running) -> None:
    added = running.cli("meters", "add", "--link", "bus0", "--address", "40", "--sap", "400")  # nobody there
    assert added.returncode == EXIT_OK, added.stderr

    table = running.cli("meters").stdout.splitlines()
    assert table[0].split() == ["SAP", "NAME", "LINK", "ADDRESS", "STATE", "BY", "LAST", "SEEN"]
    rows = {int(line.split()[0]): line.split() for line in table[2:]}
    assert rows[17][:5] == ["17", SEEDED[17], "bus0", "17", "online"]
    assert rows[400][:4] == ["400", "bus0", "40", "registered"]  # no name: the identity read fails

    listed = {m["sap"]: m for m in running.json("meters")}
    assert listed[18]["name"] == SEEDED[18] and listed[18]["registered_by"] == "config"
    assert listed[400]["address"] == 40 and listed[400]["registered_by"] == "provisioning"

    online = {m["sap"] for m in running.json("meters", "--state", "online")}
    assert set(SEEDED) <= online and 400 not in online
    registered = {m["sap"] for m in running.json("meters", "list", "--state", "registered")}
    assert 400 in registered and not registered & set(SEEDED)

    bad = running.cli("meters", "--state", "asleep")
    assert bad.returncode == EXIT_USAGE and "invalid choice" in bad.stderr


def test_meter_detail_by_sap_and_by_name_are_the_same_meter(running: Running) -> None:
    by_sap = running.cli("meter", "17")
    assert by_sap.returncode == EXIT_OK, by_sap.stderr
    fields = dict(line.split(None, 1) for line in by_sap.stdout.splitlines() if len(line.split(None, 1)) == 2)
    assert fields["name"] == SEEDED[17] and fields["link"] == "bus0" and fields["address"] == "17"
    assert float(fields["last_rtt_ms"]) > 0  # the identity read timed the meter
    assert by_sap.stdout == running.cli("meter", SEEDED[17]).stdout

    detail = running.json("meter", SEEDED[18])
    assert detail["sap"] == 18 and {"frames", "retries", "crc_errors", "last_rtt_ms"} <= set(detail)

    unknown = running.cli("meter", "9999")
    assert unknown.returncode == EXIT_REFUSED and "no meter '9999'" in unknown.stderr


def test_sessions_shows_an_open_hes_association(running: Running) -> None:
    assert running.json("sessions") == []
    hes = GuruxHes(TcpChannel("127.0.0.1", running.daemon.port), credentials=HesCredentials(client_sap=16),
                   server_sap=18)
    hes.associate()
    try:
        assert bytes(hes.read(GXDLMSData("0.0.42.0.0.255"), 2)).decode() == SEEDED[18]
        local_port = hes.channel.sock.getsockname()[1]  # type: ignore[attr-defined]

        done = running.cli("sessions")
        assert done.returncode == EXIT_OK, done.stderr
        header, _, row, *rest = done.stdout.splitlines()
        assert header.split()[:4] == ["HES", "PEER", "CLIENT", "METER"] and rest == []
        assert row.split()[:4] == [f"127.0.0.1:{local_port}", "16", "18", "bus0"]

        (session,) = running.json("sessions")
        assert (session["client_sap"], session["meter_sap"]) == (16, 18)
        assert session["apdus_to_meter"] >= 2 and session["apdus_to_hes"] >= 2  # AARQ + GET, AARE + answer
    finally:
        hes.release()
        hes.close()
    wait_until(lambda: call(running.sock, "sessions") == [], timeout=10, what="the session to end")


def test_ping_reads_the_name_and_prints_the_round_trip(running: Running) -> None:
    done = running.cli("ping", "17")
    assert done.returncode == EXIT_OK, done.stderr
    match = re.fullmatch(rf"SAP 17 {SEEDED[17]}: GET (\d+\.\d) ms, association \+ GET \+ release (\d+\.\d) ms\n",
                         done.stdout)
    assert match, done.stdout
    assert 0 < float(match.group(1)) <= float(match.group(2))

    by_name = running.json("ping", SEEDED[18])
    assert by_name["sap"] == 18 and by_name["round_trip_ms"] > 0

    running.cli("meters", "add", "--link", "bus0", "--address", "41", "--sap", "401")
    silent = running.cli("ping", "401")
    assert silent.returncode == EXIT_REFUSED and "SAP 401" in silent.stderr


def test_add_then_remove_a_meter_and_its_sap_stays_in_quarantine(running: Running) -> None:
    added = running.cli("meters", "add", "--link", "bus0", "--address", "19", "--sap", "300")
    assert (added.returncode, added.stdout) == (EXIT_OK, "registered: SAP 300 at bus0 address 19\n"), added.stderr
    # the daemon reads the new meter's identity through the public client
    wait_until(lambda: call(running.sock, "meter", meter="300")["name"] == "SIM0000000000003", timeout=10,
               what="SAP 300 to be identified")

    again = running.cli("meters", "add", "--link", "bus0", "--address", "19", "--sap", "301")
    assert again.returncode == EXIT_REFUSED and "already registered with SAP 300" in again.stderr

    removed = running.cli("meters", "remove", "300")
    assert removed.returncode == EXIT_OK, removed.stderr
    assert removed.stdout == "removed SAP 300 (SIM0000000000003); the SAP is in quarantine\n"
    assert 300 not in {m["sap"] for m in running.json("meters")}
    assert 300 in {m["sap"] for m in running.json("meters", "--state", "removed")}

    reuse = running.cli("meters", "add", "--link", "bus0", "--address", "42", "--sap", "300")
    assert reuse.returncode == EXIT_REFUSED and "quarantine" in reuse.stderr


def test_the_daemon_says_no_with_exit_1_and_usage_errors_exit_2(running: Running) -> None:
    unknown = running.cli("meters", "remove", "4242")
    assert (unknown.returncode, unknown.stdout) == (EXIT_REFUSED, "")
    assert "no meter with SAP 4242" in unknown.stderr
    no_link = running.cli("meters", "add", "--link", "bus9", "--address", "50")
    assert no_link.returncode == EXIT_REFUSED and "no link named 'bus9'" in no_link.stderr
    management = running.cli("meters", "add", "--link", "bus0", "--address", "50", "--sap", "1")
    assert management.returncode == EXIT_REFUSED and "1 is the gateway itself" in management.stderr

    missing = running.cli("meters", "add", "--link", "bus0")
    assert missing.returncode == EXIT_USAGE and "--address" in missing.stderr
    bad_range = running.cli("meters", "scan", "--link", "bus0", "--range", "20-x")
    assert bad_range.returncode == EXIT_USAGE and "expected A-B" in bad_range.stderr
    assert 50 not in {m["address"] for m in running.json("meters")}


def test_scan_shows_progress_and_registers_who_answers(running: Running) -> None:
    done = running.cli("meters", "scan", "--link", "bus0", "--range", "20-22")
    assert done.returncode == EXIT_OK, done.stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert progress[-1].startswith("[" + "#" * 30 + "] 3/3 address 22, found 2")
    assert len(progress) == 3  # one line per address (not a terminal: one per tenth, here every one)
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    assert [(r[0], r[2], r[3]) for r in rows] == [("20", "SIM0000000000004", "registered"),
                                                 ("21", "SIM0000000000005", "registered")]
    scanned = {int(r[1]) for r in rows}
    listed = {m["sap"]: m for m in running.json("meters")}
    assert {listed[sap]["address"] for sap in scanned} == {20, 21}
    assert all(listed[sap]["registered_by"] == "discovery" for sap in scanned)


def test_config_check_accepts_a_good_file_and_names_key_and_line_of_a_bad_one(
    running: Running, tmp_path: Path
) -> None:
    good = run_cli("config", "check", str(running.daemon.config_file))
    assert (good.returncode, good.stdout) == (EXIT_OK, f"{running.daemon.config_file}: OK\n")

    text = running.daemon.config_file.read_text()
    lines = text.splitlines()
    at = lines.index("baudrate = 115200") + 1
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(text.replace("baudrate = 115200", "baud_rate = 115200"))
    bad = run_cli("config", "check", str(unknown))
    assert bad.returncode == EXIT_USAGE
    assert f"unknown key 'links[0].baud_rate' (line {at})" in bad.stderr

    wrong_type = tmp_path / "type.toml"
    wrong_type.write_text(text.replace("baudrate = 115200", 'baudrate = "fast"'))
    bad = run_cli("config", "check", str(wrong_type))
    assert bad.returncode == EXIT_USAGE
    assert f"'links[0].baudrate' (line {at}): expected int, got str 'fast'" in bad.stderr

    missing = run_cli("config", "check", str(tmp_path / "absent.toml"))
    assert missing.returncode == EXIT_USAGE and "No such file" in missing.stderr


def test_exit_3_with_a_message_when_the_daemon_is_not_running(tmp_path: Path) -> None:
    nowhere = tmp_path / "control.sock"
    for command in (["status"], ["meters", "--json"], ["meters", "add", "--link", "bus0", "--address", "30"]):
        done = run_cli(*command, socket_path=nowhere)
        assert done.returncode == EXIT_NOT_RUNNING and done.stdout == ""
        assert f"the daemon is not running (no answer on {nowhere}" in done.stderr

    # a socket file left behind by a killed daemon: nobody listens
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(nowhere))
    done = run_cli("status", env={"DLMS_GATEWAY_SOCKET": str(nowhere)})
    assert done.returncode == EXIT_NOT_RUNNING and "the daemon is not running" in done.stderr


def test_the_socket_can_be_found_through_the_environment(running: Running) -> None:
    done = run_cli("status", "--json", env={"DLMS_GATEWAY_SOCKET": str(running.sock)})
    assert done.returncode == EXIT_OK and json.loads(done.stdout)["wan"]["listening"]


# -- who may use the socket -------------------------------------------------------------------

# A bare client for another user: the venv's interpreter lives under /root, out of nobody's reach.
_PEER = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES"); sys.exit(0)
try:
    s.sendall(b'{"command": "status"}\\n')
except BrokenPipeError:
    pass  # a refused peer may be answered and closed before it has even asked
print(s.makefile().readline().strip())
"""
SYSTEM_PYTHON = "/usr/bin/python3"


def _as_user(sock: Path, *, uid: int, gid: int) -> subprocess.CompletedProcess[str]:
    def drop() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return subprocess.run([SYSTEM_PYTHON, "-I", "-c", _PEER, str(sock)], capture_output=True,
                          text=True, timeout=30, check=False, preexec_fn=drop, cwd="/")



@pytest.mark.skipif(os.geteuid() != 0, reason="proving refusal of another user needs root to setuid a child")
@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason=f"no {SYSTEM_PYTHON} for the other user's client")
def test_the_socket_is_group_restricted_and_other_users_are_refused(running: Running) -> None:
    mode = os.stat(running.sock).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
    owner_gid = os.stat(running.sock).st_gid
    # Let other users reach the socket file, so that only its own mode and the daemon decide.
    running.sock.parent.chmod(0o711)

    stranger = _as_user(running.sock, uid=NOBODY, gid=NOBODY)
    assert (stranger.returncode, stranger.stdout.strip()) == (0, "EACCES"), stranger.stderr

    member = _as_user(running.sock, uid=NOBODY, gid=owner_gid)  # in the service's group: allowed
    assert json.loads(member.stdout)["ok"] is True, member.stderr

    # Even with the file opened to everyone, the daemon checks the peer's credentials itself.
    os.chmod(running.sock, 0o666)
    try:
        stranger = _as_user(running.sock, uid=NOBODY, gid=NOBODY)
        assert json.loads(stranger.stdout) == {"ok": False, "error": "permission denied"}, stranger.stderr
    finally:
        os.chmod(running.sock, 0o660)
