"""Issue 15 end to end: two gateways in two network namespaces, keepalived for real, a HES on the floating address.

kill -9 the primary mid-session: the HES reconnects to the same address and reads every meter at
the same SAP; the meter registered just before the kill is there; the old primary comes back
standby (manual hand-back); at no checkpoint do both gateways hold the serial bus open.
The takeover times (kill -> address moved, -> standby promoted, -> first successful read) are
printed, not asserted tightly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.codec.wrapper import WrapperDecoder, WrapperPdu, encode
from gateway.standby.channel import create_secret
from tests.integration.daemon_proc import DaemonProcess, SimulatorProcess, gateway_command, run_cli, wait_until
from tests.integration.rawhes import GET_LDN, PUBLIC_AARQ, RLRQ
from tests.media.netns import Namespaces, inside
from tests.standby.pair import (
    ADDRESSES,
    INTERFACES,
    VIRTUAL_IP,
    Keepalived,
    build_lan,
    holds_virtual_ip,
    render_keepalived,
    unavailable_reason,
)

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))

WAN_PORT = 4059
REPLICATION_PORT = 4060
PUBLIC_CLIENT = 16
ELECTION_TIMEOUT_S = 30.0  # keepalived's first election: both start BACKUP, ~3 advertisement intervals
TAKEOVER_GOAL_S = 10.0  # issue 15; the bound below is looser (two shared cores): the time is reported
TAKEOVER_LIMIT_S = 40.0
EXCHANGE_TIMEOUT_S = 15.0  # the gateway answers every request (an exception-response after its exchange timeout)
# Kills in a row, the roles alternating (a -> b, then b -> a, ...): 2 in CI, TAKEOVER_KILLS=20 for the figure.
KILLS = int(os.environ.get("TAKEOVER_KILLS", "2"))


class Hes:
    """A head-end in its own namespace: one TCP connection to the floating address, public client reads."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def read_name(self, sap: int, *, connect_timeout: float = 2.0) -> bytes:
        """Associate, GET the logical device name, release; raises OSError/ValueError when that fails.

        Connecting gives up soon (nobody holds the address yet: try again); once connected, the HES
        waits for its answers as a HES does (abandoning an association midway would hold the meter).
        """
        with inside(self.namespace):
            connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with connection:
            connection.settimeout(connect_timeout)
            connection.connect((VIRTUAL_IP, WAN_PORT))
            connection.settimeout(EXCHANGE_TIMEOUT_S)
            decoder = WrapperDecoder()
            aare = self._request(connection, decoder, sap, PUBLIC_AARQ)
            if aare[:1] != b"\x61":
                raise ValueError(f"no AARE from SAP {sap}: {aare.hex()}")
            answer = self._request(connection, decoder, sap, GET_LDN)
            self._request(connection, decoder, sap, RLRQ)
        if answer[:4] != bytes.fromhex("C401C100") or answer[4] != 0x09:  # get-response-normal, octet-string
            raise ValueError(f"SAP {sap} answered {answer.hex()}")
        return answer[6:6 + answer[5]]

    def read_again(self, sap: int, *, within_s: float = 10.0) -> bytes:
        """A read as a HES retries it: a new connection may meet the meter still held by the previous
        one (the gateway closes that association, DISC and all, a moment after the release)."""
        deadline = time.monotonic() + within_s
        while True:
            try:
                return self.read_name(sap)
            except ValueError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # a HES's retry interval, not a wait for an event

    @staticmethod
    def _request(connection: socket.socket, decoder: WrapperDecoder, sap: int, apdu: bytes) -> bytes:
        connection.sendall(encode(WrapperPdu(source=PUBLIC_CLIENT, destination=sap, apdu=apdu)))
        while True:
            data = connection.recv(65536)
            if not data:
                raise ConnectionError("closed by the gateway")
            pdus = decoder.feed(data)
            if pdus:
                return pdus[0].apdu


def standby_table(*, role: str, peer: str, secret: Path, hand_back: str) -> str:
    return f"""
[standby]
role = "{role}"
hand_back = "{hand_back}"
peer = "{peer}"
peer_port = {REPLICATION_PORT}
listen = "0.0.0.0"
port = {REPLICATION_PORT}
secret_file = "{secret}"
reconnect_s = 0.5
"""


def status(daemon: DaemonProcess) -> dict[str, Any]:
    done = run_cli("status", "--json", socket_path=daemon.socket_path)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def bus_open(daemon: DaemonProcess) -> bool:
    return any(line["open"] for line in status(daemon)["links"])


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    made = Namespaces(prefix=f"gwp{os.getpid() % 100000}")
    try:
        yield made
    finally:
        made.delete()


@dataclass
class Takeover:
    """One kill, in seconds after it: the failure detected (the killed side's keepalived in FAULT), the
    address on the standby, the standby's daemon promoted, the HES's first successful read."""

    detected_s: float | None
    address_s: float | None
    promoted_s: float | None
    first_read_s: float
    attempts: int


