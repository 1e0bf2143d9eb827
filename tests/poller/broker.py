"""A real Mosquitto broker on a loopback port, and a subscriber that records what it receives."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

START_TIMEOUT_S = 10.0


def mosquitto_binary() -> str:
    """The broker, or a failed test on CI (where .ci/run installs it) and a skip saying why elsewhere."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.access(p, os.X_OK)), None)
    if found is None:
        message = "mosquitto is not installed (apt-get install mosquitto)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Broker:
    """mosquitto on 127.0.0.1:port, persistence off; stop() and start() again on the same port."""

    def __init__(self, directory: Path) -> None:
        self.binary = mosquitto_binary()
        self.port = free_port()
        self.config = directory / "mosquitto.conf"
        self.config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                               "log_dest none\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # ready when it accepts a connection
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("mosquitto did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@dataclass
class Subscriber:
    """Subscribes to everything under a prefix; keeps every message (topic, payload, retained)."""

    port: int
    prefix: str
    messages: list[tuple[str, Any, bool]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _client: mqtt.Client | None = None

    def connect(self) -> None:
        subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-subscriber-{time.monotonic_ns()}")
        client.on_message = self._on_message
        client.on_subscribe = lambda *_args: subscribed.set()
        client.on_connect = lambda c, *_args: c.subscribe(f"{self.prefix}/#", qos=1)
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        if not subscribed.wait(START_TIMEOUT_S):
            raise RuntimeError("subscription not acknowledged")
        self._client = client

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        text = message.payload.decode()
        payload = json.loads(text) if text.startswith("{") else text
        with self._lock:
            self.messages.append((message.topic, payload, bool(message.retain)))

    def snapshot(self) -> list[tuple[str, Any, bool]]:
        with self._lock:
            return list(self.messages)
