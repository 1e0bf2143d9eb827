"""WAN access limits: allow-list, connection limits, socket options, deadlines, unread answers."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from gateway.codec.wrapper import WrapperPdu, encode
from gateway.config import GatewayConfig, WanConfig, check_wan
from gateway.daemon import Gateway
from gateway.loglimit import EVENT_BUDGET
from gateway.wan.connection import MAX_UNSENT_BYTES, HesConnection, peer_names
from gateway.wan.limits import SEND_BUFFER_BYTES, AllowList, Deadline, tune_socket
from gateway.wan.server import WanServer
from tests.integration.conftest import SimLine, gateway_config
from tests.integration.rawhes import GET_LDN, RawHes
from tests.integration.test_relay import associate_and_read_name
from tests.wan.support import log_events, until

# -- pure pieces --------------------------------------------------------------------------------


def test_allow_list_matches_addresses_and_networks() -> None:
    allow = AllowList(["10.1.0.0/16", "192.0.2.7", "2001:db8::/32"])
    assert allow.allows("10.1.200.3")
    assert allow.allows("192.0.2.7")
    assert not allow.allows("192.0.2.8")
    assert not allow.allows("10.2.0.1")
    assert allow.allows("::ffff:10.1.0.9")  # IPv4 HES on a dual-stack listener
    assert allow.allows("2001:db8::1")
    assert not allow.allows("fe80::1%eth0")
    assert not allow.allows("not an address")
    assert AllowList([]).allows("203.0.113.1")  # empty: anyone


def test_check_wan_names_each_bad_key() -> None:
    assert check_wan(WanConfig()) == []
    problems = check_wan(WanConfig(allow=("10.1.0.0/16", "10.1.0.0/33", "hes.example"),
                                   tls_certificate_file="/etc/gw/cert.pem", idle_timeout_s=0,
                                   max_connections_per_peer=0, tcp_keepalive_s=0.5, tcp_user_timeout_s=-1))
    assert [key for key, _ in problems] == ["allow", "allow", "tls_private_key_file", "max_connections_per_peer",
                                            "idle_timeout_s", "tcp_keepalive_s", "tcp_user_timeout_s"]
    assert "'10.1.0.0/33'" in problems[0][1] and "'hes.example'" in problems[1][1]
    assert "all three" in problems[2][1]
    assert check_wan(WanConfig(tcp_keepalive_s=0, tcp_user_timeout_s=0)) == []  # 0 = off


def test_tune_socket_sets_keepalive_user_timeout_and_send_buffer() -> None:
    with socket.socket() as sock:
        tune_socket(sock, keepalive_s=60, user_timeout_s=30)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 15
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30000
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) <= 2 * SEND_BUFFER_BYTES
    with socket.socket() as sock:
        tune_socket(sock, keepalive_s=0, user_timeout_s=0)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 0


def _tuned_through_the_transport(loop: asyncio.AbstractEventLoop) -> tuple[int, int, bytes]:
    """Tune an accepted connection through its transport's socket stand-in; (keepalive, idle, echo) read back."""

    async def run() -> tuple[int, int, bytes]:
        accepted: asyncio.Future[asyncio.Transport] = loop.create_future()

        class Echo(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport
                accepted.set_result(transport)  # type: ignore[arg-type]

            def data_received(self, data: bytes) -> None:
                self.transport.write(data)  # type: ignore[attr-defined]

        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        transport = await accepted
        tune_socket(transport.get_extra_info("socket"), keepalive_s=60, user_timeout_s=30)
        with socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno())) as view:
            options = (view.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                       view.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE))
        writer.write(b"still open")  # the transport's descriptor was not closed by the tuning
        echo = await asyncio.wait_for(reader.readexactly(10), 5)
        writer.close()
        await writer.wait_closed()
        transport.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0)  # the transport's close runs in the next turn
        return (*options, echo)

    return loop.run_until_complete(run())


@pytest.mark.parametrize("flavour", ["asyncio", "uvloop"])
def test_tune_socket_through_a_transports_socket_stand_in_leaves_the_connection_open(flavour: str) -> None:
    if flavour == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        assert _tuned_through_the_transport(loop) == (1, 60, b"still open")
    finally:
        loop.close()


