"""Capture files as Wireshark's tshark reads them: every unit there, in order, byte-identical, marked."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.capture.pcapng import Direction
from gateway.capture.tap import MAX_QUEUED, CapturedUnit, CaptureFilter, FrameTap
from gateway.capture.writer import CaptureFullError, CaptureWriter
from gateway.codec.hdlc import HdlcAddress, HdlcFrame, encode_frame
from gateway.codec.wrapper import WrapperPdu, encode

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (apt: tshark)")
FIELDS = ("frame.interface_name", "frame.time_epoch", "udp.srcport", "udp.dstport", "udp.payload", "frame.comment",
          "udp.checksum.status", "ip.src", "ipv6.src", "frame.packet_flags_direction")


def tshark(path: Path) -> list[dict[str, str]]:
    assert TSHARK is not None
    command = [TSHARK, "-r", str(path), "-o", "udp.check_checksum:TRUE", "-T", "fields", "-E", "separator=\t"]
    for name in FIELDS:
        command += ["-e", name]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return [dict(zip(FIELDS, line.split("\t"), strict=True)) for line in result.stdout.splitlines()]


def frame(control: int, info: bytes = b"", *, lower: int = 17) -> bytes:
    return encode_frame(HdlcFrame(destination=HdlcAddress.client(16),
                                  source=HdlcAddress.server(logical_device=1, physical_address=lower),
                                  control=control, info=info))


def units() -> list[CapturedUnit]:
    get = encode(WrapperPdu(source=16, destination=17, apdu=bytes.fromhex("c001c100010000280000ff0200")))
    answer = encode(WrapperPdu(source=17, destination=16, apdu=bytes.fromhex("c401c1000906") + b"METER1"))
    return [
        CapturedUnit(timestamp=1796053606.495807, leg="wan", direction=Direction.INBOUND, data=get,
                     peer="192.0.2.7:40001", local="192.0.2.1:4059"),
        CapturedUnit(timestamp=1796053606.496, leg="line bus0", direction=Direction.OUTBOUND,
                     data=frame(0x10, b"\xe6")),
        CapturedUnit(timestamp=1796053606.500, leg="line bus0", direction=Direction.OUTBOUND, data=frame(0x10, b"\xe6"),
                     note="retransmission"),
        CapturedUnit(timestamp=1796053606.61, leg="line bus0", direction=Direction.INBOUND, data=frame(0x30, b"xy")[:-3]
                     + b"\x00\x00\x7e", note="bad FCS"),
        CapturedUnit(timestamp=1796053606.62, leg="wan", direction=Direction.OUTBOUND, data=answer,
                     peer="[2001:db8::7]:40002", local="[2001:db8::1]:4059"),
    ]


@needs_tshark
def test_every_unit_in_order_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "capture.pcapng"
    writer = CaptureWriter(path)
    for unit in units():
        writer.write(unit)
    writer.close()
    rows = tshark(path)
    assert [bytes.fromhex(row["udp.payload"]) for row in rows] == [unit.data for unit in units()]
    assert [row["frame.interface_name"] for row in rows] == [unit.leg for unit in units()]
    assert [round(float(row["frame.time_epoch"]), 6) for row in rows] == [unit.timestamp for unit in units()]
    assert [row["frame.comment"] for row in rows] == ["", "", "retransmission", "bad FCS", ""]
    assert {row["udp.checksum.status"] for row in rows} == {"1"}  # good: the packets are well formed
    assert rows[0]["ip.src"] == "192.0.2.7" and rows[0]["udp.srcport"] == "40001" and rows[0]["udp.dstport"] == "4059"
    assert rows[4]["ipv6.src"] == "2001:db8::1" and rows[4]["udp.dstport"] == "40002"
    assert [int(row["frame.packet_flags_direction"], 16) for row in rows] == [u.direction.value for u in units()]


@needs_tshark
def test_ring_keeps_the_newest_files(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path / "ring.pcapng", max_bytes=600, ring_files=2)
    sent = [
        CapturedUnit(timestamp=1796053606.0 + n, leg="line bus0", direction=Direction.OUTBOUND,
                     data=frame(0x10 | (n % 8) << 1, bytes([n])))
        for n in range(20)
    ]
    for unit in sent:
        writer.write(unit)
    writer.close()
    files = sorted(tmp_path.glob("ring-*.pcapng"))
    assert files == writer.files and len(files) == 2
    assert all(path.stat().st_size <= 600 for path in files)
    payloads = [bytes.fromhex(row["udp.payload"]) for path in files for row in tshark(path)]
    assert payloads == [unit.data for unit in sent[-len(payloads):]]  # the newest, in order, nothing twice
    assert 2 <= len(payloads) < len(sent)


def test_cap_without_ring_stops(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path / "capped.pcapng", max_bytes=400)
    with pytest.raises(CaptureFullError):
        for unit in units() * 10:
            writer.write(unit)
    writer.close()
    assert 0 < writer.packets < 50
    assert (tmp_path / "capped.pcapng").stat().st_size <= 400


def test_tap_filters_by_meter_and_marks_retransmissions() -> None:
    clock = iter(range(100, 200))
    tap = FrameTap(clock=lambda: float(next(clock)))
    assert not tap.active
    meter17 = tap.start(CaptureFilter(sap=17, place=("bus0", 1, 17)))
    whole_line = tap.start(CaptureFilter(line="bus0"))
    assert tap.active
    tap.wan(direction=Direction.INBOUND, data=b"to 17", server_sap=17, peer="192.0.2.7:1", local="192.0.2.1:4059")
    tap.wan(direction=Direction.INBOUND, data=b"to 18", server_sap=18, peer="192.0.2.7:1", local="192.0.2.1:4059")
    for _ in range(2):
        tap.hdlc(line="bus0", direction=Direction.OUTBOUND, data=b"I(0) to 17", upper=1, lower=17)
    tap.hdlc(line="bus0", direction=Direction.OUTBOUND, data=b"I(0) to 18", upper=1, lower=18)
    tap.hdlc(line="bus1", direction=Direction.INBOUND, data=b"from bus1", upper=1, lower=17, bad_fcs=True)
    assert [(u.data, u.note) for u in meter17.take()] == [(b"to 17", ""), (b"I(0) to 17", ""),
                                                           (b"I(0) to 17", "retransmission")]
    assert [u.data for u in whole_line.take()] == [b"I(0) to 17", b"I(0) to 17", b"I(0) to 18"]
    tap.stop(meter17)
    tap.stop(whole_line)
    assert not tap.active


def test_a_slow_capture_loses_its_oldest_units_counted() -> None:
    tap = FrameTap()
    capture = tap.start(CaptureFilter())
    for n in range(MAX_QUEUED + 5):
        tap.hdlc(line="bus0", direction=Direction.INBOUND, data=n.to_bytes(4, "big"), upper=1, lower=17)
    assert capture.dropped == 5
    taken = capture.take()
    assert len(taken) == MAX_QUEUED and taken[0].data == (5).to_bytes(4, "big")
