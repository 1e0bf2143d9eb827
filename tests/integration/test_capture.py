"""`dlms-gateway capture` on a running gateway: both legs in a pcapng file, byte-identical, as tshark reads it."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.codec.hdlc import HdlcFrameDecoder, encode_frame
from gateway.codec.wrapper import WrapperPdu, encode
from gateway.config import GatewayConfig
from gateway.daemon import Gateway
from tests.integration.conftest import SimLine, gateway_config
from tests.integration.rawhes import GET_LDN, PUBLIC_AARQ, RLRQ, RawHes
from tests.wan.support import until

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (apt: tshark)")


def read_capture(path: Path) -> list[tuple[str, bytes, str]]:
    """(interface, UDP payload, comment) of each packet, in file order, as tshark reads them."""
    assert TSHARK is not None
    result = subprocess.run([TSHARK, "-r", str(path), "-T", "fields", "-E", "separator=\t", "-e",
                             "frame.interface_name", "-e", "udp.payload", "-e", "frame.comment"],
                            capture_output=True, text=True, check=True)
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    return [(name, bytes.fromhex(payload), comment) for name, payload, comment in rows]


def files_in(folder: Path) -> list[Path]:
    return list(folder.iterdir())


def frames(stream: bytes) -> list[bytes]:
    """A byte stream of the line as its frames, each with its two flags."""
    return [encode_frame(frame) for frame in HdlcFrameDecoder().feed(stream, now=0.0)]


def record_the_meters_side(line: SimLine) -> tuple[bytearray, bytearray]:
    """What the simulated meters read from the line and wrote to it: the other end of the meter leg."""
    heard, said = bytearray(), bytearray()
    feed = line.bus.feed

    def recording(data: bytes) -> bytes:
        heard.extend(data)
        answer = feed(data)
        said.extend(answer)
        return answer

    line.bus.feed = recording  # type: ignore[method-assign]
    return heard, said


async def capture(gw: Gateway, path: Path, *arguments: str) -> asyncio.subprocess.Process:
    command = [sys.executable, "-m", "gateway.cli.main", "capture", "--socket",
               str(gw.control.path if gw.control else ""), "-w", str(path), *arguments]
    process = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    await until(lambda: gw.tap.active, timeout=20.0)  # the daemon's side is running: traffic from now on counts
    return process


async def test_a_meter_read_is_in_the_file_on_both_legs_byte_identical(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path
) -> None:
    gw = gateway_factory(gateway_config(sim_line.pty.slave_path))
    await gw.start()
    heard, said = record_the_meters_side(sim_line)
    path = tmp_path / "read.pcapng"
    process = await capture(gw, path, "--meter", "17", "--duration", "3")
    hes = await RawHes.connect(*gw.wan.addresses[0])
    to_gateway = [WrapperPdu(source=16, destination=17, apdu=apdu) for apdu in (PUBLIC_AARQ, GET_LDN, RLRQ)]
    answers = [await hes.request(client_sap=16, meter_sap=17, apdu=pdu.apdu) for pdu in to_gateway]
    other = await RawHes.connect(*gw.wan.addresses[0])  # another meter's traffic is not in this capture
    await other.request(client_sap=16, meter_sap=18, apdu=PUBLIC_AARQ)
    _, stderr = await asyncio.wait_for(process.communicate(), 20.0)
    assert process.returncode == 0, stderr.decode()
    packets = read_capture(path)

    wan = [payload for name, payload, _ in packets if name == "wan"]
    expected_wan = [encode(pdu) for pair in zip(to_gateway, answers, strict=True) for pdu in pair]
    assert wan == expected_wan  # every PDU of the read, in order, byte for byte; none of meter 18's

    line = [(payload, comment) for name, payload, comment in packets if name == "line bus0"]
    assert line, "no HDLC frame captured"
    assert all(comment == "" for _, comment in line)
    meter_17 = b"\x02\x23"  # logical device 1, physical 17, in two bytes
    sent_to_17 = [f for f in frames(bytes(heard)) if f[3:5] == meter_17]  # 7E, format (2), destination
    from_17 = [f for f in frames(bytes(said)) if f[4:6] == meter_17]  # 7E, format (2), client (1), source
    captured = [payload for payload, _ in line]
    assert sorted(captured) == sorted(sent_to_17 + from_17)  # each frame that crossed the line, byte for byte
    assert [encode_frame(f) for f in HdlcFrameDecoder().feed(b"".join(captured), now=0.0)] == captured
    assert b"packets in" in stderr
    await hes.close()
    await other.close()


async def test_ctrl_c_ends_the_capture_in_the_daemon_and_keeps_the_file(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path
) -> None:
    gw = gateway_factory(gateway_config(sim_line.pty.slave_path))
    await gw.start()
    path = tmp_path / "until-interrupted.pcapng"
    process = await capture(gw, path, "--line", "bus0")
    hes = await RawHes.connect(*gw.wan.addresses[0])
    await hes.request(client_sap=16, meter_sap=17, apdu=PUBLIC_AARQ)
    process.send_signal(signal.SIGINT)
    _, stderr = await asyncio.wait_for(process.communicate(), 20.0)
    assert process.returncode == 0, stderr.decode()
    assert "stopped: interrupted" in stderr.decode()
    await until(lambda: not gw.tap.active, timeout=5.0)  # the daemon let go of it
    assert all(name == "line bus0" for name, _, _ in read_capture(path))  # a file Wireshark opens
    await hes.close()


async def test_an_unknown_meter_or_line_is_refused(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], tmp_path: Path
) -> None:
    gw = gateway_factory(gateway_config(sim_line.pty.slave_path))
    await gw.start()
    assert gw.control is not None
    for option, value, message in (("--meter", "99", "no meter"), ("--line", "bus9", "no line 'bus9'")):
        result = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli.main", "capture", "--socket", str(gw.control.path), "-w",
            str(tmp_path / "x.pcapng"), option, value, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, stderr = await asyncio.wait_for(result.communicate(), 20.0)
        assert result.returncode == 1 and message in stderr.decode()
    assert not gw.tap.active
    assert files_in(tmp_path) == []  # a refused capture leaves no file behind
