"""100 misbehaving HES connections at once, while one good HES keeps reading a meter."""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.daemon import Gateway
from tests.integration.conftest import SimLine, gateway_config
from tests.integration.rawhes import GET_LDN, RawHes
from tests.integration.test_relay import associate_and_read_name, ldn_of
from tests.wan.support import log_events

REPOSITORY = Path(__file__).resolve().parents[2]
PDU_TIMEOUT_S = 2.0
IDLE_TIMEOUT_S = 3.0
MISBEHAVING = {"slowloris": 34, "oversized": 33, "silent": 29, "unread": 4}
GOOD_READS = 200


async def test_misbehaving_connections_are_cut_off_while_a_good_hes_reads_on(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway], captured_logs: io.StringIO
) -> None:
    config = gateway_config(sim_line.pty.slave_path)
    wan = replace(config.wan, max_connections=128, max_connections_per_peer=128, max_apdu=4096,
                  pdu_timeout_s=PDU_TIMEOUT_S, idle_timeout_s=IDLE_TIMEOUT_S)
    gateway = gateway_factory(replace(config, wan=wan))
    await gateway.start()
    host, port = gateway.wan.addresses[0]
    loop = asyncio.get_running_loop()

    good = await RawHes.connect(host, port)
    expected_name = await associate_and_read_name(good, meter_sap=17)
    quiet: list[float] = []
    for _ in range(20):  # the good HES's latency before the storm
        started = loop.time()
        await good.request(client_sap=16, meter_sap=17, apdu=GET_LDN)
        quiet.append(loop.time() - started)

    storm = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.wan.storm", host, str(port), "--give-up", "12",
        *[f"--{kind}={count}" for kind, count in MISBEHAVING.items()],
        cwd=REPOSITORY, stdout=asyncio.subprocess.PIPE,
    )
    assert storm.stdout is not None
    assert await asyncio.wait_for(storm.stdout.readline(), 10) == b"connected\n"
    storm_output = asyncio.create_task(storm.stdout.read())
    during: list[float] = []
    while len(during) < GOOD_READS or not storm_output.done():
        started = loop.time()
        answer = await good.request(client_sap=16, meter_sap=17, apdu=GET_LDN, timeout=5.0)
        during.append(loop.time() - started)
        assert ldn_of(answer.apdu) == expected_name
    assert await storm.wait() == 0
    closed_after: dict[str, list[float | None]] = json.loads(await storm_output)

    # Every misbehaving connection was cut off by its own deadline, none by another's.
    assert {kind: len(times) for kind, times in closed_after.items()} == MISBEHAVING
    assert all(t is not None for times in closed_after.values() for t in times), closed_after
    cut = {kind: [float(t or 0) for t in times] for kind, times in closed_after.items()}
    assert max(cut["oversized"]) < 1.0
    assert all(PDU_TIMEOUT_S * 0.95 <= t < PDU_TIMEOUT_S + 1.5 for t in cut["slowloris"])
    assert all(IDLE_TIMEOUT_S * 0.95 <= t < IDLE_TIMEOUT_S + 1.5 for t in cut["silent"])
    assert all(t < PDU_TIMEOUT_S + 3.0 for t in cut["unread"])
    assert gateway.wan.cut_off == {"pdu-timeout": 34, "protocol-error": 33, "idle": 29, "not-reading": 4}
    for event, cut_off in (("wan.pdu_timeout", 34), ("wan.not_reading", 4)):  # logged, at a bounded rate
        lines = log_events(captured_logs, event)
        assert 1 <= len(lines) + sum(line["suppressed_before"] for line in lines) <= cut_off
    assert gateway.wan.refused == {}
    assert len(gateway.wan.connections) == 1  # the good HES, still there
    assert gateway.wan.per_peer == {"127.0.0.1": 1}

    # The good HES never failed a read; its latency, for the record.
    p50, p99 = statistics.median(during), statistics.quantiles(during, n=100)[98]
    print(f"\ngood HES: {len(during)} reads; quiet p50 {statistics.median(quiet) * 1e3:.1f} ms; "
          f"storm p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, max {max(during) * 1e3:.1f} ms")
    for kind, times in cut.items():
        print(f"{kind}: {len(times)} cut off after {min(times):.2f}..{max(times):.2f} s")
    assert max(during) < 1.0
    await good.close()