async def test_deadline_fires_once_after_the_last_restart_only() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    expired = asyncio.Event()

    def on_expiry() -> None:
        fired.append(loop.time())
        expired.set()

    deadline = Deadline(loop, timeout_s=0.3, on_expiry=on_expiry)
    deadline.restart()
    last = loop.time()
    for _ in range(8):  # activity every 50 ms keeps a 300 ms deadline from firing (slack for a loaded box)
        await asyncio.sleep(0.05)
        deadline.restart()
        last = loop.time()
    assert fired == []
    await asyncio.wait_for(expired.wait(), 1.0)
    assert fired[0] - last >= 0.3 * 0.99
    assert not deadline.running
    expired.clear()
    deadline.start()
    deadline.clear()  # stopped before expiry: the armed timer finds nothing to do
    deadline.start()
    deadline.cancel()
    await asyncio.sleep(0.35)  # past the deadline: nothing may fire
    assert len(fired) == 1


# -- through a gateway --------------------------------------------------------------------------


async def gateway_with(sim_line: SimLine, factory: Callable[[GatewayConfig], Gateway], **wan: Any) -> Gateway:
    config = gateway_config(sim_line.pty.slave_path)
    gateway = factory(replace(config, wan=replace(config.wan, **wan)))
    await gateway.start()
    return gateway


async def connect_from(source: str, address: tuple[str, int]) -> RawHes:
    """A HES connection from a given local address (127.0.0.x all reach the loopback listener)."""
    reader, writer = await asyncio.open_connection(*address, local_addr=(source, 0))
    return RawHes(reader, writer)


async def hung_up(hes: RawHes) -> bool:
    """True once the gateway closed the connection without a word."""
    try:
        return await hes.closed_by_peer(timeout=5.0)
    except ConnectionResetError:
        return True


async def test_a_hes_outside_the_allow_list_is_refused_before_any_read(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], captured_logs: io.StringIO
) -> None:
    gateway = await gateway_with(sim_line, gateway_factory, allow=("127.0.0.1/32",))
    frames_before = gateway.lines["bus0"].counters.frames_sent
    stranger = await connect_from("127.0.0.2", gateway.wan.addresses[0])
    stranger.send(client_sap=16, meter_sap=17, apdu=GET_LDN)
    assert await hung_up(stranger)
    assert gateway.wan.refused["not-allowed"] == 1
    assert gateway.wan.pdus_in == 0
    assert gateway.lines["bus0"].counters.frames_sent == frames_before
    (refusal,) = log_events(captured_logs, "wan.refused")
    assert refusal["peer"].startswith("127.0.0.2:") and refusal["reason"] == "not-allowed"
    friend = await connect_from("127.0.0.1", gateway.wan.addresses[0])
    assert (await associate_and_read_name(friend, meter_sap=17)).startswith(b"SIM")
    await friend.close()
    await stranger.close()


