"""Registry scale: start-up time to READY, memory, and a HES reading the whole SAP list. Prints tables.

For 0, 1,000 and 10,000 registered meters (written into the registry before the daemon starts):
the time from spawning `dlms-gateway run` to its READY=1 on $NOTIFY_SOCKET (as systemd sees it),
VmRSS after READY and after a full SAP list read, and the time a public-client HES (our own
codecs, wrapper over TCP) needs to associate, GET 0.0.41.0.0.255 attribute 2 in blocks and release.
Targets (issue 3): READY <= 1 s and RSS <= 64 MB at 10,000 meters.

    python -m bench.registry_scale [--meters 0,1000,10000] [--starts 3] [--reads 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.harness import simulator
from gateway.codec import acse, axdr, xdlms
from gateway.codec.acse import AssociationResult, Conformance
from gateway.codec.obis import obis
from gateway.codec.wrapper import WrapperDecoder, WrapperPdu, encode
from gateway.registry.database import open_database
from gateway.registry.store import MeterRegistry

READY_TARGET_S = 1.0  # issue 3
RSS_TARGET_KIB = 64 * 1024  # issue 3
PUBLIC_CLIENT_SAP = 16
MANAGEMENT_SAP = 1
SAP_ASSIGNMENT = xdlms.AttributeDescriptor(class_id=17, logical_name=obis("0.0.41.0.0.255"), attribute_id=2)
INVOKE = 0xC1  # invoke-id 1, confirmed, high priority
PDU_SIZES = (512, 1024, 65535)


def prepopulate(state: Path, count: int) -> None:
    """``count`` registered meters with names, as a long-running gateway would have them."""
    state.mkdir(parents=True, exist_ok=True)
    connection = open_database(state / "registry.db")
    connection.execute("PRAGMA synchronous=OFF")  # set-up speed only; the daemon runs with FULL
    registry = MeterRegistry(connection)
    for index in range(count):
        registry.register(link="bus0", physical_address=1000 + index % 15000, logical_device=1 + index // 15000,
                          name=f"FAR{index:013d}".encode(), sap=200 + index)  # above 127, all-station
    connection.close()


def write_config(directory: Path, *, device: str, port: int) -> Path:
    config = directory / "gateway.toml"
    config.write_text(f"""\
[wan]
listen = ["127.0.0.1"]
port = {port}
[log]
level = "warning"
[paths]
state_directory = "{directory / 'state'}"
runtime_directory = "{directory / 'run'}"
keys_file = "{directory / 'no-keys.toml'}"
[[links]]
name = "bus0"
device = "{device}"
baudrate = 115200
""")
    return config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/<pid>/status")


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    ready_s: float
    port: int


@contextmanager
def daemon(config: Path, *, port: int) -> Iterator[Daemon]:
    """`dlms-gateway run` with $NOTIFY_SOCKET pointing at us; yields once it said READY=1."""
    with tempfile.TemporaryDirectory(prefix="gw-notify-") as tmp, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(f"{tmp}/notify")
        notify.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": f"{tmp}/notify"}
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "gateway.cli.main", "run", "--config", str(config)],
                                   env=env, stdout=subprocess.DEVNULL)
        try:
            while b"READY=1" not in notify.recv(4096).split(b"\n"):
                pass
            yield Daemon(process, time.perf_counter() - started, port)
        finally:
            process.send_signal(signal.SIGTERM)
            if process.wait(10) != 0:
                raise RuntimeError(f"the daemon exited with {process.returncode}")


class WrapperHes:
    """A blocking public-client HES on the wrapper, built from our own codecs."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = WrapperDecoder()
        self.pending: list[WrapperPdu] = []
        self.bytes_in = 0

    def request(self, apdu: bytes) -> bytes:
        self.sock.sendall(encode(WrapperPdu(source=PUBLIC_CLIENT_SAP, destination=MANAGEMENT_SAP, apdu=apdu)))
        while not self.pending:
            data = self.sock.recv(1 << 17)
            if not data:
                raise ConnectionError("the gateway closed the connection")
            self.bytes_in += len(data)
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0).apdu

    def associate(self, max_pdu: int) -> acse.InitiateResponse:
        initiate = acse.encode_initiate_request(acse.InitiateRequest(
            proposed_conformance=Conformance.GET | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ,
            client_max_receive_pdu_size=max_pdu))
        aare = acse.decode_aare(self.request(acse.encode_aarq(acse.Aarq(
            application_context=acse.APPLICATION_CONTEXT_LN_NO_CIPHERING, user_information=initiate))))
        if aare.result is not AssociationResult.ACCEPTED or aare.user_information is None:
            raise RuntimeError(f"association refused: {aare}")
        return acse.decode_initiate_response(aare.user_information)

    def get_in_blocks(self) -> tuple[axdr.Data, int]:
        """GET the SAP assignment, following GetRequestNext to the last block; (value, blocks)."""
        answer = xdlms.decode_xdlms(self.request(xdlms.encode_xdlms(xdlms.GetRequestNormal(INVOKE, SAP_ASSIGNMENT))))
        if isinstance(answer, xdlms.GetResponseNormal) and isinstance(answer.result, axdr.Data):
            return answer.result, 0
        raw = bytearray()
        blocks = 0
        while isinstance(answer, xdlms.GetResponseWithDataBlock) and isinstance(answer.raw_data, bytes):
            raw += answer.raw_data
            blocks += 1
            if answer.last_block:
                value, _ = axdr.decode(bytes(raw))
                return value, blocks
            answer = xdlms.decode_xdlms(self.request(xdlms.encode_xdlms(
                xdlms.GetRequestNext(INVOKE, answer.block_number))))
        raise RuntimeError(f"unexpected answer {answer}")

    def release(self) -> None:
        rlre = self.request(acse.encode_rlrq(acse.Rlrq(reason=0)))
        acse.decode_rlre(rlre)
        self.sock.close()


