"""A head-end's firmware campaign (a test and bench tool, not product code): broadcast, then end to end.

    1. per meter, unicast (HLS-GMAC, ciphered): image_transfer_initiate(identifier, size)
    2. every block once, to a ``Broadcaster``: an unconfirmed ACTION image_block_transfer in
       general-glo-ciphering under the broadcast key (the gateway carries it blind)
    3. per meter, unicast: read image_transferred_blocks_status, send the missing blocks (confirmed),
       until none is missing; image_verify; image_activate; read what the meter activated

Meters are reached through any ``ApduChannel`` (tests/firmware_channels.py: straight onto a
simulated HDLC bus, or through a gateway's wrapper relay). Keys stay in this process; nothing
here logs them.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from gateway.codec import security, xdlms
from gateway.codec.acse import AssociationResult, Mechanism
from gateway.codec.axdr import AxdrError, Data, flags_of
from gateway.cosem.image_transfer import (
    ACTIVATE,
    BLOCK_TRANSFER,
    IMAGE_TRANSFER,
    INITIATE,
    VERIFY,
    ImageTransferStatus,
)
from tests.cosem.client import INVOKE, Keys, TestClient

IMAGE_TRANSFER_CLASS = 18
BLOCK_SIZE, BLOCKS_STATUS, TRANSFER_ENABLED, TRANSFER_STATUS, TO_ACTIVATE = 2, 3, 5, 6, 7  # Blue Book IC 18
SC_BROADCAST = (
    security.SecurityControl.BROADCAST_KEY | security.SecurityControl.ENCRYPTION
    | security.SecurityControl.AUTHENTICATION
)  # Green Book 9.2.7.2.2: key set = broadcast, authenticated and encrypted, suite 0
MAX_FILL_ROUNDS = 3
TRANSIENT_RETRIES, TRANSIENT_PAUSE_S = 10, 0.1  # a head-end asks again after a transient refusal

log = structlog.get_logger("firmware_hes")
Broadcaster = Callable[[bytes], None]  # puts one broadcast APDU on the medium (the gateway's job, later)
PhaseHook = Callable[[str], None]  # told which step the campaign is in, so a bench can attribute airtime


def _no_phase(_name: str) -> None:
    return None


class ApduChannel(Protocol):
    """One meter's unicast path: an APDU out, its answer back."""

    def open(self) -> None: ...

    def request(self, apdu: bytes) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    """The image the campaign distributes."""

    identifier: bytes
    data: bytes

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.data).digest()

    def blocks(self, block_size: int) -> list[bytes]:
        return [self.data[start : start + block_size] for start in range(0, len(self.data), block_size)]


@dataclass(frozen=True, slots=True, repr=False)
class BroadcastKeys:
    """The head-end's system title, the meters' global broadcast key and their authentication key."""

    system_title: bytes
    broadcast_key: bytes
    authentication_key: bytes

    def __repr__(self) -> str:
        return f"BroadcastKeys(system_title={self.system_title.hex()}, keys=<hidden>)"


class BroadcastSender:
    """Protects broadcast ACTIONs, each under the next invocation counter."""

    def __init__(self, keys: BroadcastKeys, *, invocation_counter: int = 0) -> None:
        self._keys = keys
        self.invocation_counter = invocation_counter  # the last one used

    def action(self, method_id: int, parameters: Data) -> bytes:
        """An unconfirmed ACTION on the Image transfer object, in general-glo-ciphering."""
        invoke = xdlms.invoke_id_and_priority(1, confirmed=False)
        method = xdlms.MethodDescriptor(IMAGE_TRANSFER_CLASS, IMAGE_TRANSFER, method_id)
        return self._protect(xdlms.encode_xdlms(xdlms.ActionRequestNormal(invoke, method, parameters)))

    def set(self, class_id: int, logical_name: bytes, attribute_id: int, value: Data) -> bytes:
        """An unconfirmed SET, in general-glo-ciphering (e.g. the image activation time, IC 22)."""
        invoke = xdlms.invoke_id_and_priority(1, confirmed=False)
        attribute = xdlms.AttributeDescriptor(class_id, logical_name, attribute_id)
        return self._protect(xdlms.encode_xdlms(xdlms.SetRequestNormal(invoke, attribute, None, value)))

    def _protect(self, plain: bytes) -> bytes:
        self.invocation_counter += 1
        protected = security.protect(
            security_control=SC_BROADCAST,
            system_title=self._keys.system_title,
            invocation_counter=self.invocation_counter,
            block_cipher_key=self._keys.broadcast_key,
            authentication_key=self._keys.authentication_key,
            plaintext=plain,
        )
        return security.encode_general_glo(system_title=self._keys.system_title, protected=protected)


