"""A firmware image to a neighbourhood of meters on a simulated PLC medium: unicast to each, against broadcast rounds.

    python -m bench.firmware [--meters 100] [--image-kib 64] [--loss 0.02] [--time-scale 100]
                             [--profiles sfsk,g3] [--models per-meter,shared] [--json FILE]

The gateway runs as its own process; the simulated meters (IC 18 and the image activation
schedule, IC 22, broadcast key) sit behind gateway/sim/medium.py in this process: one half-duplex
timeline at the profile's bit rate (sfsk 2,400 bit/s, 50 ms latency, 10 ms turnaround; g3
20 kbit/s, 100 ms, 10 ms). Airtime is the medium's own count (octets x 10 / bit rate per frame,
lost ones included); medium time is the medium's clock from the first frame of a method to its
end (airtime + latency + turnaround at the nominal rate, plus the gateway's, the head-end's and
HDLC's real reaction times and timeouts); wall time is this machine's, shortened by the time
scale (deliveries --time-scale times sooner; airtime and medium time are not scaled).

Two loss models, both with --loss:
  per-meter  each meter misses a broadcast frame independently (the issue's "2 % block loss per
             meter"); unicast frames are not lost. With 100 meters a block reaches every meter with
             probability 0.98^100 = 13 %: ~87 % of the blocks need a second transmission, and
             ~1 + 0.87 + 0.04 = 1.9 transmissions per block are needed before anything is left to
             unicast. So (b) >= ~1.9 x one broadcast pass, which alone is ~0.8 x one meter's unicast:
             (b) / one meter cannot reach 1.3 under this model, whatever the head-end does.
  shared     every frame on the medium (broadcast or unicast, either way) is lost with that
             probability, for everyone at once: HDLC retransmits unicast frames, a lost broadcast
             block is missed by all meters.

Methods: (a) one meter's whole image by standard confirmed block transfer through the relay
(the same block size), measured, times the number of meters; (b) the other meters in broadcast
rounds (tests/firmware_rounds.py): probe one meter, broadcast initiate and every block, sample
statuses, repair by rebroadcast as cost decides, broadcast the activation time (IC 22), then one
association per meter to confirm the activated image's hash (and send its residue by unicast).
Associations end, in (a) and (b) alike, by the head-end hanging up: the gateway's HDLC DISC releases
the association (Green Book: the AA goes with its supporting layer), no RLRQ/RLRE.
The meters' clock is moved to the activation time as soon as the last broadcast has left: the
waiting itself is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import fcntl
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import gateway_process
from gateway.log import configure
from gateway.sim.bus import SimulatedBus
from gateway.sim.medium import MediumSettings, SimulatedMedium
from gateway.sim.pty import PtyPair, open_pty
from tests.cosem.client import Keys
from tests.firmware_channels import GatewayBroadcaster, GatewayChannel
from tests.firmware_hes import (
    BroadcastSender,
    CampaignError,
    CampaignMeter,
    FirmwareImage,
    MeterClient,
    MeterReport,
    run_campaign,
)
from tests.firmware_rounds import RoundsPlan, run_broadcast_campaign
from tests.sim.firmware_fleet import (
    AUTHENTICATION_KEY,
    BROADCAST_KEYS,
    HES_TITLE,
    NOW,
    FleetClock,
    firmware_meters,
    unicast_key,
)

PORT = 24062
LOG_FILE = Path("/tmp/bench-firmware-gateway.log")  # the gateway's warnings, for a run that goes wrong
MODELS = ("per-meter", "shared")


@dataclass
class Phases:
    """Airtime and octets on the medium, by the head-end's current step."""

    label: str = "setup"
    airtime: dict[str, float] = field(default_factory=dict)
    octets: dict[str, int] = field(default_factory=dict)

    def enter(self, label: str) -> None:
        self.label = label

    def frame(self, octets: int, airtime: float) -> None:
        self.airtime[self.label] = self.airtime.get(self.label, 0.0) + airtime
        self.octets[self.label] = self.octets.get(self.label, 0) + octets


