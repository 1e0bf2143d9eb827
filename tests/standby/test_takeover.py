"""Issue 15 end to end: two gateways in two network namespaces, keepalived for real, a HES on the floating address.

kill -9 the primary mid-session: the HES reconnects to the same address and reads every meter at
the same SAP; the meter registered just before the kill is there; the old primary comes back
standby (manual hand-back); at no checkpoint do both gateways hold the serial bus open.
The takeover time (kill -> first successful read) is printed, not asserted tightly.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
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


class Hes:
    """A head-end in its own namespace: one TCP connection to the floating address, public client reads."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def read_name(self, sap: int, *, timeout: float = 2.0) -> bytes:
        """Associate, GET the logical device name, release; raises OSError/ValueError when that fails."""
        with inside(self.namespace):
            connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with connection:
            connection.settimeout(timeout)
            connection.connect((VIRTUAL_IP, WAN_PORT))
            decoder = WrapperDecoder()
            aare = self._request(connection, decoder, sap, PUBLIC_AARQ)
            if aare[:1] != b"\x61":
                raise ValueError(f"no AARE from SAP {sap}: {aare.hex()}")
            answer = self._request(connection, decoder, sap, GET_LDN)
            self._request(connection, decoder, sap, RLRQ)
        if answer[:4] != bytes.fromhex("C401C100") or answer[4] != 0x09:  # get-response-normal, octet-string
            raise ValueError(f"SAP {sap} answered {answer.hex()}")
        return answer[6:6 + answer[5]]

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


def standby_table(*, role: str, peer: str, secret: Path) -> str:
    return f"""
[standby]
role = "{role}"
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


def test_the_standby_takes_over_the_floating_address_and_the_bus_after_kill_9(
        tmp_path: Path, namespaces: Namespaces) -> None:
    names = build_lan(namespaces)
    secret = tmp_path / "replication.toml"
    create_secret(secret)
    gateway = gateway_command()[0] if len(gateway_command()) == 1 else "dlms-gateway"
    hes = Hes(names["hes"])
    with SimulatorProcess(tmp_path, meters=3) as bus:
        bus.start()
        gateways = {
            side: DaemonProcess(tmp_path / side, device=bus.device, meters=[(17, 17), (18, 18)], listen="0.0.0.0",
                                port=WAN_PORT, prefix=["ip", "netns", "exec", names[side]],
                                extra=standby_table(role="primary" if side == "a" else "standby",
                                                    peer=ADDRESSES["b" if side == "a" else "a"], secret=secret))
            for side in ("a", "b")}
        vrrp = {side: Keepalived(tmp_path / f"keepalived-{side}", namespace=names[side],
                                 config=render_keepalived(side=side, priority=150 if side == "a" else 100,
                                                          gateway=gateway, socket=gateways[side].socket_path))
                for side in ("a", "b")}
        a, b = gateways["a"], gateways["b"]
        try:
            a.start()
            b.start()
            for keepalived in vrrp.values():
                keepalived.start()
            # keepalived starts BACKUP (its hook demotes the daemon), then elects: the hook promotes the winner
            wait_until(lambda: holds_virtual_ip(names["a"], INTERFACES["a"]) and bus_open(a),
                       timeout=ELECTION_TIMEOUT_S, what="the floating address and the bus on the primary")
            names_before = {sap: hes.read_name(sap) for sap in (17, 18)}

            added = json.loads(run_cli("meters", "add", "--link", "bus0", "--address", "19", "--json",
                                       socket_path=a.socket_path).stdout)
            registered_at = time.monotonic()
            wait_until(lambda: added["sap"] in [m["sap"] for m in json.loads(
                run_cli("meters", "--json", socket_path=b.socket_path).stdout)],
                timeout=10.0, what="the new meter on the standby")
            replicated_s = time.monotonic() - registered_at
            names_before[added["sap"]] = hes.read_name(added["sap"])
            assert bus_open(a) and not bus_open(b)

            with inside(names["hes"]):  # a HES mid-session: associated with SAP 17 when the primary dies
                session = socket.create_connection((VIRTUAL_IP, WAN_PORT), timeout=5.0)
            with session:
                session.sendall(encode(WrapperPdu(source=PUBLIC_CLIENT, destination=17, apdu=PUBLIC_AARQ)))
                assert session.recv(65536)[8:9] == b"\x61"
                killed_at = time.monotonic()
                a.kill()
                with pytest.raises((ConnectionError, TimeoutError, OSError)):
                    session.sendall(encode(WrapperPdu(source=PUBLIC_CLIENT, destination=17, apdu=GET_LDN)))
                    if not session.recv(65536):
                        raise ConnectionError("closed")

            moved_at: float | None = None
            first_read: bytes | None = None
            attempts = 0
            while first_read is None:  # the HES reconnects to the same address until a read works
                if time.monotonic() - killed_at > TAKEOVER_LIMIT_S:
                    raise AssertionError(f"no read {TAKEOVER_LIMIT_S} s after the kill:\n{b.log_text()[-3000:]}\n"
                                         f"{vrrp['b'].log_text()[-3000:]}")
                if moved_at is None and holds_virtual_ip(names["b"], INTERFACES["b"]):
                    moved_at = time.monotonic()
                attempts += 1
                try:
                    first_read = hes.read_name(17, timeout=1.0)
                except (OSError, ValueError):
                    time.sleep(0.1)  # a HES's reconnect interval, not a wait for an event
            takeover_s = time.monotonic() - killed_at
            assert first_read == names_before[17]
            names_after = {sap: hes.read_name(sap) for sap in names_before}
            assert names_after == names_before  # every meter, by the same SAPs, the late one included
            assert status(b)["standby"]["role"] == "primary" and bus_open(b)

            a.start()  # the old primary returns: standby, following the new primary, the bus left alone
            wait_until(lambda: status(a)["standby"].get("replication", {}).get("connected") is True,
                       timeout=20.0, what="the returning gateway following the new primary")
            assert status(a)["standby"]["role"] == "standby" and not bus_open(a)
            wait_until(lambda: "Entering BACKUP STATE" in vrrp["a"].log_text().rsplit("FAULT", 1)[-1],
                       timeout=20.0, what="the returning gateway's keepalived in BACKUP")
            assert holds_virtual_ip(names["b"], INTERFACES["b"]) and not holds_virtual_ip(names["a"], INTERFACES["a"])
            assert status(a)["standby"]["role"] == "standby" and not bus_open(a) and bus_open(b)
            assert hes.read_name(17) == names_before[17]
            detection = f"{moved_at - killed_at:.2f} s" if moved_at is not None else "n/a"
            print(f"\ntakeover: kill -9 -> address on the standby {detection}, -> first successful read "
                  f"{takeover_s:.2f} s ({attempts} HES attempts; goal {TAKEOVER_GOAL_S:.0f} s); "
                  f"registration replicated in {replicated_s * 1e3:.0f} ms")
        finally:
            for keepalived in vrrp.values():
                keepalived.stop()
            for daemon in gateways.values():
                daemon.stop()
