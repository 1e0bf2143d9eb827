"""Every line of a daemon that logs JSON is JSON: the standard library's loggers (asyncio's
warnings, paho's messages) go through structlog too, at the configured level."""

from __future__ import annotations

import json
import subprocess
import sys

# A process configured as `dlms-gateway run` configures itself (format json), then asyncio warns about
# writes to a lost connection and paho connects to a listening socket; nothing else writes to stdout.
PROGRAM = """
import asyncio, logging, socket
from dataclasses import replace
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from gateway.config import GatewayConfig, LogConfig
from gateway.log import configure

config = replace(GatewayConfig(), log=LogConfig(level="debug"))
configure(level=config.log.level, fmt=config.log.format)

async def lost_connection() -> None:
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    writer.transport.abort()
    for _ in range(6):  # asyncio warns from the fifth write after the loss
        writer.write(b"x")
    server.close()
    await server.wait_closed()

asyncio.run(lost_connection())
listener = socket.create_server(("127.0.0.1", 0))
client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="log-test")
client.enable_logger(logging.getLogger("paho.mqtt"))
client.connect("127.0.0.1", listener.getsockname()[1])
client.socket().close()
listener.close()
logging.getLogger("gateway.test").log(5, "below every level")
"""


def test_stdlib_logging_from_asyncio_and_paho_is_json_in_a_daemon_configured_process() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=30, check=True)
    lines = done.stdout.splitlines()
    events = [json.loads(line) for line in lines]  # every line: one JSON object
    warnings = [e for e in events if e["event"] == "socket.send() raised exception."]
    assert warnings and all(e["logger"] == "asyncio" and e["level"] == "warning" and e["timestamp"]
                            for e in warnings)
    assert any(e["logger"] == "paho.mqtt" and e["event"].startswith("Sending CONNECT") and e["level"] == "debug"
               for e in events)
    assert not any(e["event"] == "below every level" for e in events)
    assert done.stderr == ""
