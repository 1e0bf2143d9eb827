"""TLS on the WAN listener: a HES with a certificate from our CA reads a meter; others never reach it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from gurux_dlms.objects import GXDLMSData

from gateway.codec.wrapper import WrapperPdu, encode
from gateway.config import GatewayConfig, WanConfig
from gateway.daemon import Gateway
from gateway.wan.tls import TlsConfigError, server_context
from tests.hes import GuruxHes, HesCredentials
from tests.integration.conftest import SimLine, gateway_config
from tests.integration.rawhes import GET_LDN, PUBLIC_AARQ, RawHes
from tests.integration.test_relay import associate_and_read_name
from tests.wan.pki import Pki, make_pki
from tests.wan.support import log_events, until
from tests.wan.tlshes import TlsChannel, client_context

HANDSHAKE_TIMEOUT_S = 1.0  # pdu_timeout_s: also the TLS handshake deadline


def tls_wan(config: WanConfig, pki: Pki) -> WanConfig:
    return replace(config, tls_certificate_file=str(pki.server_certificate), tls_private_key_file=str(pki.server_key),
                   tls_client_ca_file=str(pki.ca_file), pdu_timeout_s=HANDSHAKE_TIMEOUT_S)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
async def tls_gateway(sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], pki: Pki) -> Gateway:
    config = gateway_config(sim_line.pty.slave_path)
    gateway = gateway_factory(replace(config, wan=tls_wan(config.wan, pki)))
    await gateway.start()
    return gateway


async def test_hes_with_a_certificate_from_our_ca_reads_a_meter(
    tls_gateway: Gateway, sim_line: SimLine, pki: Pki, captured_logs: io.StringIO
) -> None:
    host, port = tls_gateway.wan.addresses[0]
    context = client_context(ca_file=pki.ca_file, certificate=pki.client_certificate, key=pki.client_key)
    reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname="localhost")
    hes = RawHes(reader, writer)
    name = await associate_and_read_name(hes, meter_sap=18)
    assert name == sim_line.meters[1].device.name
    assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    (connection,) = tls_gateway.wan.connections
    assert connection.certificate_subject == pki.client_subject
    (accepted,) = log_events(captured_logs, "wan.connected")
    assert accepted["subject"] == pki.client_subject
    assert accepted["peer"] == connection.peer
    await hes.close()


async def test_gurux_head_end_over_tls_reads_a_meter(tls_gateway: Gateway, sim_line: SimLine, pki: Pki) -> None:
    host, port = tls_gateway.wan.addresses[0]
    context = client_context(ca_file=pki.ca_file, certificate=pki.client_certificate, key=pki.client_key)

    def read_name() -> bytes:
        hes = GuruxHes(TlsChannel(host, port, context=context), credentials=HesCredentials(), server_sap=19)
        hes.associate()
        name = bytes(hes.read(GXDLMSData("0.0.42.0.0.255"), 2))
        hes.release()
        hes.close()
        return name

    assert await asyncio.to_thread(read_name) == sim_line.meters[2].device.name
    assert tls_gateway.lines["bus0"].counters.frames_sent > 0


async def attempt_association(host: str, port: int, context: ssl.SSLContext | None) -> str:
    """Try to open TLS and send an AARQ; return how the attempt ended."""
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=context,
                                                       server_hostname="localhost" if context else None)
    except (ssl.SSLError, ConnectionError) as exc:
        return f"handshake: {type(exc).__name__}"
    hes = RawHes(reader, writer)
    try:  # TLS 1.3: the client finishes first; the server's verdict on its certificate comes after
        hes.send(client_sap=16, meter_sap=17, apdu=PUBLIC_AARQ)
        answer = await hes.receive(timeout=5.0)
    except (ssl.SSLError, ConnectionError) as exc:
        return f"after handshake: {type(exc).__name__}"
    finally:
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await hes.close()
    return f"answered: {answer.apdu.hex()}"


@pytest.mark.parametrize("who", ["no certificate", "certificate from another CA", "plain TCP"])
async def test_hes_without_a_valid_certificate_never_reaches_a_meter(
    tls_gateway: Gateway, pki: Pki, captured_logs: io.StringIO, who: str
) -> None:
    host, port = tls_gateway.wan.addresses[0]
    line = tls_gateway.lines["bus0"]
    frames_before = line.counters.frames_sent
    context: ssl.SSLContext | None
    if who == "no certificate":
        context = client_context(ca_file=pki.ca_file)
    elif who == "certificate from another CA":
        context = client_context(ca_file=pki.ca_file, certificate=pki.stranger_certificate, key=pki.stranger_key)
    else:
        context = None  # speaks wrapper PDUs straight into the TLS listener

    outcome = await attempt_association(host, port, context)

    assert not outcome.startswith("answered"), outcome
    await until(lambda: tls_gateway.wan.refused["tls-handshake"] == 1)
    assert tls_gateway.wan.pdus_in == 0  # not one wrapper PDU decoded
    assert tls_gateway.router.sessions == {}
    assert line.counters.frames_sent == frames_before  # the meter line saw nothing from it
    assert tls_gateway.wan.connections == set()
    (refusal,) = log_events(captured_logs, "wan.tls_refused")
    assert refusal["peer"].startswith("127.0.0.1:")
    expected = {"no certificate": "peer did not return a certificate",
                "certificate from another CA": "unable to get local issuer certificate",
                "plain TCP": "wrong version number"}[who]
    assert expected in refusal["reason"], refusal
    assert not log_events(captured_logs, "wan.connected")


async def test_a_silent_peer_is_refused_at_the_handshake_deadline(
    tls_gateway: Gateway, captured_logs: io.StringIO
) -> None:
    host, port = tls_gateway.wan.addresses[0]
    reader, writer = await asyncio.open_connection(host, port)  # never sends a ClientHello
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await reader.read(1) == b""  # the gateway hangs up
    elapsed = loop.time() - started
    assert HANDSHAKE_TIMEOUT_S * 0.9 <= elapsed < HANDSHAKE_TIMEOUT_S + 2.0
    await until(lambda: tls_gateway.wan.refused["tls-handshake"] == 1)
    (refusal,) = log_events(captured_logs, "wan.tls_refused")
    assert refusal["reason"] == "handshake timeout"
    writer.close()


def test_a_private_key_others_can_read_is_refused(pki: Pki) -> None:
    wan = tls_wan(WanConfig(), pki)
    assert server_context(wan) is not None
    os.chmod(pki.server_key, 0o640)
    with pytest.raises(TlsConfigError, match=r"mode 0640 lets others read it; chmod 600"):
        server_context(wan)


def test_tls_context_requires_client_certificates_and_tls_1_2(pki: Pki) -> None:
    context = server_context(tls_wan(WanConfig(), pki))
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert server_context(WanConfig()) is None  # no certificate configured: plain TCP


@pytest.mark.parametrize("broken", ["tls_client_ca_file", "tls_certificate_file"])
def test_missing_tls_files_are_named(pki: Pki, broken: str) -> None:
    wan = replace(tls_wan(WanConfig(), pki), **{broken: str(pki.directory / "missing.pem")})
    with pytest.raises(TlsConfigError, match=r"missing\.pem"):
        server_context(wan)


async def test_a_tls_hes_that_never_reads_its_answers_is_cut_off(tls_gateway: Gateway, pki: Pki) -> None:
    host, port = tls_gateway.wan.addresses[0]
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, (host, port))
    context = client_context(ca_file=pki.ca_file, certificate=pki.client_certificate, key=pki.client_key)
    reader, writer = await asyncio.open_connection(sock=raw, ssl=context, server_hostname="localhost")
    requests = encode(WrapperPdu(source=16, destination=999, apdu=GET_LDN)) * 2000  # unknown SAP: fast answers
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20.0
    while not tls_gateway.wan.cut_off and loop.time() < deadline:
        writer.write(requests)  # and never read: the StreamReader stops taking bytes at its limit
        with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.drain(), 0.2)
    assert tls_gateway.wan.cut_off == {"not-reading": 1}
    writer.transport.abort()
    del reader


async def test_requests_that_arrive_with_the_handshake_are_all_answered(tls_gateway: Gateway, pki: Pki) -> None:
    host, port = tls_gateway.wan.addresses[0]
    context = client_context(ca_file=pki.ca_file, certificate=pki.client_certificate, key=pki.client_key)
    reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname="localhost")
    hes = RawHes(reader, writer)
    count = 2000  # written at once: the gateway decrypts the first of them before its handshake task resumes
    writer.write(encode(WrapperPdu(source=16, destination=999, apdu=GET_LDN)) * count)
    answers = [await hes.receive(timeout=5.0) for _ in range(count)]
    assert {answer.apdu[0] for answer in answers} == {0xD8}  # unknown SAP: exception-response, every one
    assert tls_gateway.wan.pdus_in == tls_gateway.wan.pdus_out == count
    await hes.close()
