"""A head-end's firmware campaign in broadcast rounds (test and bench tool): as little per meter as it can.

    1. probe one meter (unicast): block size and transfer enabled, in one GET-with-list
    2. broadcast (broadcast key): image_transfer_initiate (twice: a lost initiate loses every block)
       and every block once
    3. repair rounds: read the blocks status of a few meters (one association, one GET-with-list
       each), decide how to repair by cost, rebroadcast; see ``decide`` below
    4. broadcast the activation at a set time: an unconfirmed SET of the image activation schedule's
       execution_time (IC 22, 0.0.15.0.2.255), twice; wait for that time
    5. confirm per meter, end to end (one association, one GET-with-list: image_transfer_status and
       image_to_activate_info): activated with the image's SHA-256 -> done; otherwise, in the same
       association, read the blocks status, send what is missing (confirmed ACTIONs), image_activate
       (which verifies first, Blue Book) and read again

So a meter costs one association (the confirmation), or two if its status was sampled, or three
for the probed one. ``decide``: after a sample of m meters, ``q`` = the share of blocks each
sampled meter missed that the meters before it had not (the independent, per-meter part of the
loss; a loss shared by every meter shows in the first and never again). For the R unsampled
meters it weighs, in octets on the line:

    read every status   R x S + (|U| + (n - |U|)(1 - (1 - q)^R)) x B
    rebroadcast all     n x B
    rebroadcast U only  |U| x B + (n - |U|) q R x C      (the rest by unicast in step 5)

(n blocks, U = blocks a sampled meter misses, B = a broadcast block's frame, S = a status session,
C = a confirmed unicast block) and takes the cheapest. Shared losses (q ~ 0) lead to "U only" and
another round; independent ones at 2 % and 100 meters (a block reaches every meter with probability
0.98^100 = 13 %) lead to "all": whatever is chosen, ~1.9 transmissions per block are needed before
the unicast residue, so broadcast alone costs ~1.9 x one pass.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from gateway.codec.axdr import AxdrError, Data, flags_of
from gateway.codec.hdlc import encode_broadcast
from gateway.cosem.activation_schedule import EXECUTION_TIME, IMAGE_ACTIVATION_SCHEDULE, execution_time
from gateway.cosem.image_transfer import ACTIVATE, BLOCK_TRANSFER, INITIATE, ImageTransferStatus
from tests.firmware_hes import (
    BLOCK_SIZE,
    BLOCKS_STATUS,
    TO_ACTIVATE,
    TRANSFER_ENABLED,
    TRANSFER_STATUS,
    Broadcaster,
    BroadcastSender,
    CampaignError,
    CampaignMeter,
    FirmwareImage,
    MeterReport,
    PhaseHook,
    block_parameters,
)

log = structlog.get_logger("firmware_rounds")
T = TypeVar("T")
ASSOCIATION = "association (open, HLS, release)"

SINGLE_ACTION_SCHEDULE_CLASS = 22
INITIATE_COPIES = 2  # a meter that misses the initiate refuses every block: cheap insurance
ACTIVATION_COPIES = 2  # a meter that misses it costs an activate by unicast in step 5
MAX_REPAIR_ROUNDS = 3
TRANSFERRING = (ImageTransferStatus.INITIATED, ImageTransferStatus.VERIFICATION_FAILED)


@dataclass(frozen=True, slots=True)
class LineCosts:
    """What the head-end expects steps to cost in octets on the line (both ways, HDLC included).

    Defaults: this simulated line's figures from bench/firmware.py's breakdown (HLS-GMAC, suite 0,
    64-octet blocks): an association with one GET-with-list and its release; a confirmed block.
    """

    status_session: int = 800
    unicast_block: int = 170


@dataclass(frozen=True, slots=True)
class RoundsPlan:
    """How the campaign runs: the activation time, how to wait for it, the sample, the costs."""

    activate_at: datetime.datetime
    wait_until: Callable[[datetime.datetime], None]  # the head-end waits until the meters' clocks pass it
    sample: int = 5
    costs: LineCosts = field(default_factory=LineCosts)


@dataclass
class CampaignSummary:
    """What the rounds did, for a test or a bench to print."""

    block_size: int = 0
    broadcast_blocks: int = 0
    rounds: list[str] = field(default_factory=list)  # per repair round: decision and blocks rebroadcast
    sessions: int = 0


def run_broadcast_campaign(
    meters: Sequence[CampaignMeter], image: FirmwareImage, *, sender: BroadcastSender, broadcaster: Broadcaster,
    plan: RoundsPlan, phase: PhaseHook = lambda _name: None,
) -> tuple[list[MeterReport], CampaignSummary]:
    """Steps 1 to 5 above; every meter's report says how it ended."""
    summary = CampaignSummary()
    campaign = _Campaign(meters, image, sender=sender, broadcaster=broadcaster, plan=plan, phase=phase,
                         summary=summary)
    campaign.run()
    return [meter.report for meter in meters], summary


