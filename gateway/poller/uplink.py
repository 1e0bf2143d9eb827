"""Readings and polling failures to an MQTT broker, buffered in the readings store.

Library: paho-mqtt 2.x, the Eclipse reference client (maintained, MQTT 3.1.1 and 5, automatic
reconnect, resends unacknowledged QoS 1/2 messages after a reconnect). Its network loop runs in
its own thread; its callbacks are handed to our event loop with call_soon_threadsafe.

Topic layout (``P`` = topic_prefix, ``G`` = client id, by default the gateway's logical device name,
``M`` = the meter's logical device name, as text, or in hex when it holds a character MQTT reserves):

    P/G/status              "online" (retained); the broker publishes "offline" (retained, the
                            last will) when the gateway goes away, and the gateway does on a clean stop
    P/G/meters/M/readings   one message per poll: {"gateway", "poll_id", "meter_sap", "meter", "group",
                            "started_at", "finished_at", "outcome", "error", "readings": [{"source",
                            "obis", "captured_at", "value", "type", "scaler", "unit"}, ...]}
    P/G/meters/M/failures   one message per failed poll: the same envelope with "readings": [],
                            "error", "attempts" and "consecutive_failures"

Times are UTC seconds. Delivery is at least once: a poll is marked published only when the broker
acknowledged its message (QoS 1 PUBACK or QoS 2 PUBCOMP); while the broker is away polls pile up in
the store (bounded by its retention) and go out oldest first when it is back. A consumer drops
duplicates by (gateway, poll_id).

One topic per meter for life: the key is the meter's logical device name, its own identity, which
stays when the gateway gives it another SAP or it moves to another line or gateway. The poller
identifies a meter before its first poll, so only failures of a meter never identified lack a
name; they are held in the store and go out under the name once it is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from gateway.poller.config import MqttConfig
from gateway.poller.store import ReadingsStore

log = structlog.get_logger(__name__)

MAX_IN_FLIGHT = 20  # messages sent and not yet acknowledged; the rest wait in the store
STOP_FLUSH_S = 2.0  # on a clean stop: time given to the "offline" status to reach the broker


def meter_topic_name(name: str) -> str:
    """A meter's topic level from its logical device name; never a wildcard or a separator."""
    if name and not any(c in name for c in "/+#\0"):
        return name
    return name.encode().hex().upper()


class MqttUplink:
    """Publishes the store's unpublished polls whenever the broker is reachable."""

    def __init__(self, config: MqttConfig, *, client_id: str, store: ReadingsStore) -> None:
        self.config = config
        self.client_id = client_id
        self._store = store
        self._base = f"{config.topic_prefix}/{client_id}"
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._in_flight: dict[int, int] = {}  # MQTT message id -> poll id
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.connections = 0
        self._log = log.bind(broker=f"{config.host}:{config.port}", client_id=client_id)

    @property
    def status_topic(self) -> str:
        return f"{self._base}/status"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        client.will_set(self.status_topic, "offline", qos=self.config.qos, retain=True)
        client.reconnect_delay_set(min_delay=max(1, round(self.config.reconnect_min_s)),
                                   max_delay=max(1, round(self.config.reconnect_max_s)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.enable_logger(logging.getLogger("paho.mqtt"))  # through structlog, like every daemon line
        client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        client.loop_start()
        self._client = client
        self._task = asyncio.create_task(self._publisher(), name="mqtt-uplink")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        client, self._client = self._client, None
        if client is None:
            return
        if self.connected:
            info = client.publish(self.status_topic, "offline", qos=self.config.qos, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                await asyncio.to_thread(info.wait_for_publish, STOP_FLUSH_S)
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)

    def wake(self) -> None:
        """New polls are in the store."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        return {"broker": f"{self.config.host}:{self.config.port}", "connected": self.connected,
                "published": self.published, "in_flight": len(self._in_flight),
                "buffered": self._store.count_unpublished(), "held_until_identified": self._store.count_held(),
                "connections": self.connections}

    # -- paho's thread -> our loop ------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if not reason.is_failure:
            client.publish(self.status_topic, "online", qos=self.config.qos, retain=True)
            self._call(self._connected_now)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._call(self._disconnected_now, str(reason))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._call(self._acknowledged, mid)

    def _call(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is closing: nothing left to tell
                loop.call_soon_threadsafe(callback, *args)

    # -- on our loop --------------------------------------------------------------------------

    def _connected_now(self) -> None:
        self.connections += 1
        self._connected.set()
        self._wake.set()
        self._log.info("mqtt.connected", buffered=self._store.count_unpublished())

    def _disconnected_now(self, reason: str) -> None:
        if self._connected.is_set():
            self._log.warning("mqtt.disconnected", reason=reason)
        self._connected.clear()

    def _acknowledged(self, mid: int) -> None:
        poll_id = self._in_flight.pop(mid, None)
        if poll_id is not None:
            self._store.mark_published([poll_id])
            self.published += 1
            self._wake.set()

    async def _publisher(self) -> None:
        while True:
            await self._connected.wait()
            room = MAX_IN_FLIGHT - len(self._in_flight)
            batch = self._store.unpublished(limit=room, exclude=list(self._in_flight.values())) if room > 0 else []
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            client = self._client
            assert client is not None
            for poll in batch:
                topic = (f"{self._base}/meters/{meter_topic_name(poll['meter'])}/"
                         f"{'failures' if poll['outcome'] == 'failed' else 'readings'}")
                payload = json.dumps({"gateway": self.client_id, **poll}, separators=(",", ":"))
                info = client.publish(topic, payload, qos=self.config.qos)
                self._in_flight[info.mid] = poll["poll_id"]  # paho keeps it until acknowledged, across reconnects
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    break  # disconnected meanwhile: paho sends it after reconnecting