def block_parameters(number: int, value: bytes) -> Data:
    """image_block_transfer's structure {block number, block value}."""
    return Data.structure(Data.double_long_unsigned(number), Data.octet_string(value))


@dataclass(repr=False)
class MeterClient(TestClient):
    """Our codec-built management client (HLS-GMAC, ciphered) over an ApduChannel."""

    channel: ApduChannel | None = None
    release_first: bool = True  # False: end with the data link's disconnect only (HDLC DISC releases the AA)

    def __repr__(self) -> str:  # never show the keys
        return f"MeterClient(client_sap={self.client_sap}, channel={self.channel!r})"

    @classmethod
    def over(cls, channel: ApduChannel, keys: Keys, *, invocation_counter: int = 0) -> MeterClient:
        return cls(device=None, client_sap=1, keys=keys, invocation_counter=invocation_counter,  # type: ignore[arg-type]
                   channel=channel)  # no in-process device: answers come from the channel

    def send(self, apdu: bytes) -> bytes:
        assert self.channel is not None
        return self.channel.request(apdu)

    def open(self) -> None:
        assert self.channel is not None
        self.channel.open()
        aare = self.associate(mechanism=Mechanism.HLS_GMAC)
        for _ in range(TRANSIENT_RETRIES):  # e.g. the gateway still closing this meter's last data link
            if aare.result is not AssociationResult.REJECTED_TRANSIENT:
                break
            time.sleep(TRANSIENT_PAUSE_S)
            aare = self.associate(mechanism=Mechanism.HLS_GMAC)
        if aare.result is not AssociationResult.ACCEPTED or self.hls(aare).result is not xdlms.ActionResult.SUCCESS:
            raise CampaignError("association refused")

    def close(self) -> None:
        assert self.channel is not None
        if self.release_first:
            self.release()
        self.channel.close()

    def read(self, attribute_id: int) -> Data:
        result = self.get(IMAGE_TRANSFER_CLASS, IMAGE_TRANSFER, attribute_id)
        if isinstance(result, xdlms.DataAccessResult):
            raise CampaignError(f"attribute {attribute_id}: {result.name.lower()}")
        return result

    def read_list(self, *attribute_ids: int) -> list[Data]:
        """Several Image transfer attributes in one GET-Request-With-List."""
        items = tuple((xdlms.AttributeDescriptor(IMAGE_TRANSFER_CLASS, IMAGE_TRANSFER, attribute_id), None)
                      for attribute_id in attribute_ids)
        answer = self.request(xdlms.GetRequestWithList(INVOKE, items))
        if not isinstance(answer, xdlms.GetResponseWithList) or len(answer.results) != len(attribute_ids):
            raise CampaignError(f"GET with list answered with {type(answer).__name__}")
        values: list[Data] = []
        for attribute_id, result in zip(attribute_ids, answer.results, strict=True):
            if isinstance(result, xdlms.DataAccessResult):
                raise CampaignError(f"attribute {attribute_id}: {result.name.lower()}")
            values.append(result)
        return values

    def call(self, method_id: int, parameters: Data) -> None:
        result = self.action(IMAGE_TRANSFER_CLASS, IMAGE_TRANSFER, method_id, parameters).result
        if result is not xdlms.ActionResult.SUCCESS:
            raise CampaignError(f"method {method_id}: {result.name.lower()}")


class CampaignError(Exception):
    """A step failed on one meter; the message goes into its report."""


@dataclass
class MeterReport:
    """What the campaign did on one meter."""

    name: str
    block_size: int = 0
    missed_broadcast: tuple[int, ...] = ()  # block numbers missing after the broadcast
    unicast_blocks: int = 0
    unicast_activate: bool = False  # activated by a unicast image_activate (not at the broadcast time)
    verified: bool = False
    activated: bool = False
    activated_sha256: bytes | None = None
    error: str | None = None


