"""One HES connection: wrapper PDUs in and out, guarded by deadlines and a bounded send buffer.

Bytes are decoded as they arrive and handed to the router synchronously, so a GET costs no task
switch on its way to the meter line. A peer that breaks the wrapper protocol, dribbles a PDU,
stays silent, or stops reading its answers loses its own connection only. Each guard is a lazy
Deadline: one timer per guard, no work per PDU beyond reading the clock.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import ssl
from collections import Counter
from typing import Any, Protocol, cast

import structlog

from gateway.capture.pcapng import Direction
from gateway.capture.tap import FrameTap
from gateway.codec.wrapper import WrapperDecoder, WrapperError, WrapperPdu, encode
from gateway.config import WanConfig
from gateway.deadline import Deadline
from gateway.loglimit import LogLimiter
from gateway.wan.limits import tune_socket
from gateway.wan.tls import certificate_subject


class PduSink(Protocol):
    """Where decoded PDUs go (the router), and who hears that a connection has closed."""

    def pdu_from_hes(self, owner: HesConnection, pdu: WrapperPdu) -> None: ...

    def hes_disconnected(self, owner: HesConnection) -> None: ...


class ConnectionHost(Protocol):
    """What a connection needs of the server that accepted it (or dialled out): limits, counters, the sink."""

    config: WanConfig
    sink: PduSink
    tap: FrameTap
    tls: ssl.SSLContext | None
    peer_log: LogLimiter
    refused: Counter[str]
    cut_off: Counter[str]
    pdus_in: int
    pdus_out: int

    def admit(self, connection: HesConnection) -> str | None: ...

    def adopt(self, connection: HesConnection) -> None: ...

    def release(self, connection: HesConnection) -> None: ...

    def start_tls(self, connection: HesConnection, transport: asyncio.Transport) -> None: ...

log = structlog.get_logger(__name__)

MAX_UNSENT_BYTES = 1 << 20  # answers a HES leaves unread before we cut it off, whatever else happens
WRITE_HIGH_WATER = 64 * 1024  # past this we stop reading the HES's requests until it reads answers
# Bytes decoded (and their PDUs routed) per event-loop turn. A socket read can hold 256 KiB, some
# 12,000 pipelined GETs: routed at once they would stall every other HES for most of a second.
FEED_BYTES = 2048

# Why a connection was cut off (WanServer.cut_off counts these).
CUT_PROTOCOL_ERROR = "protocol-error"
CUT_PDU_TIMEOUT = "pdu-timeout"
CUT_IDLE = "idle"
CUT_NOT_READING = "not-reading"
CUT_FIRST_PDU = "first-pdu"
CUT_INTERNAL_ERROR = "internal-error"  # routing its PDU raised: a defect, logged without a traceback


def peer_names(peername: Any) -> tuple[str, str]:
    """(address, 'address:port') of a socket peer; an IPv4-mapped IPv6 address as plain IPv4."""
    if not isinstance(peername, tuple) or len(peername) < 2:
        return "?", "?"
    host = _plain_host(str(peername[0]))
    port = peername[1]
    return host, (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


@functools.lru_cache(maxsize=256)  # a HES connects from the same few addresses: each is parsed once
def _plain_host(host: str) -> str:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return host


class HesConnection(asyncio.Protocol):
    """One HES TCP (or TLS) connection."""

    def __init__(self, *, server: ConnectionHost, inbound: bool = True) -> None:
        self._server = server
        self._inbound = inbound  # False: the gateway dialled out; no allow-list or peer limits apply
        config = server.config
        self._decoder = WrapperDecoder(max_apdu=config.max_apdu)
        self._transport: asyncio.Transport | None = None
        self.peer = "?"
        self.peer_address = "?"  # the HES's IP address, without port: per-peer limits count this
        self.local = "?"  # the gateway's address and port of this connection (frame capture)
        self.certificate_subject: str | None = None  # the HES's client certificate, over TLS
        self.pdus_in = 0
        self.pdus_out = 0
        self._tls_pending = False
        self._admitted = False
        self._unfed: memoryview | None = None  # received, not yet decoded (while set, reading is paused)
        self._unfed_offset = 0
        self._pdus_this_read = 0
        self._feed_handle: asyncio.Handle | None = None
        self._write_paused = False
        self._flow_paused = False  # reading paused by _flow (it resumes it)
        self._early: list[bytes] = []  # TLS: decrypted before our handshake task resumed (one loop turn)
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._idle = Deadline(loop, timeout_s=config.idle_timeout_s, on_expiry=self._idle_expired)
        # a slot held by a peer that never sent a whole PDU is freed long before the idle timeout
        self._first_pdu = Deadline(loop, timeout_s=config.first_pdu_timeout_s, on_expiry=self._first_pdu_expired)
        self._pdu = Deadline(loop, timeout_s=config.pdu_timeout_s, on_expiry=self._pdu_expired)
        self._unread = Deadline(loop, timeout_s=config.pdu_timeout_s, on_expiry=self._unread_expired)

    # -- life cycle -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self.peer_address, self.peer = peer_names(transport.get_extra_info("peername"))
        self.local = peer_names(transport.get_extra_info("sockname"))[1]
        if self._inbound:
            refusal = self._server.admit(self)
            if refusal is not None:  # before the first read: the socket is not even being watched yet
                self._server.refused[refusal] += 1
                self._server.peer_log.emit(log.warning, "wan.refused", key=self.peer_address, peer=self.peer,
                                           reason=refusal)
                self._transport = None
                transport.abort()
                return
        else:
            self._server.adopt(self)
        self._admitted = True
        if self._inbound:  # the gateway dialled out itself: the HES may take its time
            self._first_pdu.restart()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            tune_socket(sock, keepalive_s=self._server.config.tcp_keepalive_s,
                        user_timeout_s=self._server.config.tcp_user_timeout_s)
        self._idle.restart()
        if self._server.tls is not None and self._inbound:
            self._tls_pending = True
            transport.pause_reading()  # the TLS layer takes the socket over; nothing reaches us before
            self._server.start_tls(self, transport)
            return
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self._server.peer_log.emit(log.info, "wan.connected", key=self.peer_address, peer=self.peer)

    def tls_ready(self, transport: asyncio.Transport) -> None:
        """The handshake succeeded: the HES showed a certificate from our CA."""
        if not self._admitted:  # lost in the loop turn between handshake and now
            return
        self._tls_pending = False
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.certificate_subject = certificate_subject(transport.get_extra_info("peercert"))
        cipher = transport.get_extra_info("cipher")
        self._server.peer_log.emit(log.info, "wan.connected", key=self.peer_address, peer=self.peer,
                                   tls=cipher[1] if cipher else "?", subject=self.certificate_subject)
        if self._early:
            early, self._early = b"".join(self._early), []
            self.data_received(early)

    def tls_refused(self, reason: str) -> None:
        """The handshake failed: not one byte from this peer was decoded."""
        self._tls_pending = False
        self._server.peer_log.emit(log.warning, "wan.tls_refused", key=self.peer_address, peer=self.peer,
                                   reason=reason)
        self._forget()

    def close(self) -> None:
        """Drop the connection now."""
        transport, self._transport = self._transport, None  # no more reads or writes from here on
        if transport is not None:
            transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted and not self._tls_pending:
            self._server.peer_log.emit(log.info, "wan.disconnected", key=self.peer_address, peer=self.peer,
                                       pdus_in=self.pdus_in, pdus_out=self.pdus_out)
        self._forget()

    def _forget(self) -> None:
        self._transport = None
        self._unfed = None
        self._early = []
        if self._feed_handle is not None:
            self._feed_handle.cancel()
            self._feed_handle = None
        self._idle.cancel()
        self._first_pdu.cancel()
        self._pdu.cancel()
        self._unread.cancel()
        if not self._admitted:
            return
        self._admitted = False
        self._server.release(self)
        if self.pdus_in:  # the router only knows connections that sent it something
            self._server.sink.hes_disconnected(self)

    # -- traffic --------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        if self._tls_pending:  # asyncio delivers what came with the handshake before start_tls returns
            self._early.append(data)
            return
        if self._unfed is not None:  # only if a transport delivers after pause_reading
            data = bytes(self._unfed[self._unfed_offset :]) + data
        self._pdus_this_read = 0
        if len(data) <= FEED_BYTES and not self._write_paused:  # the usual read: decoded at once, not sliced
            self._unfed = None
            self._decode(data)
            return
        self._unfed, self._unfed_offset = memoryview(data), 0
        self._feed()

    def _feed(self) -> None:
        """Decode and route one slice of what was received; come back next turn for the rest."""
        self._feed_handle = None
        unfed = self._unfed
        if self._transport is None or unfed is None or self._write_paused:
            return
        chunk = bytes(unfed[self._unfed_offset : self._unfed_offset + FEED_BYTES])
        self._unfed_offset += len(chunk)
        if self._unfed_offset >= len(unfed):
            self._unfed = None
        self._decode(chunk)

    def _decode(self, chunk: bytes) -> None:
        try:
            pdus = self._decoder.feed(chunk)
        except WrapperError as exc:
            self._cut(CUT_PROTOCOL_ERROR, "wan.protocol_error", error=str(exc))
            return
        if pdus:
            self._pdus_this_read += len(pdus)
            if not self.pdus_in:
                self._first_pdu.cancel()
            self._idle.restart()
            self.pdus_in += len(pdus)
            self._server.pdus_in += len(pdus)
            sink = self._server.sink
            tap = self._server.tap
            for pdu in pdus:
                if self._transport is None:  # cut off while answering an earlier PDU
                    return
                if tap.active:
                    tap.wan(direction=Direction.INBOUND, data=encode(pdu), server_sap=pdu.destination,
                            peer=self.peer, local=self.local)
                try:
                    sink.pdu_from_hes(self, pdu)
                except Exception as exc:  # a defect reached from the WAN: this connection only, one bounded line
                    self._cut(CUT_INTERNAL_ERROR, "wan.internal_error", error=type(exc).__name__,
                              source=pdu.source, destination=pdu.destination, tag=pdu.apdu[:1].hex())
                    return
        if self._unfed is None:  # all that arrived is decoded: is a PDU left half-way?
            if not self._decoder.buffered:
                self._pdu.clear()
            elif self._pdus_this_read:
                self._pdu.restart()  # the partial PDU started in this read
            else:
                self._pdu.start()  # it started earlier and is still not whole: the clock runs on
            if not (self._write_paused or self._flow_paused):
                return  # the usual case: reading, nothing held back
        self._flow()

    def _flow(self) -> None:
        """Read from the HES only when nothing it sent is waiting and it reads its answers."""
        transport = self._transport
        waiting = self._unfed is not None
        if transport is None or not (waiting or self._write_paused or self._flow_paused):
            return  # the usual case: reading, nothing held back
        if transport.is_closing():
            return
        if waiting and not self._write_paused and self._feed_handle is None:
            self._feed_handle = self._loop.call_soon(self._feed)
        if waiting or self._write_paused:
            if transport.is_reading():
                transport.pause_reading()
            self._flow_paused = True
        else:
            if not transport.is_reading():
                transport.resume_reading()
            self._flow_paused = False

    def send(self, pdu: WrapperPdu) -> None:
        """Send a PDU to this HES (dropped if the connection is gone)."""
        transport = self._transport
        if transport is None or transport.is_closing() or self._tls_pending:
            return
        data = encode(pdu)
        transport.write(data)
        if self._server.tap.active:
            self._server.tap.wan(direction=Direction.OUTBOUND, data=data, server_sap=pdu.source, peer=self.peer,
                                 local=self.local)
        self.pdus_out += 1
        self._server.pdus_out += 1
        self._idle.restart()
        if self._write_paused:  # past the high-water mark (far below MAX_UNSENT_BYTES) pause_writing came first
            unsent = transport.get_write_buffer_size()
            if unsent > MAX_UNSENT_BYTES:
                self._cut(CUT_NOT_READING, "wan.not_reading", unsent=unsent)

    def unsent_bytes(self) -> int | None:
        """Bytes written but not yet handed to the kernel; None once the connection is gone."""
        transport = self._transport
        if transport is None or transport.is_closing() or self._tls_pending:
            return None
        return transport.get_write_buffer_size()

    def pause_writing(self) -> None:
        # The HES is not reading its answers: take no new requests from it until it does.
        self._write_paused = True
        self._pdu.clear()  # a half-read PDU now waits on us, not on the HES
        self._unread.start()
        self._flow()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._unread.clear()
        if self._decoder.buffered and self._unfed is None:
            self._pdu.restart()
        self._flow()

    # -- deadlines ------------------------------------------------------------------------------

    def _idle_expired(self) -> None:
        self._cut(CUT_IDLE, "wan.idle_timeout", idle_s=self._server.config.idle_timeout_s)

    def _first_pdu_expired(self) -> None:
        if self._unfed is not None or self._write_paused:  # what it sent is here, waiting on us
            self._first_pdu.restart()
            return
        self._cut(CUT_FIRST_PDU, "wan.first_pdu_timeout", buffered=self._decoder.buffered,
                  first_pdu_timeout_s=self._server.config.first_pdu_timeout_s)

    def _pdu_expired(self) -> None:
        if self._unfed is not None or self._write_paused:  # the rest may be here already, waiting on us
            self._pdu.restart()
            return
        self._cut(CUT_PDU_TIMEOUT, "wan.pdu_timeout", buffered=self._decoder.buffered,
                  pdu_timeout_s=self._server.config.pdu_timeout_s)

    def _unread_expired(self) -> None:
        unsent = self._transport.get_write_buffer_size() if self._transport is not None else 0
        self._cut(CUT_NOT_READING, "wan.not_reading", unsent=unsent)

    def _cut(self, reason: str, event: str, **details: object) -> None:
        if self._transport is None:
            return
        self._server.cut_off[reason] += 1
        self._server.peer_log.emit(log.warning, event, key=self.peer_address, peer=self.peer, **details)
        self.close()