async def test_connections_are_limited_per_peer_address_and_in_total(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    gateway = await gateway_with(sim_line, gateway_factory, max_connections=3, max_connections_per_peer=2)
    address = gateway.wan.addresses[0]
    first = await connect_from("127.0.0.1", address)
    second = await connect_from("127.0.0.1", address)
    await until(lambda: len(gateway.wan.connections) == 2)
    third = await connect_from("127.0.0.1", address)
    assert await hung_up(third)
    assert gateway.wan.refused["peer-connection-limit"] == 1
    other = await connect_from("127.0.0.2", address)  # another HES address still gets in
    assert (await associate_and_read_name(other, meter_sap=18)).startswith(b"SIM")
    assert gateway.wan.per_peer == {"127.0.0.1": 2, "127.0.0.2": 1}
    fourth = await connect_from("127.0.0.3", address)
    assert await hung_up(fourth)
    assert gateway.wan.refused["connection-limit"] == 1
    await first.close()  # its slot is given back
    await until(lambda: gateway.wan.per_peer["127.0.0.1"] == 1)
    again = await connect_from("127.0.0.1", address)
    assert (await associate_and_read_name(again, meter_sap=17)).startswith(b"SIM")
    for hes in (second, third, other, fourth, again):
        await hes.close()


async def test_accepted_sockets_get_keepalive_and_user_timeout(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    gateway = await gateway_with(sim_line, gateway_factory, tcp_keepalive_s=20, tcp_user_timeout_s=7.5)
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    await associate_and_read_name(hes, meter_sap=17)
    (connection,) = gateway.wan.connections
    sock = connection._transport.get_extra_info("socket")  # type: ignore[union-attr]
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 20
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 7500
    await hes.close()


async def test_an_idle_hes_is_closed_and_its_association_released(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], captured_logs: io.StringIO
) -> None:
    gateway = await gateway_with(sim_line, gateway_factory, idle_timeout_s=0.6)
    loop = asyncio.get_running_loop()
    busy = await RawHes.connect(*gateway.wan.addresses[0])
    await associate_and_read_name(busy, meter_sap=18)
    idle = await RawHes.connect(*gateway.wan.addresses[0])
    await associate_and_read_name(idle, meter_sap=17)
    went_quiet = loop.time()
    while loop.time() - went_quiet < 1.2:  # the busy HES reads every 0.2 s: never idle
        await asyncio.sleep(0.2)
        answer = await busy.request(client_sap=16, meter_sap=18, apdu=GET_LDN)
        assert answer.apdu[0] == 0xC4
    assert await hung_up(idle)
    assert gateway.wan.cut_off == {"idle": 1}
    await until(lambda: (17, 16) not in gateway.router.sessions)  # its meter association released
    assert (18, 16) in gateway.router.sessions
    (event,) = log_events(captured_logs, "wan.idle_timeout")
    assert event["idle_s"] == 0.6
    await busy.close()
    await idle.close()


async def test_a_pdu_dribbled_slower_than_the_deadline_is_cut_off(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], captured_logs: io.StringIO
) -> None:
    gateway = await gateway_with(sim_line, gateway_factory, pdu_timeout_s=0.5)
    loop = asyncio.get_running_loop()
    slow = await RawHes.connect(*gateway.wan.addresses[0])
    wire = encode(WrapperPdu(source=16, destination=17, apdu=GET_LDN))
    started = loop.time()
    slow.writer.write(wire[:3])
    assert await hung_up(slow)
    assert 0.5 * 0.99 <= loop.time() - started < 2.0
    assert gateway.wan.cut_off == {"pdu-timeout": 1}
    (event,) = log_events(captured_logs, "wan.pdu_timeout")
    assert event["buffered"] == 3
    # Whole PDUs in several writes, each PDU within the deadline, are fine.
    steady = await RawHes.connect(*gateway.wan.addresses[0])
    for chunk in (wire[:5], wire[5:12], wire[12:]):
        steady.writer.write(chunk)
        await asyncio.sleep(0.1)
    assert (await steady.receive()).apdu[0] == 0xD8  # no association: exception-response, but answered
    await slow.close()
    await steady.close()


async def test_a_hes_that_never_reads_its_answers_is_cut_off(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    gateway = await gateway_with(sim_line, gateway_factory, pdu_timeout_s=0.5)
    loop = asyncio.get_running_loop()
    host, port = gateway.wan.addresses[0]
    with socket.socket() as greedy:
        greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        greedy.setblocking(False)
        await loop.sock_connect(greedy, (host, port))
        port_text = f":{greedy.getsockname()[1]}"
        await until(lambda: any(c.peer.endswith(port_text) for c in gateway.wan.connections))
        (connection,) = [c for c in gateway.wan.connections if c.peer.endswith(port_text)]
        requests = encode(WrapperPdu(source=16, destination=999, apdu=GET_LDN)) * 2000  # unknown SAP: fast answers
        good = await RawHes.connect(host, port)
        await associate_and_read_name(good, meter_sap=17)
        largest_unsent = 0
        while not gateway.wan.cut_off:
            with contextlib.suppress(BlockingIOError):  # its own send buffer full: wait for the gateway
                greedy.send(requests)
            if connection._transport is not None:
                largest_unsent = max(largest_unsent, connection._transport.get_write_buffer_size())
            answer = await good.request(client_sap=16, meter_sap=17, apdu=GET_LDN)  # the good HES is served
            assert answer.apdu[0] == 0xC4
    assert gateway.wan.cut_off == {"not-reading": 1}
    assert connection.pdus_out > 1000
    assert largest_unsent <= MAX_UNSENT_BYTES
    answer = await good.request(client_sap=16, meter_sap=17, apdu=GET_LDN)
    assert answer.apdu[0] == 0xC4
    await good.close()


@pytest.mark.parametrize("length", [0x7FFF, 0xFFFF])
async def test_an_oversized_length_closes_the_connection(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], length: int
) -> None:
    gateway = await gateway_with(sim_line, gateway_factory, max_apdu=4096)
    hes = await RawHes.connect(*gateway.wan.addresses[0])
    hes.writer.write(bytes.fromhex("000100100011") + length.to_bytes(2, "big"))
    assert await hung_up(hes)
    assert gateway.wan.cut_off == {"protocol-error": 1}
    await hes.close()