@dataclass
class CampaignMeter:
    """One meter of the campaign: a name for the report and its client."""

    name: str
    client: MeterClient
    report: MeterReport = field(init=False)

    def __post_init__(self) -> None:
        self.report = MeterReport(self.name)


def run_campaign(
    meters: Sequence[CampaignMeter], image: FirmwareImage, *, sender: BroadcastSender, broadcaster: Broadcaster,
    phase: PhaseHook = _no_phase,
) -> list[MeterReport]:
    """Initiate everywhere, broadcast every block once, fill gaps, verify and activate per meter."""
    started = [meter for meter in meters if _step(meter, _initiate, image, phase)]
    if started:
        block_size = Counter(meter.report.block_size for meter in started).most_common(1)[0][0]
        phase("broadcast blocks")
        for number, value in enumerate(image.blocks(block_size)):
            broadcaster(sender.action(BLOCK_TRANSFER, block_parameters(number, value)))
        log.info("firmware.broadcast_done", blocks=len(image.blocks(block_size)), block_size=block_size)
    for meter in started:
        _step(meter, _finish, image, phase)
    return [meter.report for meter in meters]


def _step(meter: CampaignMeter, work: Callable[[CampaignMeter, FirmwareImage, PhaseHook], None],
          image: FirmwareImage, phase: PhaseHook = _no_phase) -> bool:
    """One unicast session with a meter; a failure ends up in its report."""
    try:
        phase("association (open, HLS, release)")
        meter.client.open()
        try:
            work(meter, image, phase)
        finally:
            phase("association (open, HLS, release)")
            meter.client.close()
    except (CampaignError, AxdrError, AssertionError, ConnectionError, xdlms.XdlmsError) as failure:
        meter.report.error = f"{work.__name__.strip('_')}: {failure}"
        log.warning("firmware.meter_failed", meter=meter.name, error=meter.report.error)
        return False
    return True


def _number(value: Data) -> int:
    if not isinstance(value.value, int):
        raise CampaignError(f"{value.type.name} where a number was expected")
    return value.value


def _initiate(meter: CampaignMeter, image: FirmwareImage, phase: PhaseHook) -> None:
    client = meter.client
    phase("initiate (reads + ACTION)")
    if client.read(TRANSFER_ENABLED).value is not True:
        raise CampaignError("image transfer disabled")
    meter.report.block_size = _number(client.read(BLOCK_SIZE))
    identification = Data.structure(Data.octet_string(image.identifier), Data.double_long_unsigned(len(image.data)))
    client.call(INITIATE, identification)


def _missing(client: MeterClient, count: int) -> list[int]:
    flags = flags_of(client.read(BLOCKS_STATUS))
    return [number for number in range(count) if number >= len(flags) or not flags[number]]


def _finish(meter: CampaignMeter, image: FirmwareImage, phase: PhaseHook) -> None:
    client, report = meter.client, meter.report
    blocks = image.blocks(report.block_size)
    phase("blocks status reads")
    missing = _missing(client, len(blocks))
    report.missed_broadcast = tuple(missing)
    for _ in range(MAX_FILL_ROUNDS):
        if not missing:
            break
        phase("unicast gap fill")
        for number in missing:
            client.call(BLOCK_TRANSFER, block_parameters(number, blocks[number]))
            report.unicast_blocks += 1
        phase("blocks status reads")
        missing = _missing(client, len(blocks))
    if missing:
        raise CampaignError(f"{len(missing)} blocks still missing")
    phase("verify")
    client.call(VERIFY, Data.integer(0))
    report.verified = True
    phase("activate and read back")
    client.call(ACTIVATE, Data.integer(0))
    if _number(client.read(TRANSFER_STATUS)) != ImageTransferStatus.ACTIVATION_SUCCESSFUL:
        raise CampaignError("activation not reported successful")
    (info,) = client.read(TO_ACTIVATE).items
    _size, identifier, signature = info.items
    if identifier.value != image.identifier or not isinstance(signature.value, bytes):
        raise CampaignError("the meter activated another image")
    report.activated, report.activated_sha256 = True, signature.value
    log.info("firmware.meter_done", meter=meter.name, missed=len(report.missed_broadcast),
             unicast_blocks=report.unicast_blocks)