@dataclass
class ListRead:
    pdu: int
    negotiated_pdu: int
    entries: int
    blocks: int
    bytes_in: int
    seconds: float


def read_sap_list(port: int, max_pdu: int) -> ListRead:
    started = time.perf_counter()
    hes = WrapperHes(port)
    initiate = hes.associate(max_pdu)
    value, blocks = hes.get_in_blocks()
    hes.release()
    elapsed = time.perf_counter() - started
    assert isinstance(value.value, tuple)
    return ListRead(max_pdu, initiate.server_max_receive_pdu_size, len(value.value), blocks, hes.bytes_in, elapsed)


@dataclass
class Scale:
    meters: int
    ready_s: list[float]
    rss_ready_kib: int
    rss_after_kib: int
    reads: list[list[ListRead]]
    database_kib: int


def measure(count: int, *, device: str, starts: int, reads: int) -> Scale:
    with tempfile.TemporaryDirectory(prefix="gw-scale-") as tmp:
        directory = Path(tmp)
        prepopulate(directory / "state", count)
        port = free_port()
        config = write_config(directory, device=device, port=port)
        ready: list[float] = []
        rss_ready = rss_after = 0
        runs: list[list[ListRead]] = []
        for start in range(starts):
            with daemon(config, port=port) as running:
                ready.append(running.ready_s)
                if start == starts - 1:  # memory and list reads on the last start (warm file cache)
                    rss_ready = rss_kib(running.process.pid)
                    runs = [[read_sap_list(port, pdu) for _ in range(reads)] for pdu in PDU_SIZES]
                    rss_after = rss_kib(running.process.pid)
        with sqlite3.connect(directory / "state" / "registry.db") as db:
            pages = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
        return Scale(count, ready, rss_ready, rss_after, runs, pages // 1024)


def baseline() -> tuple[float, int]:
    """Interpreter start plus importing the daemon's modules, and the RSS that costs: the floor."""
    code = ("import gateway.cli.main, gateway.daemon, pathlib;"
            "print([l for l in pathlib.Path('/proc/self/status').read_text().splitlines()"
            " if l.startswith('VmRSS')][0].split()[1])")
    times, rss = [], 0
    for _ in range(3):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        times.append(time.perf_counter() - started)
        rss = int(out)
    return statistics.median(times), rss


def report(results: list[Scale], floor: tuple[float, int]) -> None:
    print(f"\nFloor: python + importing the daemon's modules: {floor[0] * 1e3:.0f} ms, RSS {floor[1] / 1024:.1f} MB\n")
    print(f"{'meters':>7} {'db MB':>6} {'READY ms (median/max)':>22} {'RSS ready MB':>13} {'RSS after list MB':>18}"
          f"  targets: READY <= {READY_TARGET_S * 1e3:.0f} ms, RSS <= {RSS_TARGET_KIB // 1024} MB")
    for r in results:
        verdict = "ok" if max(r.ready_s) <= READY_TARGET_S and r.rss_after_kib <= RSS_TARGET_KIB else "MISSED"
        print(f"{r.meters:>7} {r.database_kib / 1024:>6.1f} "
              f"{statistics.median(r.ready_s) * 1e3:>12.0f} / {max(r.ready_s) * 1e3:<7.0f} "
              f"{r.rss_ready_kib / 1024:>13.1f} {r.rss_after_kib / 1024:>18.1f}  {verdict}")
    print(f"\n{'meters':>7} {'PDU':>6} {'negotiated':>10} {'entries':>8} {'blocks':>7} {'kB in':>8} "
          f"{'read ms (median/max)':>21}  (associate + GET in blocks + release)")
    for r in results:
        for runs in r.reads:
            first = runs[0]
            seconds = [run.seconds for run in runs]
            if first.entries != r.meters + 1:
                raise RuntimeError(f"listed {first.entries} entries for {r.meters} meters and SAP 1")
            print(f"{r.meters:>7} {first.pdu:>6} {first.negotiated_pdu:>10} {first.entries:>8} {first.blocks:>7} "
                  f"{first.bytes_in / 1024:>8.1f} {statistics.median(seconds) * 1e3:>11.1f} / "
                  f"{max(seconds) * 1e3:<7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meters", default="0,1000,10000", help="registry sizes, comma-separated")
    parser.add_argument("--starts", type=int, default=3, help="daemon starts per size (READY timing)")
    parser.add_argument("--reads", type=int, default=3, help="SAP list reads per PDU size")
    args = parser.parse_args()
    floor = baseline()
    results = []
    with simulator(1) as device:  # the link needs a device that opens: a missing one delays stop
        for count in (int(c) for c in args.meters.split(",")):
            results.append(measure(count, device=device, starts=args.starts, reads=args.reads))
            print(f"measured {count} meters", file=sys.stderr, flush=True)
    report(results, floor)


if __name__ == "__main__":
    main()