class Milestones:
    """Notes when each condition on another process's state first holds (polled every 50 ms in a thread)."""

    def __init__(self, conditions: dict[str, Callable[[], bool]]) -> None:
        self._conditions = conditions
        self.reached: dict[str, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="milestones", daemon=True)

    def __enter__(self) -> Milestones:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(10)

    def _watch(self) -> None:
        while not self._done.wait(0.05) and len(self.reached) < len(self._conditions):
            for name, condition in self._conditions.items():
                if name not in self.reached and condition():
                    self.reached[name] = time.monotonic()


def last_event(daemon: DaemonProcess, event: str) -> str:
    """ISO time of the daemon's last log line with this event (JSON logs: the times sort as text)."""
    times = [json.loads(line)["timestamp"] for line in daemon.log_text().splitlines() if f'"{event}"' in line]
    assert times, f"no {event} in the log"
    return str(times[-1])


def promoted_at(daemon: DaemonProcess) -> float | None:
    """Wall-clock time of the daemon's last promotion, from its JSON log."""
    times = [json.loads(line)["timestamp"] for line in daemon.log_text().splitlines()
             if '"standby.promoted"' in line]
    return dt.datetime.fromisoformat(times[-1].replace("Z", "+00:00")).timestamp() if times else None


def following(daemon: DaemonProcess) -> bool:
    return status(daemon)["standby"].get("replication", {}).get("connected") is True


def meter_saps(daemon: DaemonProcess) -> list[int]:
    return [m["sap"] for m in json.loads(run_cli("meters", "--json", socket_path=daemon.socket_path).stdout)]


@dataclass
class Pair:
    """Two gateways and their keepalived, running in the namespaces of build_lan."""

    names: dict[str, str]
    gateways: dict[str, DaemonProcess]
    vrrp: dict[str, Keepalived]
    hes: Hes


@contextlib.contextmanager
def running_pair(tmp_path: Path, namespaces: Namespaces, *, hand_back: str = "manual") -> Iterator[Pair]:
    """Gateway a (priority 150, first role primary) and b (100), one simulated bus, the election done."""
    names = build_lan(namespaces)
    secret = tmp_path / "replication.toml"
    create_secret(secret)
    gateway = gateway_command()[0] if len(gateway_command()) == 1 else "dlms-gateway"
    with SimulatorProcess(tmp_path, meters=3) as bus:
        bus.start()
        gateways = {
            side: DaemonProcess(tmp_path / side, device=bus.device, meters=[(17, 17), (18, 18)], listen="0.0.0.0",
                                port=WAN_PORT, prefix=["ip", "netns", "exec", names[side]],
                                extra=standby_table(role="primary" if side == "a" else "standby",
                                                    peer=ADDRESSES["b" if side == "a" else "a"], secret=secret,
                                                    hand_back=hand_back))
            for side in ("a", "b")}
        vrrp = {side: Keepalived(tmp_path / f"keepalived-{side}", namespace=names[side],
                                 config=render_keepalived(side=side, priority=150 if side == "a" else 100,
                                                          gateway=gateway, socket=gateways[side].socket_path,
                                                          preempt=hand_back == "automatic"))
                for side in ("a", "b")}
        try:
            for daemon in gateways.values():
                daemon.start()
            for keepalived in vrrp.values():
                keepalived.start()
            # keepalived starts BACKUP (its hook demotes the daemon), then elects: the hook promotes the winner
            wait_until(lambda: holds_virtual_ip(names["a"], INTERFACES["a"]) and bus_open(gateways["a"]),
                       timeout=ELECTION_TIMEOUT_S, what="the floating address and the bus on the primary")
            yield Pair(names=names, gateways=gateways, vrrp=vrrp, hes=Hes(names["hes"]))
        finally:
            for keepalived in vrrp.values():
                keepalived.stop()
            for daemon in gateways.values():
                daemon.stop()


@pytest.mark.timeout(60 + 30 * KILLS)
def test_the_standby_takes_over_the_floating_address_and_the_bus_after_kill_9(
        tmp_path: Path, namespaces: Namespaces) -> None:
    with running_pair(tmp_path, namespaces) as pair:
        names, gateways, vrrp, hes = pair.names, pair.gateways, pair.vrrp, pair.hes
        expected = {sap: hes.read_again(sap) for sap in (17, 18)}
        late: list[int] = []
        takeovers = []
        primary, standby = "a", "b"
        for kill in range(KILLS):
            old, new = gateways[primary], gateways[standby]
            wait_until(lambda: following(new), timeout=20.0, what="the standby following the primary")  # noqa: B023
            # registered just before the kill: acknowledged only once the standby has it too
            added = json.loads(run_cli("meters", "add", "--link", "bus0", "--address", str(19 if kill == 0
                                                                                              else 100 + kill),
                                       "--json", socket_path=old.socket_path).stdout)
            assert added["replicated"] is True
            late.append(added["sap"])
            if kill == 0:  # the simulator has a meter at 19; later ones are registered, silent addresses
                expected[added["sap"]] = hes.read_again(added["sap"])
            assert bus_open(old) and not bus_open(new)
            takeovers.append(_kill_mid_session(hes, old=old, old_vrrp=vrrp[primary], new=new,
                                               namespace=names[standby], interface=INTERFACES[standby]))
            assert {sap: hes.read_again(sap) for sap in expected} == expected  # every meter, the same SAPs
            assert set(late) <= set(meter_saps(new))
            assert status(new)["standby"]["role"] == "primary" and bus_open(new)

            old.start()  # the old primary returns: standby, following the new primary, the bus left alone
            wait_until(lambda: following(old), timeout=20.0,  # noqa: B023
                       what="the returning gateway following the new primary")
            wait_until(lambda: "Entering BACKUP STATE" in vrrp[primary].log_text().rsplit("FAULT", 1)[-1],  # noqa: B023
                       timeout=20.0, what="the returning gateway's keepalived in BACKUP")
            assert holds_virtual_ip(names[standby], INTERFACES[standby])
            assert not holds_virtual_ip(names[primary], INTERFACES[primary])
            assert status(old)["standby"]["role"] == "standby" and not bus_open(old) and bus_open(new)
            primary, standby = standby, primary
        _report(takeovers)


