"""A firmware image to a neighbourhood of meters: unicast to each, against one broadcast plus unicast gap fill.

    python -m bench.firmware [--meters 100] [--image-kib 64] [--loss 0.02] [--json FILE]

The gateway runs as its own process; the simulated meters (IC 18, broadcast key, a seeded loss
of broadcast frames per meter) run on a pty in this process, which counts every octet that
crosses the line in either direction. Airtime at a bit rate is octets x 10 / bit rate (8N1; no
per-frame turnaround is added, so real PLC figures are higher for both methods alike). The
head-end (tests/firmware_hes.py) does the campaign: (a) one meter's whole image by unicast
through the relay, measured, times the number of meters; (b) every meter initiated by unicast,
each block broadcast once through the gateway's all-station wPort, each meter's missing blocks
filled by unicast, then verify and activate, all measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import gateway_process
from gateway.log import configure
from gateway.sim.bus import SimulatedBus
from gateway.sim.pty import open_pty
from tests.cosem.client import Keys
from tests.firmware_channels import GatewayBroadcaster, GatewayChannel
from tests.firmware_hes import BroadcastSender, CampaignMeter, FirmwareImage, MeterClient, MeterReport, run_campaign
from tests.sim.firmware_fleet import AUTHENTICATION_KEY, BROADCAST_KEYS, HES_TITLE, firmware_meters, unicast_key

PORT = 24062
BIT_RATES = (2400, 20_000)


@dataclass
class LineOctets:
    """Octets the gateway wrote to the line and the meters wrote back, in all and by campaign step."""

    to_meters: int = 0
    from_meters: int = 0
    phase: str = "setup"
    by_phase: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.to_meters + self.from_meters

    def enter(self, phase: str) -> None:
        """The head-end's hook: octets from now on go to ``phase``."""
        self.phase = phase

    def count(self, octets: int) -> None:
        self.by_phase[self.phase] = self.by_phase.get(self.phase, 0) + octets


def count_octets(bus: SimulatedBus) -> LineOctets:
    octets = LineOctets()
    feed = bus.feed

    def counting(data: bytes) -> bytes:
        octets.to_meters += len(data)
        answer = feed(data)
        octets.from_meters += len(answer)
        octets.count(len(data) + len(answer))
        return answer

    bus.feed = counting  # type: ignore[method-assign]
    return octets


def campaign_meters(sap_first: int, count: int, *, first_serial: int = 1) -> list[CampaignMeter]:
    return [CampaignMeter(f"sap-{sap_first + index}", MeterClient.over(
        GatewayChannel("127.0.0.1", PORT, meter_sap=sap_first + index),
        Keys(block_cipher_key=unicast_key(first_serial + index), authentication_key=AUTHENTICATION_KEY,
             system_title=HES_TITLE)))
        for index in range(count)]


