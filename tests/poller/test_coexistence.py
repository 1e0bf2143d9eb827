"""A HES relays continuous reads to one meter while the gateway polls three others on the same line:
the HES's round trip grows by at most the one polling exchange it may find on the line."""

from __future__ import annotations

import datetime as dt
import statistics
import time
from dataclasses import replace
from pathlib import Path

from gateway.config import GatewayConfig, MeterConfig
from gateway.poller.config import PollGroup
from gateway.sim.bus import SimulatedBus
from tests.integration.rawhes import GET_LDN, PUBLIC_AARQ, RLRQ, RawHes
from tests.poller.conftest import Gateways, MovableClock, polled_line, poller_gateway_config, write_polling_keys
from tests.poller.meters import build_polled_meter, reader_settings

BIT_RATE = 38_400  # emulated line: exchanges take milliseconds, as on a real (faster) modem
READS = 60
RELAYED_SAP = 17
SCHEDULING_S = 0.010  # CPU time on two shared cores (ciphering, asyncio) on top of the airtime


class ExchangeLog:
    """Airtime of every exchange on the emulated line, by meter address (what the bus fed and answered)."""

    def __init__(self, bus: SimulatedBus) -> None:
        self.airtime: dict[int, list[float]] = {}
        original = bus.feed

        def feed(data: bytes) -> bytes:
            answer = original(data)
            if answer and len(data) > 2:
                address = data[3] >> 1 if data[3] & 1 else (data[4] >> 1)  # lower HDLC address: the meter
                self.airtime.setdefault(address, []).append((len(data) + len(answer)) * 10 / BIT_RATE)
            return answer

        bus.feed = feed  # type: ignore[method-assign]


async def _hes_round_trips(gateway_port: int) -> list[float]:
    hes = await RawHes.connect("127.0.0.1", gateway_port)
    try:
        assert (await hes.request(client_sap=16, meter_sap=RELAYED_SAP, apdu=PUBLIC_AARQ)).apdu[0] == 0x61
        times = []
        for _ in range(READS):
            started = time.perf_counter()
            answer = await hes.request(client_sap=16, meter_sap=RELAYED_SAP, apdu=GET_LDN)
            times.append(time.perf_counter() - started)
            assert answer.apdu[0] == 0xC4
        await hes.request(client_sap=16, meter_sap=RELAYED_SAP, apdu=RLRQ)
        return times
    finally:
        await hes.close()


def _config(tmp_path: Path, device: str, *, polling: bool) -> GatewayConfig:
    groups = [PollGroup(name="g", meters=(18, 19, 20), credentials="reader", interval_s=0.01,
                        registers=("1.0.1.8.0.255", "1.0.2.8.0.255"), profiles=("1.0.99.1.0.255",),
                        first_read_s=86400.0)]
    config = poller_gateway_config(tmp_path / ("with" if polling else "without"), links=[("bus0", device)],
                                   meters=[MeterConfig(sap=17 + i, link="bus0", physical_address=17 + i)
                                           for i in range(4)], groups=groups)
    if not polling:
        config = replace(config, poller=replace(config.poller, enabled=False))
    return config


def p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * len(values))]


async def test_polling_adds_at_most_one_exchange_to_relayed_reads(tmp_path: Path, gateways: Gateways) -> None:
    clock = MovableClock(dt.datetime.now(dt.UTC))
    line = polled_line([build_polled_meter(reader_settings(1 + i), clock=clock) for i in range(4)],
                       bit_rate=BIT_RATE)
    exchanges = ExchangeLog(line.bus)
    try:
        (tmp_path / "with").mkdir()
        write_polling_keys(tmp_path / "with" / "polling-keys.toml")
        quiet = await gateways.start(_config(tmp_path, line.pty.slave_path, polling=False))
        alone = await _hes_round_trips(quiet.wan.addresses[0][1])
        await gateways.stop(quiet)
        busy = await gateways.start(_config(tmp_path, line.pty.slave_path, polling=True))
        assert busy.poller is not None
        await busy.poller.wait_for_polls(1, timeout_s=20)  # polling is under way
        polls_before = busy.poller.recorded
        shared = await _hes_round_trips(busy.wan.addresses[0][1])
        polled_meanwhile = busy.poller.recorded - polls_before
        await gateways.stop(busy)
    finally:
        line.close()
    poll_exchange = max(t for address in (18, 19, 20) for t in exchanges.airtime.get(address, []))
    added = p95(shared) - p95(alone)
    print(f"\nHES GET p95 alone {p95(alone) * 1e3:.1f} ms, with polling {p95(shared) * 1e3:.1f} ms "
          f"(median {statistics.median(alone) * 1e3:.1f} / {statistics.median(shared) * 1e3:.1f} ms); "
          f"longest polling exchange {poll_exchange * 1e3:.1f} ms; {polled_meanwhile} polls meanwhile")
    assert polled_meanwhile >= 3  # polling really shared the line during the HES's reads
    assert added <= poll_exchange + SCHEDULING_S
