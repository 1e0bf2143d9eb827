"""The relay's own code per exchange, without the kernel: CPU microseconds of the gateway's Python. Prints a table.

A real `Gateway` built from a configuration (registry, router, sessions, the line's scheduler, HDLC
links, the WAN connections) with its two transports replaced by in-memory ones: HES wrapper PDUs
go into `HesConnection.data_received`, the frames the line writes are answered by a minimal meter
responder (our own frame codec, not timed), and its answers go into the line's `data_received`.
Only the calls into the gateway are timed. With no system calls and no event-loop turns in the
figure, two commits' hot paths compare within one or two percent: the end-to-end figures of
``../shared/anchors/relay_scale.py`` add about 55 µs of kernel and loop time per exchange, and this
machine's noise with it.

    python -m bench.relay_path [--sessions 1,64] [--exchanges 19200] [--repeat 3] [--json FILE]

Another commit's hot path, for an A/B in one run: ``PYTHONPATH=<its checkout> python bench/relay_path.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import GET_LDN, PUBLIC_AARQ
from gateway.codec.hdlc import HdlcFrame, HdlcFrameDecoder, encode_frame
from gateway.codec.hdlc.control import FrameKind, i_control, recv_seq_of, send_seq_of, u_control
from gateway.codec.wrapper import WrapperPdu, encode
from gateway.config import load_config
from gateway.daemon import Gateway
from gateway.log import configure
from gateway.wan.connection import HesConnection

AARE = bytes.fromhex("6129A109060760857405080101A203020100A305A103020100BE10040E0800065F1F040000101D04000007")
GET_ANSWER = bytes.fromhex("C401C100090F") + b"PROBE0000000001"  # a logical device name; its invoke id is set
LLC_RESPONSE = b"\xe6\xe7\x00"


class _LineTransport(asyncio.Transport):
    """What the line writes, kept."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