class _Campaign:
    def __init__(self, meters: Sequence[CampaignMeter], image: FirmwareImage, *, sender: BroadcastSender,
                 broadcaster: Broadcaster, plan: RoundsPlan, phase: PhaseHook, summary: CampaignSummary) -> None:
        self.meters, self.image, self.sender, self.broadcaster = meters, image, sender, broadcaster
        self.plan, self._hook, self.summary = plan, phase, summary
        self.blocks: list[bytes] = []
        self._label = ""

    def phase(self, label: str) -> None:
        self._label = label
        self._hook(label)

    def run(self) -> None:
        if not self.meters:
            return
        self.phase("probe one meter")
        block_size = self._session(self.meters[0], self._probe)
        if block_size is None:
            return
        self.summary.block_size = block_size
        self.blocks = self.image.blocks(block_size)
        self.phase("broadcast initiate + blocks")
        identification = Data.structure(Data.octet_string(self.image.identifier),
                                        Data.double_long_unsigned(len(self.image.data)))
        for _ in range(INITIATE_COPIES):
            self.broadcaster(self.sender.action(INITIATE, identification))
        self._broadcast(range(len(self.blocks)))
        self._repair()
        self.phase("broadcast activation time")
        moment = execution_time(self.plan.activate_at)
        for _ in range(ACTIVATION_COPIES):
            self.broadcaster(self.sender.set(SINGLE_ACTION_SCHEDULE_CLASS, IMAGE_ACTIVATION_SCHEDULE,
                                             EXECUTION_TIME, moment))
        self.plan.wait_until(self.plan.activate_at)
        for meter in self.meters:
            self._session(meter, self._confirm)

    def _broadcast(self, numbers: Sequence[int] | range) -> None:
        for number in numbers:
            self.broadcaster(self.sender.action(BLOCK_TRANSFER, block_parameters(number, self.blocks[number])))
            self.summary.broadcast_blocks += 1

    def _repair(self) -> None:
        unsampled = list(self.meters)
        for _ in range(MAX_REPAIR_ROUNDS):
            self.phase("status reads (sample)")
            sampled, unsampled = unsampled[: self.plan.sample], unsampled[self.plan.sample :]
            known: set[int] = set()
            revealed = room = 0
            for index, meter in enumerate(sampled):
                missing = self._session(meter, self._status)
                if missing is None:
                    continue
                if index:
                    revealed += len(missing - known)
                    room += len(self.blocks) - len(known)
                known |= missing
            q = revealed / room if room else 0.0
            decision, repair = self.decide(known=known, q=q, unsampled=unsampled)
            self.summary.rounds.append(f"{decision}: {len(repair)} blocks (q={q:.4f}, {len(known)} missed)")
            log.info("firmware.repair_round", decision=decision, blocks=len(repair), q=round(q, 4))
            self.phase("broadcast repair")
            self._broadcast(repair)
            if decision != "missed only" or not repair or not unsampled:
                return

    def decide(self, *, known: set[int], q: float, unsampled: list[CampaignMeter]) -> tuple[str, list[int]]:
        """The cheapest of: read every status, rebroadcast all, rebroadcast what the sample missed."""
        n, costs, r = len(self.blocks), self.plan.costs, len(unsampled)
        b = len(encode_broadcast(client_sap=1, apdu=self.sender.action(BLOCK_TRANSFER, block_parameters(
            0, self.blocks[0]))))
        self.sender.invocation_counter -= 1  # that one was only measured, never sent
        outside = n - len(known)
        options = {
            "read every status": r * costs.status_session + (len(known) + outside * (1 - (1 - q) ** r)) * b,
            "rebroadcast all": n * b,
            "missed only": len(known) * b + outside * q * r * costs.unicast_block,
        }
        choice = min(options, key=lambda name: options[name])
        if choice == "rebroadcast all":
            return choice, list(range(n))
        if choice == "read every status":
            for meter in unsampled:
                known |= self._session(meter, self._status) or set()
            unsampled.clear()
        return choice, sorted(known)

    # --- per-meter sessions: one association each ---

    def _session(self, meter: CampaignMeter, work: Callable[[CampaignMeter], T]) -> T | None:
        step = self._label
        try:
            self.phase(ASSOCIATION)
            meter.client.open()
            self.summary.sessions += 1
            try:
                self.phase(step)
                return work(meter)
            finally:
                self.phase(ASSOCIATION)
                meter.client.close()
        except (CampaignError, AxdrError, AssertionError, ConnectionError) as failure:
            meter.report.error = f"{work.__name__.strip('_')}: {failure}"
            log.warning("firmware.meter_failed", meter=meter.name, error=meter.report.error)
            return None
        finally:
            self.phase(step)

    def _probe(self, meter: CampaignMeter) -> int:
        size, enabled = meter.client.read_list(BLOCK_SIZE, TRANSFER_ENABLED)
        if enabled.value is not True or not isinstance(size.value, int):
            raise CampaignError("image transfer disabled")
        meter.report.block_size = size.value
        return size.value

    def _status(self, meter: CampaignMeter) -> set[int]:
        status, bits = meter.client.read_list(TRANSFER_STATUS, BLOCKS_STATUS)
        flags = flags_of(bits) if status.value in TRANSFERRING else []
        missing = {number for number in range(len(self.blocks)) if number >= len(flags) or not flags[number]}
        meter.report.missed_broadcast = tuple(sorted(missing))
        return missing

    def _confirm(self, meter: CampaignMeter) -> None:
        self.phase("confirm (one GET-with-list)")
        status = self._activated(meter)
        if status is None:
            return
        self.phase("unicast residue + activate")
        client, report = meter.client, meter.report
        report.block_size = report.block_size or self.summary.block_size
        if status not in TRANSFERRING:
            client.call(INITIATE, Data.structure(Data.octet_string(self.image.identifier),
                                                 Data.double_long_unsigned(len(self.image.data))))
        flags = flags_of(client.read(BLOCKS_STATUS))
        for number, value in enumerate(self.blocks):
            if number >= len(flags) or not flags[number]:
                client.call(BLOCK_TRANSFER, block_parameters(number, value))
                report.unicast_blocks += 1
        client.call(ACTIVATE, Data.integer(0))
        report.unicast_activate = True
        if self._activated(meter) is not None:
            raise CampaignError("activation not reported successful")

    def _activated(self, meter: CampaignMeter) -> int | None:
        """None when the meter runs the image (its SHA-256 checked), else its image_transfer_status."""
        status, info = meter.client.read_list(TRANSFER_STATUS, TO_ACTIVATE)
        if not isinstance(status.value, int):
            raise CampaignError(f"image_transfer_status is {status.type.name}")
        if status.value != ImageTransferStatus.ACTIVATION_SUCCESSFUL or not info.items:
            return status.value
        _size, identifier, signature = info.items[0].items
        if identifier.value != self.image.identifier or signature.value != self.image.sha256:
            return status.value  # another image: transferred again below
        report = meter.report
        report.verified = report.activated = True
        report.activated_sha256 = self.image.sha256
        log.info("firmware.meter_done", meter=meter.name, unicast_blocks=report.unicast_blocks)
        return None
