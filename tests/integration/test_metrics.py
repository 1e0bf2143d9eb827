"""A Prometheus scrape of a running gateway: the documented metrics, with values that move when traffic flows."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.cli.client import call
from gateway.config import GatewayConfig, MetricsConfig
from gateway.daemon import Gateway
from tests.integration.conftest import SimLine, gateway_config
from tests.integration.rawhes import GET_LDN, PUBLIC_AARQ, RLRQ, RawHes

README = Path(__file__).parents[2] / "README.md"


async def http_get(address: tuple[str, int], path: str) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 10.0)
    writer.close()
    head, _, body = answer.decode().partition("\r\n\r\n")
    return head.splitlines()[0], body


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def documented_metrics() -> set[str]:
    section = README.read_text().split("### Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(dlms_gateway_[a-z_]+)`", section))


async def test_a_scrape_has_every_documented_metric_and_counts_a_read(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    config = gateway_config(sim_line.pty.slave_path)
    gw = gateway_factory(replace(config, metrics=MetricsConfig(listen="127.0.0.1", port=0)))
    await gw.start()
    assert gw.metrics is not None and gw.metrics.address is not None
    status, body = await http_get(gw.metrics.address, "/metrics")
    assert status == "HTTP/1.1 200 OK"
    before = samples(body)
    families = {family.name for family in text_string_to_metric_families(body)}
    polling = {"dlms_gateway_polls", "dlms_gateway_polling_failing_meters", "dlms_gateway_mqtt_connected",
               "dlms_gateway_mqtt_buffered"}
    pair = {"dlms_gateway_replication_sequence", "dlms_gateway_replication_change_age_seconds"}
    # what the README promises is there (polling is off; no standby pair)
    assert documented_metrics() - families == polling | pair
    assert families - documented_metrics() == set()  # and nothing undocumented

    hes = await RawHes.connect(*gw.wan.addresses[0])
    for apdu in (PUBLIC_AARQ, GET_LDN, RLRQ):
        await hes.request(client_sap=16, meter_sap=17, apdu=apdu)
    _, body = await http_get(gw.metrics.address, "/metrics")
    after = samples(body)
    line = (("line", "bus0"),)
    assert after[("dlms_gateway_wan_pdus_total", (("direction", "in"),))] == \
        before[("dlms_gateway_wan_pdus_total", (("direction", "in"),))] + 3
    assert after[("dlms_gateway_wan_connections", ())] == 1
    exchanges = after[("dlms_gateway_line_exchanges_total", line)] - before[("dlms_gateway_line_exchanges_total", line)]
    assert exchanges >= 4  # SNRM, AARQ, GET, RLRQ (and DISC)
    assert after[("dlms_gateway_line_frames_total", (("direction", "out"), *line))] >= exchanges
    assert 0 < after[("dlms_gateway_line_busy_ratio", line)] <= 1
    assert after[("dlms_gateway_line_open", line)] == 1
    assert after[("dlms_gateway_meters", (("state", "online"),))] >= 1

    assert gw.control is not None
    status_json = await asyncio.to_thread(call, gw.control.path, "status")  # the same numbers, as `status --json`
    assert status_json["wan"]["pdus_in"] == after[("dlms_gateway_wan_pdus_total", (("direction", "in"),))]
    assert status_json["links"][0]["exchanges"] == after[("dlms_gateway_line_exchanges_total", line)]
    await hes.close()


async def test_only_get_metrics_is_served_and_it_is_off_by_default(
    sim_line: SimLine, gateway_factory: Callable[[GatewayConfig], Gateway]
) -> None:
    config = gateway_config(sim_line.pty.slave_path)
    off = gateway_factory(config)
    await off.start()
    assert off.metrics is None
    gw = gateway_factory(replace(config, metrics=MetricsConfig(listen="127.0.0.1", port=0),
                                 paths=replace(config.paths, runtime_directory=config.paths.runtime_directory + "2",
                                               state_directory=config.paths.state_directory + "2")))
    await gw.start()
    assert gw.metrics is not None and gw.metrics.address is not None
    status, _ = await http_get(gw.metrics.address, "/")
    assert status == "HTTP/1.1 404 Not Found"
    reader, writer = await asyncio.open_connection(*gw.metrics.address)
    writer.write(b"GET /metrics HTTP/1.1\r\n" + b"X-Padding: " + b"x" * 10000 + b"\r\n\r\n")
    assert await asyncio.wait_for(reader.read(), 10.0) == b""  # an oversized request is closed, unanswered
    writer.close()
    assert gw.metrics.scrapes == 0


def test_polling_metrics_follow_the_poller_status() -> None:
    from gateway.metrics import metrics_from  # noqa: PLC0415

    polling = {"state": "running", "polls_ok": 7, "polls_partial": 1, "polls_failed": 2, "failing_meters": [18, 19],
               "uplink": {"connected": False, "buffered": 42}}
    status = {"uptime_s": 1.0, "wan": {"pdus_in": 0, "pdus_out": 0, "peers": [], "refused": {}, "cut_off": {}},
              "links": [], "sessions": 0, "rejections": 0, "meters": {}, "worker_restarts": {},
              "push_queue": {"depth": 0, "dropped": 0, "unrouted": 0, "destinations": []},
              "push_registrations": {"registered": 0, "refused": {}}, "polling": polling,
              "standby": {"role": "primary", "paired": False}}
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in metrics_from(status) for s in m.samples}
    assert values[("dlms_gateway_polls_total", (("outcome", "failed"),))] == 2
    assert values[("dlms_gateway_polls_total", (("outcome", "ok"),))] == 7
    assert values[("dlms_gateway_polling_failing_meters", ())] == 2
    assert values[("dlms_gateway_mqtt_connected", ())] == 0
    assert values[("dlms_gateway_mqtt_buffered", ())] == 42