class _HesTransport(asyncio.Transport):
    """One HES connection's socket: what the gateway sends it, kept."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self._peer = ("127.0.0.1", 40000 + index)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self._peer, "sockname": ("127.0.0.1", 4059)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_reading(self) -> bool:
        return True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Meters:
    """Every meter on the line: UA to SNRM and DISC, an AARE to an AARQ, a logical device name to a GET."""

    def __init__(self) -> None:
        self._sequences: dict[tuple[int, int | None, int], tuple[int, int]] = {}  # link -> (V(S), V(R))
        self._decoder = HdlcFrameDecoder()

    def answer(self, data: bytes) -> bytes:
        return b"".join(self._answer(frame) for frame in self._decoder.feed(data, now=0.0))

    def _answer(self, frame: HdlcFrame) -> bytes:
        link = (frame.destination.upper, frame.destination.lower, frame.source.upper)
        if frame.kind in (FrameKind.SNRM, FrameKind.DISC):
            self._sequences[link] = (0, 0)
            return encode_frame(HdlcFrame(frame.source, frame.destination, u_control(FrameKind.UA, poll=True)))
        send_seq, recv_seq = self._sequences[link]
        assert frame.kind is FrameKind.I and send_seq_of(frame.control) == recv_seq, frame
        assert recv_seq_of(frame.control) == send_seq, frame
        apdu = frame.info[len(LLC_RESPONSE):]
        answer = AARE if apdu[:1] == b"\x60" else GET_ANSWER[:2] + apdu[2:3] + GET_ANSWER[3:]
        recv_seq = (recv_seq + 1) % 8
        self._sequences[link] = ((send_seq + 1) % 8, recv_seq)
        control = i_control(send_seq=send_seq, recv_seq=recv_seq, poll=True)
        return encode_frame(HdlcFrame(frame.source, frame.destination, control, LLC_RESPONSE + answer))


def _configuration(directory: Path, sessions: int) -> Path:
    text = (f'[wan]\nlisten = ["127.0.0.1"]\nport = 4059\nmax_connections = 4096\nmax_connections_per_peer = 4096\n'
            f'max_associations_per_peer = 4096\n\n[paths]\nstate_directory = "{directory}"\n'
            f'runtime_directory = "{directory}"\n\n[registry]\nidentify = false\n\n[log]\nlevel = "warning"\n\n'
            '[[links]]\nname = "bus0"\ndevice = "/dev/null"\n\n')
    text += "".join(f'[[meters]]\nsap = {sap}\nlink = "bus0"\nphysical_address = {sap}\n\n'
                    for sap in range(17, 17 + sessions))
    path = directory / "gateway.toml"
    path.write_text(text)
    return path


async def _measure(sessions: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        gateway = Gateway(load_config(_configuration(Path(tmp), sessions)))
        line = gateway.lines["bus0"]
        line_transport = _LineTransport()
        opened: list[asyncio.Protocol] = []

        async def opener(factory: Callable[[], asyncio.Protocol]) -> asyncio.Transport:
            protocol = factory()
            protocol.connection_made(line_transport)
            opened.append(protocol)
            return line_transport

        line._opener = opener  # the bench stands in for the serial port
        await line.open()
        meter_side, meters = opened[0], _Meters()
        connections = []
        for index in range(sessions):
            connection = HesConnection(server=gateway.wan)
            transport = _HesTransport(index)
            connection.connection_made(transport)
            connections.append((connection, transport))

        def answer_the_line() -> tuple[float, int]:
            taken, exchanges = 0.0, 0
            while line_transport.written:
                answer = meters.answer(line_transport.written.pop(0))
                started = time.perf_counter()
                meter_side.data_received(answer)
                taken += time.perf_counter() - started
                exchanges += 1
            return taken, exchanges

        for index, (connection, _) in enumerate(connections):
            connection.data_received(encode(WrapperPdu(source=16, destination=17 + index, apdu=PUBLIC_AARQ)))
        answer_the_line()
        for _, transport in connections:
            assert transport.sent and transport.sent[-1][8:9] == b"\x61", "no AARE"
            transport.sent.clear()
        requests = [[encode(WrapperPdu(source=16, destination=17 + index,
                                       apdu=GET_LDN[:2] + bytes([0xC0 | k]) + GET_LDN[3:])) for k in range(16)]
                    for index in range(sessions)]
        gc.collect()
        taken, exchanges = 0.0, 0
        for round_number in range(rounds):
            started = time.perf_counter()
            for index, (connection, _) in enumerate(connections):
                connection.data_received(requests[index][round_number % 16])
            taken += time.perf_counter() - started
            line_taken, line_exchanges = answer_the_line()
            taken, exchanges = taken + line_taken, exchanges + line_exchanges
        for _, transport in connections:
            assert len(transport.sent) == rounds and transport.sent[-1][8:9] == b"\xc4", "a GET went unanswered"
        line.close()
        gateway.database.close()
    return {"sessions": sessions, "exchanges": exchanges, "us_per_exchange": taken / exchanges * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", default="1,64", help="HES sessions to different meters, comma-separated")
    parser.add_argument("--exchanges", type=int, default=19200, help="GETs per run, shared by the sessions")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configure(level="error", fmt="json")  # no management keys here: that warning is not the bench's
    results = []
    print("| sessions | exchanges per run | µs of the gateway's Python per exchange (median, range) |")
    print("|---:|---:|---:|")
    for sessions in (int(value) for value in args.sessions.split(",")):
        runs = [asyncio.run(_measure(sessions, max(1, args.exchanges // sessions))) for _ in range(args.repeat)]
        figures = [run["us_per_exchange"] for run in runs]
        results.append({"sessions": sessions, "exchanges": runs[0]["exchanges"], "us_per_exchange": figures})
        print(f"| {sessions} | {runs[0]['exchanges']:,.0f} | {statistics.median(figures):.1f} "
              f"({min(figures):.1f} to {max(figures):.1f}) |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
