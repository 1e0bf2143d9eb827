"""Meter pushes (alarms, notifications) to the HES: accepted from the meter line, stored, forwarded.

A push is taken from a meter medium's unsolicited pushes (on a line: UI, or an I-frame outside
any relayed association), queued durably, then delivered in order to each configured destination: over the
HES connection of the management client once its association with the gateway (SAP 1) is
accepted and authenticated, else over the destination's own outbound TCP connection,
reconnecting with a capped exponential back-off that nothing cuts short (a new push only waits
for it; a subscriber appearing is served at once). The APDU is never opened: ciphered pushes
stay ciphered end to end.

A push leaves the queue only once written to a connection entitled to it. On a subscriber, at
most SUBSCRIBER_BATCH pushes are written at a time, only into an empty send buffer, and the batch
is deleted once that buffer has drained to the kernel; if the connection dies first, the batch
stays queued and is delivered again (at least once: a HES may see a push twice, never lose one
we still held). DLMS notifications are unconfirmed, so what the kernel had accepted when the
connection died is the loss window: at most one batch per connection, no later batch being
written before the previous one drained. Outbound, a batch is deleted once drain() returned.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from gateway.codec import gateway as gateway_pdu
from gateway.codec.wrapper import WrapperPdu, encode
from gateway.config import PushConfig
from gateway.core.pushstore import PushStore, QueuedPush
from gateway.core.session import HesPeer

log = structlog.get_logger(__name__)

BATCH = 64
SUBSCRIBER_BATCH = 8  # pushes written to a subscriber before its buffer must drain: bounds the loss window
CONNECT_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 30.0  # a HES that takes no data for this long is reconnected


class PushForwarder:
    """Delivers one destination's queue, in order, over the best path available."""

    def __init__(self, *, config: PushConfig, store: PushStore,
                 subscriber: Callable[[], HesPeer | None],
                 gateway_address: Callable[[int], tuple[int, bytes] | None] | None = None) -> None:
        self.config = config
        self._store = store
        self._subscriber = subscriber
        # form = "gateway": a meter SAP's (network id, physical device address), for a gateway-response
        self._gateway_address = gateway_address if config.form == "gateway" else None
        self._wake = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._written: tuple[HesPeer, list[QueuedPush]] | None = None  # on a subscriber, not yet drained
        self._retry_at = float("-inf")  # no outbound connection attempt before this (loop time)
        self.delivered = 0
        self.connected = False
        self._log = log.bind(destination=config.name)

    def wake(self) -> None:
        """Something changed: a push was queued, or a subscriber appeared."""
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self.config.reconnect_min_s
        try:
            while True:
                if self._written is not None and not self._written_drained():
                    await self._sleep(self.config.reconnect_min_s)  # the subscriber is slow to read
                    continue
                batch = self._store.pending(self.config.name, limit=BATCH)
                if not batch:
                    await self._sleep(None)
                    continue
                subscriber = self._subscriber() if self.config.deliver_to_subscribed else None
                if subscriber is not None:
                    if not self._write_to(subscriber, batch[:SUBSCRIBER_BATCH]):
                        await self._sleep(self.config.reconnect_min_s)
                    continue
                if not self.config.host:
                    await self._sleep(None)  # only a subscriber can take these
                    continue
                if loop.time() < self._retry_at:  # woken by a push during the back-off: it waits too
                    await self._sleep(self._retry_at - loop.time())
                    continue
                pdus = [self._pdu(p) for p in batch]
                if await self._send_outbound(pdus):
                    self._done(batch, via=f"{self.config.host}:{self.config.port}")
                    backoff = self.config.reconnect_min_s
                else:
                    self._retry_at = loop.time() + backoff
                    backoff = min(backoff * 2, self.config.reconnect_max_s)
        finally:
            self._disconnect()

    def _pdu(self, push: QueuedPush) -> WrapperPdu:
        """SAP form: from the meter's SAP. Gateway form: in a gateway-response from the gateway's own wPort."""
        where = self._gateway_address(push.meter_sap) if self._gateway_address is not None else None
        if where is None:  # SAP form, or a meter removed since: its SAP still says who it was
            return WrapperPdu(source=push.meter_sap, destination=push.client_sap, apdu=push.apdu)
        network_id, address = where
        apdu = gateway_pdu.encode(gateway_pdu.GatewayPdu(network_id=network_id, physical_address=address,
                                                         apdu=push.apdu, response=True))
        return WrapperPdu(source=gateway_pdu.GATEWAY_WPORT, destination=push.client_sap, apdu=apdu)

    def _write_to(self, subscriber: HesPeer, batch: list[QueuedPush]) -> bool:
        """Write a batch into the subscriber's empty send buffer; False when it is gone or still busy."""
        if subscriber.unsent_bytes() != 0:
            return False
        for push in batch:
            subscriber.send(self._pdu(push))
        self._written = (subscriber, batch)
        self._written_drained()
        return True

    def _written_drained(self) -> bool:
        """Settle the batch last written to a subscriber: False while it is still in our send buffer."""
        assert self._written is not None
        subscriber, batch = self._written
        unsent = subscriber.unsent_bytes()
        if unsent:
            return False
        self._written = None
        if unsent is None:  # the connection died first: the batch is still queued, delivered again
            self._log.info("push.redelivery", count=len(batch), via=subscriber.peer)
        else:
            self._done(batch, via=subscriber.peer)
        return True

    def _done(self, batch: list[QueuedPush], *, via: str) -> None:
        self._store.delivered(batch)
        self.delivered += len(batch)
        self._log.info("push.delivered", count=len(batch), via=via)

    async def _sleep(self, seconds: float | None) -> None:
        """Until woken, or ``seconds`` have passed (None: until woken)."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _send_outbound(self, pdus: list[WrapperPdu]) -> bool:
        writer = self._writer
        if writer is None or writer.is_closing():
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    reader, writer = await asyncio.open_connection(self.config.host, self.config.port)
            except (OSError, TimeoutError) as exc:
                self._log.warning("push.connect_failed", error=str(exc) or type(exc).__name__)
                return False
            self._writer = writer
            self.connected = True
            self._reader_task = asyncio.create_task(self._drain_reader(reader))
            self._log.info("push.connected", host=self.config.host, port=self.config.port)
        assert writer is not None
        try:
            writer.write(b"".join(encode(pdu) for pdu in pdus))
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await writer.drain()
        except (OSError, TimeoutError) as exc:
            self._log.warning("push.send_failed", error=str(exc) or type(exc).__name__)
            self._disconnect()
            return False
        return True

    async def _drain_reader(self, reader: asyncio.StreamReader) -> None:
        """The HES may answer on the push connection; we read (and drop) so that EOF is noticed."""
        with contextlib.suppress(OSError):
            while await reader.read(4096):
                pass
        self._disconnect()

    def _disconnect(self) -> None:
        self.connected = False
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reader_task is not None and self._reader_task is not asyncio.current_task():
            self._reader_task.cancel()
            self._reader_task = None