@dataclass
class Measured:
    """One method's cost on the medium."""

    frames: int
    octets: int
    airtime_s: float
    medium_s: float
    wall_s: float


class Meter:
    """The medium's counters, read before and after a method."""

    def __init__(self, medium: SimulatedMedium, phases: Phases) -> None:
        self.medium, self.phases = medium, phases

    def snapshot(self) -> tuple[int, int, float, float, float]:
        figures = self.medium.figures
        return (figures.frames, sum(self.phases.octets.values()), figures.airtime_s, self.medium.now(),
                time.monotonic())

    def since(self, before: tuple[int, int, float, float, float]) -> Measured:
        after = self.snapshot()
        return Measured(after[0] - before[0], after[1] - before[1], after[2] - before[2], after[3] - before[3],
                        after[4] - before[4])


def campaign_meters(sap_first: int, count: int, *, first_serial: int = 1) -> list[CampaignMeter]:
    """Clients of the meters at SAPs from ``sap_first``; each association ends with the HDLC disconnect (no RLRQ)."""
    meters = [CampaignMeter(f"sap-{sap_first + index}", MeterClient.over(
        GatewayChannel("127.0.0.1", PORT, meter_sap=sap_first + index),
        Keys(block_cipher_key=unicast_key(first_serial + index), authentication_key=AUTHENTICATION_KEY,
             system_title=HES_TITLE)))
        for index in range(count)]
    for meter in meters:
        meter.client.release_first = False  # (a) and (b) alike: the gateway's DISC after the HES hangs up releases
    return meters


CONTESTED: list[PtyPair] = []  # ptys another process locked: kept open so that we are not handed them again


class LineUnavailableError(RuntimeError):
    """The gateway never got its line (another process on this machine locked the pty)."""


def lockable_pty() -> PtyPair:
    """A pty whose slave nobody else holds locked (another gateway here may still be reopening a stale path)."""
    for _ in range(20):
        pty = open_pty()
        probe = os.open(pty.slave_path, os.O_RDWR | os.O_NOCTTY)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(probe, fcntl.LOCK_UN)
            return pty
        except OSError:
            CONTESTED.append(pty)
        finally:
            os.close(probe)
    raise LineUnavailableError("no pty free of others' locks")


async def measure(*, profile: str, model: str, meters: int, image: FirmwareImage, loss: float,
                  time_scale: float) -> dict[str, object]:
    """One profile and loss model, on a fresh pty and gateway (another one if someone takes the pty first)."""
    for _ in range(3):
        pty = lockable_pty()
        try:
            result = await measure_on(pty, profile=profile, model=model, meters=meters, image=image, loss=loss,
                                      time_scale=time_scale)
        except LineUnavailableError:
            CONTESTED.append(pty)  # kept open: the next pty gets another number
            continue
        except BaseException:
            pty.close()
            raise
        pty.close()
        return result
    raise LineUnavailableError("the gateway never got a line")