async def test_a_connection_flood_writes_a_bounded_number_of_log_lines(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], captured_logs: io.StringIO
) -> None:
    gateway = await gateway_with(sim_line, gateway_factory, allow=("127.0.0.1/32",))
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(40):  # one HES reconnecting as fast as it can
        hes = await connect_from("127.0.0.1", gateway.wan.addresses[0])
        await hes.close()
    strangers = [await connect_from(f"127.0.1.{n}", gateway.wan.addresses[0]) for n in range(1, 41)]
    for stranger in strangers:  # forty addresses outside the allow-list
        assert await hung_up(stranger)
        await stranger.close()
    await until(lambda: not gateway.wan.connections)
    seconds = loop.time() - started
    assert gateway.wan.refused["not-allowed"] == 40  # each one counted...
    # ...but one line per address and second, and at most EVENT_BUDGET a second for all addresses
    assert 1 <= len(log_events(captured_logs, "wan.connected")) <= seconds + 1
    assert 1 <= len(log_events(captured_logs, "wan.disconnected")) <= seconds + 1
    assert 1 <= len(log_events(captured_logs, "wan.refused")) <= EVENT_BUDGET * (seconds + 1) < 40


async def test_a_connection_that_never_sends_a_whole_pdu_loses_its_slot_at_the_first_pdu_deadline(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], captured_logs: io.StringIO
) -> None:
    gateway = await gateway_with(sim_line, gateway_factory, first_pdu_timeout_s=0.3, idle_timeout_s=600.0)
    talker = await RawHes.connect(*gateway.wan.addresses[0])
    assert (await talker.request(client_sap=16, meter_sap=17, apdu=GET_LDN)).apdu[0] == 0xD8  # answered
    silent = await RawHes.connect(*gateway.wan.addresses[0])
    assert await hung_up(silent)  # not after the 600 s idle timeout
    assert gateway.wan.cut_off == {"first-pdu": 1}
    (event,) = log_events(captured_logs, "wan.first_pdu_timeout")
    assert event["first_pdu_timeout_s"] == 0.3
    # the talker, connected longer, is not concerned: once a PDU came, only the idle timeout applies
    assert (await talker.request(client_sap=16, meter_sap=17, apdu=GET_LDN)).apdu[0] == 0xD8
    assert len(gateway.wan.connections) == 1
    await silent.close()
    await talker.close()


class BrokenSink:
    """A router with a defect a HES can reach: routing any PDU raises."""

    def pdu_from_hes(self, owner: HesConnection, pdu: WrapperPdu) -> None:
        raise KeyError(pdu.destination)

    def hes_disconnected(self, owner: HesConnection) -> None:
        pass


async def test_a_pdu_whose_routing_raises_costs_its_connection_only_with_one_line_and_no_traceback(
    captured_logs: io.StringIO,
) -> None:
    server = WanServer(config=WanConfig(listen=("127.0.0.1",), port=0), sink=BrokenSink())
    await server.start()
    hes = await RawHes.connect(*server.addresses[0])
    hes.send(client_sap=16, meter_sap=17, apdu=GET_LDN)
    assert await hung_up(hes)
    assert server.cut_off == {"internal-error": 1}
    (event,) = log_events(captured_logs, "wan.internal_error")
    assert (event["error"], event["destination"], event["tag"]) == ("KeyError", 17, "c0")
    assert "Traceback" not in captured_logs.getvalue()
    await hes.close()
    await server.stop()


@pytest.mark.parametrize(("peername", "names"), [
    (("::ffff:10.0.0.1", 5, 0, 0), ("10.0.0.1", "10.0.0.1:5")),  # an IPv4 HES on a dual-stack listener
    (("10.0.0.1", 4059), ("10.0.0.1", "10.0.0.1:4059")),
    (("fe80::1%eth0", 7, 0, 2), ("fe80::1%eth0", "[fe80::1%eth0]:7")),
    (("2001:db8::1", 9, 0, 0), ("2001:db8::1", "[2001:db8::1]:9")),
    (("not-an-address", 1), ("not-an-address", "not-an-address:1")),
    (None, ("?", "?")),
])
def test_peer_names_give_the_address_a_person_and_the_limits_use(peername: object, names: tuple[str, str]) -> None:
    assert peer_names(peername) == names
    assert peer_names(peername) == names  # the second time from the table of parsed addresses