def test_with_automatic_hand_back_the_returning_primary_takes_back_after_the_other_let_go(
        tmp_path: Path, namespaces: Namespaces) -> None:
    with running_pair(tmp_path, namespaces, hand_back="automatic") as pair:
        a, b = pair.gateways["a"], pair.gateways["b"]
        wait_until(lambda: following(b), timeout=20.0, what="b following a")
        a.kill()
        wait_until(lambda: bus_open(b), timeout=TAKEOVER_LIMIT_S, what="b taking over")
        a.start()  # back standby; keepalived preempts (priority 150): b demotes, a promotes once b let go
        wait_until(lambda: status(a)["standby"]["role"] == "primary" and holds_virtual_ip(pair.names["a"], "a0"),
                   timeout=TAKEOVER_LIMIT_S, what="a taking back the address and the bus")
        assert status(b)["standby"]["role"] == "standby" and not bus_open(b) and bus_open(a)
        assert last_event(b, "line.released") <= last_event(a, "line.open")  # never both on the bus
        assert pair.hes.read_again(17)


def _kill_mid_session(hes: Hes, *, old: DaemonProcess, old_vrrp: Keepalived, new: DaemonProcess,
                      namespace: str, interface: str) -> Takeover:
    """kill -9 the primary while the HES holds an association; the HES reconnects until a read works."""
    with inside(hes.namespace):
        session = socket.create_connection((VIRTUAL_IP, WAN_PORT), timeout=5.0)
    with session:
        session.sendall(encode(WrapperPdu(source=PUBLIC_CLIENT, destination=17, apdu=PUBLIC_AARQ)))
        assert session.recv(65536)[8:9] == b"\x61"  # associated with the meter at SAP 17
        faults = old_vrrp.log_text().count("Entering FAULT STATE")
        milestones = Milestones({
            "detected": lambda: old_vrrp.log_text().count("Entering FAULT STATE") > faults,
            "address": lambda: holds_virtual_ip(namespace, interface)})
        with milestones:
            killed_at, killed_wall = time.monotonic(), time.time()
            old.kill()
            with pytest.raises(OSError):  # the association is gone with the process (RST)
                session.sendall(encode(WrapperPdu(source=PUBLIC_CLIENT, destination=17, apdu=GET_LDN)))
                if not session.recv(65536):
                    raise ConnectionError("closed")
            attempts = 0
            while True:  # the HES reconnects to the same address until a read works
                if time.monotonic() - killed_at > TAKEOVER_LIMIT_S:
                    raise AssertionError(f"no read {TAKEOVER_LIMIT_S} s after the kill:\n{new.log_text()[-3000:]}")
                attempts += 1
                try:
                    hes.read_name(17, connect_timeout=1.0)
                    break
                except (OSError, ValueError):
                    time.sleep(0.1)  # the HES's reconnect interval, not a wait for an event
            first_read_s = time.monotonic() - killed_at
    promoted = promoted_at(new)
    since_kill = {name: at - killed_at for name, at in milestones.reached.items()}
    return Takeover(detected_s=since_kill.get("detected"), address_s=since_kill.get("address"),
                    promoted_s=None if promoted is None else promoted - killed_wall,
                    first_read_s=first_read_s, attempts=attempts)


def _report(takeovers: list[Takeover]) -> None:
    def summary(values: list[float]) -> str:
        if not values:
            return "n/a"
        return (f"min {min(values):.2f} s, median {statistics.median(values):.2f} s, "
                f"max {max(values):.2f} s")

    print(f"\ntakeover over {len(takeovers)} kill -9 (goal {TAKEOVER_GOAL_S:.0f} s):")
    print(f"  failure detected (FAULT): {summary([t.detected_s for t in takeovers if t.detected_s is not None])}")
    print(f"  address on the standby:   {summary([t.address_s for t in takeovers if t.address_s is not None])}")
    print(f"  standby promoted:         {summary([t.promoted_s for t in takeovers if t.promoted_s is not None])}")
    print(f"  first successful read:    {summary([t.first_read_s for t in takeovers])}")