async def measure_on(pty: PtyPair, *, profile: str, model: str, meters: int, image: FirmwareImage, loss: float,
                     time_scale: float) -> dict[str, object]:
    clock = FleetClock()
    fleet = firmware_meters(meters, loss=loss if model == "per-meter" else 0.0, clock=clock)
    settings = MediumSettings.profile(profile, frame_loss=loss if model == "shared" else 0.0, seed=2026,
                                      time_scale=time_scale)
    holder: list[SimulatedMedium] = []
    bus = SimulatedBus(meters=fleet, seed=2026, clock=lambda: holder[0].now())  # noqa: PLW0108 (not built yet)
    medium = SimulatedMedium(bus, settings)
    holder.append(medium)
    phases = Phases()
    medium.on_frame = phases.frame
    medium.attach(pty.master_fd)
    counters = Meter(medium, phases)
    try:
        with gateway_process(pty.slave_path, meters, PORT, log_file=LOG_FILE):
            first = campaign_meters(17, 1)
            await asyncio.to_thread(warm_up, first[0])
            # (a) one meter's whole image by unicast: a broadcaster that sends nothing leaves every block missing
            before = counters.snapshot()
            (one,) = await asyncio.to_thread(run_campaign, first, image,
                                             sender=BroadcastSender(BROADCAST_KEYS), broadcaster=lambda apdu: None)
            unicast = counters.since(before)
            check(one, image)
            # (b) the others in broadcast rounds
            phases.airtime.clear()
            phases.octets.clear()
            broadcaster = await asyncio.to_thread(GatewayBroadcaster, "127.0.0.1", PORT)
            before = counters.snapshot()
            plan = RoundsPlan(activate_at=NOW + dt.timedelta(hours=1), wait_until=clock.wait_until)
            reports, summary = await asyncio.to_thread(
                run_broadcast_campaign, campaign_meters(18, meters - 1, first_serial=2), image,
                sender=BroadcastSender(BROADCAST_KEYS), broadcaster=broadcaster,
                plan=plan, phase=phases.enter)
            rounds = counters.since(before)
            broadcaster.channel.close()
            for report in reports:
                check(report, image)
    finally:
        medium.detach()
    reached = len(reports)
    return {
        "profile": profile, "bit_rate": settings.bit_rate, "model": model, "loss": loss, "meters_in_b": reached,
        "time_scale": time_scale, "one_meter": vars(unicast), "b": vars(rounds),
        "a_airtime_s": unicast.airtime_s * reached, "a_medium_s": unicast.medium_s * reached,
        "b_over_one_airtime": rounds.airtime_s / unicast.airtime_s,
        "a_over_b_airtime": unicast.airtime_s * reached / rounds.airtime_s,
        "b_over_one_medium": rounds.medium_s / unicast.medium_s,
        "a_over_b_medium": unicast.medium_s * reached / rounds.medium_s,
        "broadcast_blocks": summary.broadcast_blocks, "rounds": summary.rounds, "sessions": summary.sessions,
        "unicast_blocks": sum(r.unicast_blocks for r in reports),
        "unicast_activations": sum(r.unicast_activate for r in reports),
        "medium_lost_frames": medium.figures.lost,
        "b_airtime_by_step": dict(sorted(phases.airtime.items(), key=lambda item: -item[1])),
        "b_octets_by_step": phases.octets,
    }


def warm_up(meter: CampaignMeter) -> None:
    """One association with the meter once the gateway has its line open (its WAN may listen a moment earlier).

    The same client as the campaign's: its invocation counter goes on (a meter refuses a replayed one).
    """
    for _ in range(120):
        try:
            meter.client.open()
            meter.client.close()
            return
        except (CampaignError, ConnectionError):
            time.sleep(0.25)
    raise LineUnavailableError("the gateway never relayed an association")


def check(report: MeterReport, image: FirmwareImage) -> None:
    if report.error is not None or not report.activated or report.activated_sha256 != image.sha256:
        raise RuntimeError(f"campaign failed on {report.name}: {report}")