async def measure(*, meters: int, image: FirmwareImage, loss: float) -> dict[str, object]:
    pty = open_pty()
    fleet = firmware_meters(meters, loss=loss)
    bus = SimulatedBus(meters=fleet, seed=2026)
    bus.attach(pty.master_fd)
    octets = count_octets(bus)
    results: dict[str, object] = {"meters": meters, "image_bytes": len(image.data), "loss": loss}
    try:
        with gateway_process(pty.slave_path, meters, PORT):
            # (a) one meter's whole image by unicast: a broadcaster that sends nothing leaves every block missing
            started = time.monotonic()
            (one,) = await asyncio.to_thread(run_campaign, campaign_meters(17, 1), image,
                                             sender=BroadcastSender(BROADCAST_KEYS), broadcaster=lambda apdu: None)
            unicast_wall = time.monotonic() - started
            check(one, image)
            unicast_octets = octets.total
            # (b) the others: broadcast once, then fill gaps by unicast (meter 17 is done; it ignores the broadcast)
            before = octets.total
            octets.by_phase.clear()
            broadcaster = await asyncio.to_thread(GatewayBroadcaster, "127.0.0.1", PORT)
            started = time.monotonic()
            reports = await asyncio.to_thread(run_campaign, campaign_meters(18, meters - 1, first_serial=2), image,
                                              sender=BroadcastSender(BROADCAST_KEYS), broadcaster=broadcaster,
                                              phase=octets.enter)
            broadcast_wall = time.monotonic() - started
            broadcaster.channel.close()
            for report in reports:
                check(report, image)
            broadcast_octets = octets.total - before
    finally:
        bus.detach()
        pty.close()
    unicast_blocks = sum(r.unicast_blocks for r in reports)
    results["b_breakdown"] = dict(sorted(octets.by_phase.items(), key=lambda item: -item[1]))
    results.update(
        blocks=len(broadcaster.notifications), gap_blocks=unicast_blocks, meters_in_b=len(reports),
        one_meter_unicast_octets=unicast_octets, one_meter_unicast_wall_s=round(unicast_wall, 2),
        broadcast_campaign_octets=broadcast_octets, broadcast_campaign_wall_s=round(broadcast_wall, 2),
    )
    scale = len(reports)  # (b) reached this many meters: (a) is one meter's unicast times as many
    results["airtime"] = {
        str(rate): {"a_unicast_each_s": round(unicast_octets * scale * 10 / rate, 1),
                    "b_broadcast_and_fill_s": round(broadcast_octets * 10 / rate, 1),
                    "one_meter_unicast_s": round(unicast_octets * 10 / rate, 1)}
        for rate in BIT_RATES}
    results["b_over_one_meter_unicast"] = round(broadcast_octets / unicast_octets, 2)
    results["a_over_b"] = round(unicast_octets * scale / broadcast_octets, 1)
    return results


def check(report: MeterReport, image: FirmwareImage) -> None:
    if report.error is not None or not report.activated or report.activated_sha256 != image.sha256:
        raise RuntimeError(f"campaign failed on {report.name}: {report}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--image-kib", type=int, default=64)
    parser.add_argument("--loss", type=float, default=0.02, help="broadcast frames each meter misses")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configure(level="warning", fmt="console")  # the head-end tool's per-meter lines stay out of the table
    image = FirmwareImage(identifier=b"BENCH-FW-1", data=random.Random(7).randbytes(args.image_kib * 1024))
    result = asyncio.run(measure(meters=args.meters, image=image, loss=args.loss))
    reached = result["meters_in_b"]
    print(f"{args.image_kib} KiB image, {result['blocks']} blocks broadcast, {args.loss:.0%} loss per meter; "
          f"(b) reached {reached} meters and filled {result['gap_blocks']} blocks by unicast\n")
    print("| method | octets on the line | airtime at 2,400 bit/s | airtime at 20 kbit/s | wall time here |")
    print("|---|---:|---:|---:|---:|")
    airtime = result["airtime"]
    assert isinstance(airtime, dict)
    one, many = result["one_meter_unicast_octets"], result["broadcast_campaign_octets"]
    assert isinstance(one, int) and isinstance(many, int) and isinstance(reached, int)
    print(f"| unicast, one meter (measured) | {one:,} | {airtime['2400']['one_meter_unicast_s']:,} s "
          f"| {airtime['20000']['one_meter_unicast_s']:,} s | {result['one_meter_unicast_wall_s']} s |")
    print(f"| (a) unicast to each of {reached} meters | {one * reached:,} | {airtime['2400']['a_unicast_each_s']:,} s "
          f"| {airtime['20000']['a_unicast_each_s']:,} s | ({reached} x the line above) |")
    print(f"| (b) broadcast + unicast gap fill, {reached} meters | {many:,} "
          f"| {airtime['2400']['b_broadcast_and_fill_s']:,} s | {airtime['20000']['b_broadcast_and_fill_s']:,} s "
          f"| {result['broadcast_campaign_wall_s']} s |")
    print(f"\n(b) / one meter's unicast: {result['b_over_one_meter_unicast']} (goal <= 1.3); "
          f"(a) / (b): {result['a_over_b']} (goal >= 50)")
    breakdown = result["b_breakdown"]
    assert isinstance(breakdown, dict)
    print(f"\nwhere (b)'s {many:,} octets went:\n")
    print("| step | octets | share of (b) | per meter | vs one meter's unicast |")
    print("|---|---:|---:|---:|---:|")
    for step, count in breakdown.items():
        print(f"| {step} | {count:,} | {count / many:.1%} | {count / reached:,.0f} | {count / one:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
