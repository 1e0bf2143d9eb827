"""SIGHUP reloads what can change live, without dropping sessions; a bad file changes nothing."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from gateway.cli.client import call
from gateway.codec.wrapper import WrapperDecoder, WrapperPdu, encode
from tests.integration.daemon_proc import DaemonProcess, SimulatorProcess, wait_until
from tests.integration.rawhes import GET_LDN, PUBLIC_AARQ


class BlockingHes:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.decoder = WrapperDecoder()

    def request(self, meter_sap: int, apdu: bytes) -> bytes:
        self.sock.sendall(encode(WrapperPdu(source=16, destination=meter_sap, apdu=apdu)))
        while True:
            pdus = self.decoder.feed(self.sock.recv(65536))
            if pdus:
                return pdus[0].apdu


def test_sighup_adds_seeds_and_changes_log_level_while_a_session_stays_open(tmp_path: Path) -> None:
    with SimulatorProcess(tmp_path, meters=3) as simulator:
        device = simulator.start()
        with DaemonProcess(tmp_path, device=device, meters=[(17, 17)], identify=False) as daemon:
            daemon.start()
            hes = BlockingHes(daemon.port)
            assert hes.request(17, PUBLIC_AARQ)[0] == 0x61
            assert [m["sap"] for m in call(daemon.socket_path, "meters")] == [17]

            text = daemon.config_file.read_text()
            text = text.replace('level = "info"', 'level = "debug"')
            text += '\n[[meters]]\nsap = 40\nlink = "bus0"\nphysical_address = 18\n'
            daemon.config_file.write_text(text)
            daemon.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            wait_until(lambda: 40 in [m["sap"] for m in call(daemon.socket_path, "meters")], timeout=5,
                       what="the new seed")
            # the session opened before the reload is still there and still answers
            assert hes.request(17, GET_LDN)[0] == 0xC4
            assert call(daemon.socket_path, "sessions")[0]["meter_sap"] == 17
            wait_until(lambda: '"level": "debug"' in daemon.log_text(), timeout=5, what="debug logging")

            # a broken file is refused: the daemon keeps running with what it had
            daemon.config_file.write_text(text + "\n[wan]\nport = 70000\n")
            daemon.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            wait_until(lambda: "gateway.reload_refused" in daemon.log_text(), timeout=5, what="the refusal")
            assert hes.request(17, GET_LDN)[0] == 0xC4
            assert daemon.process.poll() is None  # type: ignore[union-attr]
            hes.sock.close()
