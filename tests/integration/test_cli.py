"""The technician's `dlms-gateway` commands against a real daemon and a real simulator, both subprocesses.

One daemon serves the whole module. Simulated meters answer at physical addresses 17..23;
each test works on its own addresses so the order of the tests does not matter:
17, 18 seeded (SAPs 17, 18) · 19 add/remove · 20-22 scan · 23 remove by name · 40.. nobody answers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gurux_dlms.objects import GXDLMSData

from gateway.cli.client import DaemonRefusedError, call
from tests.hes import GuruxHes, HesCredentials, TcpChannel
from tests.integration.daemon_proc import DaemonProcess, SimulatorProcess, gateway_command, run_cli, wait_until

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
    with SimulatorProcess(directory, meters=7) as simulator:
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
    assert link["concurrent_exchanges"] == 1 and link["outstanding"] in (0, 1)  # a wire: one exchange at a time
    assert status["meters"]["online"] >= len(SEEDED)
    assert status["uptime_s"] >= 0


def test_meters_lists_every_meter_and_filters_by_state(running: Running) -> None:
    added = running.cli("meters", "add", "--link", "bus0", "--address", "40", "--sap", "400")  # nobody there
    assert added.returncode == EXIT_OK, added.stderr

    table = running.cli("meters").stdout.splitlines()
    assert table[0].split() == ["SAP", "NAME", "LINK", "MEDIUM", "ADDRESS", "STATE", "BY", "LAST", "SEEN"]
    rows = {int(line.split()[0]): line.split() for line in table[2:]}
    assert rows[17][:6] == ["17", SEEDED[17], "bus0", "serial", "17", "online"]
    assert rows[400][:5] == ["400", "bus0", "serial", "40", "registered"]  # no name: the identity read fails

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
    # the simulator takes the IEC defaults only: what its UA answered the identity read's SNRM is remembered
    assert detail["hdlc_accepted"] == {"window_tx": 1, "window_rx": 1, "max_info_tx": 128, "max_info_rx": 128}
    assert fields["hdlc_accepted"] == "window_tx 1, window_rx 1, max_info_tx 128, max_info_rx 128"

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
    assert re.search(r"^scanning 3 addresses on bus0: up to about \d+:\d\d \(\d+\.\d s per silent address\)$",
                     done.stderr, re.M), done.stderr
    progress = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 3  # one line per address (not a terminal: one per tenth, here every one)
    assert re.fullmatch(r"\[#{30}\] 3/3 address 22, found 3, \d+:\d\d elapsed", progress[-1]), progress[-1]
    assert re.fullmatch(r"\[#{10}\.{20}\] 1/3 address 20, found 1, \d+:\d\d elapsed, about \d+:\d\d left",
                        progress[0]), progress[0]
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    assert [(r[0], r[2], r[3]) for r in rows] == [("20", "SIM0000000000004", "registered"),
                                                 ("21", "SIM0000000000005", "registered"),
                                                 ("22", "SIM0000000000006", "registered")]
    scanned = {int(r[1]) for r in rows}
    listed = {m["sap"]: m for m in running.json("meters")}
    assert {listed[sap]["address"] for sap in scanned} == {20, 21, 22}
    assert all(listed[sap]["registered_by"] == "discovery" for sap in scanned)


def test_a_scan_says_which_meters_it_already_knew(running: Running) -> None:
    rows = running.json("meters", "scan", "--link", "bus0", "--range", "17-18")
    assert [(r["address"], r["sap"], r["note"]) for r in rows] == [(17, 17, "already registered"),
                                                                  (18, 18, "already registered")]


def test_a_reversed_scan_range_is_called_reversed(running: Running) -> None:
    done = running.cli("meters", "scan", "--link", "bus0", "--range", "64-16")
    assert done.returncode == EXIT_USAGE
    assert "--range 64-16 is reversed (did you mean 16-64?)" in done.stderr
    with pytest.raises(DaemonRefusedError, match="reversed"):  # the daemon says it too
        call(running.sock, "meters.scan", link="bus0", first=64, last=16)


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
        assert done.returncode == EXIT_NOT_RUNNING
        assert json.loads(done.stdout)["ok"] is False if "--json" in command else done.stdout == ""
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


# -- rough edges a technician met (issue 12) --------------------------------------------------


def _is_iso_time(text: object) -> bool:
    return isinstance(text, str) and dt.datetime.fromisoformat(text).tzinfo is not None


def test_options_given_to_meters_before_its_action_are_obeyed(running: Running) -> None:
    running.cli("meters", "add", "--link", "bus0", "--address", "43", "--sap", "403")
    assert running.cli("meters", "remove", "403").returncode == EXIT_OK
    done = running.cli("meters", "--state", "removed", "--json", "list")
    assert done.returncode == EXIT_OK, done.stderr
    removed = json.loads(done.stdout)
    assert 403 in {m["sap"] for m in removed} and {m["state"] for m in removed} == {"removed"}
    table = running.cli("meters", "--state", "removed", "list").stdout.splitlines()
    assert table[0].split()[:2] == ["SAP", "NAME"] and all(" removed " in f" {row} " for row in table[2:])


def test_global_options_work_before_and_after_the_command(running: Running) -> None:
    for argv in (["--socket", str(running.sock), "--json", "status"],
                 ["status", "--socket", str(running.sock), "--json"],
                 ["--socket", str(running.sock), "meters", "--json", "list"]):
        done = subprocess.run([*gateway_command(), *argv], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == EXIT_OK, (argv, done.stderr)
        assert json.loads(done.stdout), argv


def test_a_failing_command_prints_a_json_error_under_json(running: Running) -> None:
    for argv in (["readings", "--format", "json"], ["readings", "--json"], ["meter", "9999", "--json"]):
        done = running.cli(*argv)
        assert done.returncode == EXIT_REFUSED, (argv, done.stderr)
        answer = json.loads(done.stdout)  # valid JSON, not a lone "["
        assert answer["ok"] is False and answer["error"], argv
    assert "legacy polling is off" in json.loads(running.cli("readings", "--json").stdout)["error"]
    csv_export = running.cli("readings", "--format", "csv")
    assert (csv_export.returncode, csv_export.stdout) == (EXIT_REFUSED, "")  # no header for an export that failed


def test_a_closed_pipe_ends_the_output_quietly(running: Running) -> None:
    reader, writer = os.pipe()
    os.close(reader)  # `| head` that has already quit
    try:
        done = subprocess.run([*gateway_command(), "meters", "--socket", str(running.sock)], stdout=writer,
                              stderr=subprocess.PIPE, text=True, timeout=60, check=False)
    finally:
        os.close(writer)
    assert done.stderr == ""
    assert done.returncode == 128 + signal.SIGPIPE  # what a shell reports for a tool that met a closed pipe


def test_interrupting_a_scan_cancels_it_in_the_daemon(running: Running) -> None:
    scan = subprocess.Popen([*gateway_command(), "meters", "scan", "--link", "bus0", "--range", "44-63",
                             "--socket", str(running.sock)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert scan.stderr is not None
    while not (line := scan.stderr.readline()).startswith("["):  # the daemon is scanning
        assert line, "the scan ended before it showed progress"
    scan.send_signal(signal.SIGINT)
    _, rest = scan.communicate(timeout=30)
    assert scan.returncode == 130, rest
    assert "Traceback" not in rest

    def cancelled() -> bool:
        return '"command": "meters.scan"' in running.daemon.log_text() and "control.cancelled" in \
            running.daemon.log_text()

    wait_until(cancelled, timeout=10, what="the daemon to cancel the scan")
    assert any('"registry.scan_cancelled"' in line and '"first": 44' in line
               for line in running.daemon.log_text().splitlines())
    assert "socket.send() raised exception" not in running.daemon.log_text()
    assert not any('"registry.scan_done"' in line and '"first": 44' in line
                   for line in running.daemon.log_text().splitlines())
    assert running.cli("ping", "17").returncode == EXIT_OK  # the line is free again


def test_remove_takes_a_name_and_says_when_a_meter_is_already_removed(running: Running) -> None:
    added = running.json("meters", "add", "--link", "bus0", "--address", "23")
    wait_until(lambda: call(running.sock, "meter", meter=str(added["sap"]))["name"] == "SIM0000000000007",
               timeout=10, what="the meter at address 23 to be identified")
    removed = running.cli("meters", "remove", "SIM0000000000007")
    assert removed.returncode == EXIT_OK, removed.stderr
    assert removed.stdout.startswith(f"removed SAP {added['sap']} (SIM0000000000007)")

    again = running.cli("meters", "remove", str(added["sap"]))
    assert again.returncode == EXIT_REFUSED
    assert f"SAP {added['sap']} is already removed" in again.stderr and "no meter" not in again.stderr


def test_times_are_iso_with_a_zone_and_numbers_are_rounded(running: Running) -> None:
    detail = running.json("meter", "17")
    assert _is_iso_time(detail["last_seen"]) and _is_iso_time(detail["first_seen"])
    assert detail["last_rtt_ms"] == round(detail["last_rtt_ms"], 1)
    text = running.cli("meter", "17").stdout
    fields = dict(line.split(None, 1) for line in text.splitlines() if len(line.split(None, 1)) == 2)
    assert re.fullmatch(r"\d+\.\d", fields["last_rtt_ms"]), fields["last_rtt_ms"]
    assert _is_iso_time(fields["last_seen"])
    assert all(_is_iso_time(m["last_seen"]) for m in running.json("meters", "--state", "online"))

    hes = GuruxHes(TcpChannel("127.0.0.1", running.daemon.port), credentials=HesCredentials(client_sap=16),
                   server_sap=17)
    hes.associate()
    try:
        (session,) = running.json("sessions")
        assert _is_iso_time(session["since"])
        row = running.cli("sessions").stdout.splitlines()[2]
        assert row.split()[4:7] == ["serial", "17", "sap"] and _is_iso_time(row.split()[8]), row
    finally:
        hes.release()
        hes.close()
    wait_until(lambda: call(running.sock, "sessions") == [], timeout=10, what="the session to end")


def test_config_check_reports_every_error_with_json(running: Running, tmp_path: Path) -> None:
    text = running.daemon.config_file.read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("baudrate = 115200", "baud_rate = 115200")
                   + "\n[relay]\nexchange_timeout_s = -1\n")
    done = run_cli("config", "check", str(bad), "--json")
    assert done.returncode == EXIT_USAGE
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["file"] == str(bad)
    assert [(e["key"], e["line"]) for e in report["errors"]] == [
        ("links[0].baud_rate", text.splitlines().index("baudrate = 115200") + 1),
        ("relay.exchange_timeout_s", len(text.splitlines()) + 3)]
    good = run_cli("config", "check", str(running.daemon.config_file), "--json")
    assert good.returncode == EXIT_OK
    assert json.loads(good.stdout) == {"ok": True, "file": str(running.daemon.config_file), "errors": []}


def test_the_demo_banner_names_the_command_as_it_will_run(tmp_path: Path) -> None:
    command = gateway_command()
    done = subprocess.run([*command, "demo", "--meters", "1", "--port", "0", "--duration", "0"],
                          capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == EXIT_OK, done.stderr
    shown = command[0] if len(command) == 1 else f"{sys.executable} -m gateway.cli.main"
    assert re.search(rf"DLMS_GATEWAY_SOCKET=\S+ {re.escape(shown)} status$", done.stderr, re.M), done.stderr