def print_run(result: dict[str, object]) -> None:
    one, b = result["one_meter"], result["b"]
    assert isinstance(one, dict) and isinstance(b, dict)
    reached = result["meters_in_b"]
    print(f"\n### {result['profile']} ({result['bit_rate']:,} bit/s), loss model {result['model']} "
          f"({result['loss']:.0%}), time scale {result['time_scale']:g}\n")
    print(f"(b): {result['broadcast_blocks']} blocks broadcast; repair rounds: {'; '.join(result['rounds'])}; "  # type: ignore[arg-type]
          f"{result['sessions']} associations; {result['unicast_blocks']} blocks and "
          f"{result['unicast_activations']} activations by unicast; {result['medium_lost_frames']} frames lost "
          "on the medium in all\n")
    print("| method | frames | octets | airtime | medium time | wall time |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| unicast, one meter (measured) | {one['frames']:,} | {one['octets']:,} | {one['airtime_s']:,.1f} s "
          f"| {one['medium_s']:,.1f} s | {one['wall_s']:,.1f} s |")
    print(f"| (a) unicast to each of {reached} meters | {one['frames'] * reached:,} | {one['octets'] * reached:,} "
          f"| {result['a_airtime_s']:,.0f} s | {result['a_medium_s']:,.0f} s | ({reached} x the line above) |")
    print(f"| (b) broadcast rounds, {reached} meters | {b['frames']:,} | {b['octets']:,} | {b['airtime_s']:,.1f} s "
          f"| {b['medium_s']:,.1f} s | {b['wall_s']:,.1f} s |")
    print(f"\nairtime: (b) / one meter = {result['b_over_one_airtime']:.2f} (goal <= 1.3), "
          f"(a) / (b) = {result['a_over_b_airtime']:.1f} (goal >= 50); "
          f"medium time: (b) / one meter = {result['b_over_one_medium']:.2f}, "
          f"(a) / (b) = {result['a_over_b_medium']:.1f}\n")
    steps, octets = result["b_airtime_by_step"], result["b_octets_by_step"]
    assert isinstance(steps, dict) and isinstance(octets, dict)
    if result["model"] == "per-meter":
        loss, meters = result["loss"], result["meters_in_b"]
        assert isinstance(loss, float) and isinstance(meters, int)
        sends = transmissions_per_block(loss=loss, meters=meters)
        one_pass = steps.get("broadcast initiate + blocks", 0.0) / one["airtime_s"]
        print(f"bound: with {loss:.0%} lost per meter independently, a block needs {sends:.2f} broadcasts on "
              f"average before all {meters} meters have it; at {one_pass:.2f} x one meter's unicast per pass, "
              f"the blocks alone cost (b) >= {sends * one_pass:.2f} x one meter, (a) / (b) <= "
              f"{meters / (sends * one_pass):.0f}, before any association\n")
    print("| (b) step | octets | airtime | share of (b) | x one meter's unicast |")
    print("|---|---:|---:|---:|---:|")
    for step, airtime in steps.items():
        print(f"| {step} | {octets[step]:,} | {airtime:,.1f} s | {airtime / b['airtime_s']:.1%} "
              f"| {airtime / one['airtime_s']:.3f} |")


def transmissions_per_block(*, loss: float, meters: int) -> float:
    """Expected broadcasts of one block until every meter has it, each missing each copy independently."""
    return 1.0 + sum(1.0 - (1.0 - loss**sent) ** meters for sent in range(1, 20))


async def run_all(args: argparse.Namespace, image: FirmwareImage) -> list[dict[str, object]]:
    results = []
    for profile in args.profiles.split(","):
        for model in args.models.split(","):
            result = await measure(profile=profile, model=model, meters=args.meters, image=image, loss=args.loss,
                                   time_scale=args.time_scale)
            print_run(result)
            results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--image-kib", type=int, default=64)
    parser.add_argument("--loss", type=float, default=0.02)
    parser.add_argument("--time-scale", type=float, default=100.0)
    parser.add_argument("--profiles", default="sfsk,g3")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configure(level="warning", fmt="console")  # the head-end tool's per-meter lines stay out of the table
    image = FirmwareImage(identifier=b"BENCH-FW-1", data=random.Random(7).randbytes(args.image_kib * 1024))
    print(f"{args.image_kib} KiB image, {args.meters} meters: one by unicast (a), the other "
          f"{args.meters - 1} in broadcast rounds (b)")
    LOG_FILE.unlink(missing_ok=True)
    results = asyncio.run(run_all(args, image))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
