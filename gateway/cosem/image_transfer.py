"""IC 18 Image transfer, version 0 (Blue Book 4.4.6): a firmware image received in numbered blocks.

Theory of operation (image_transfer_status in capitals; block n covers octets n*size..):

    any, transfer enabled          --initiate(id, size)--> INITIATED: blocks cleared, unless the same
                                                           id and size are in transfer (then resumed)
    INITIATED, VERIFICATION_FAILED --block n-----------> INITIATED, bit n of attribute 3 set
    INITIATED, VERIFICATION_FAILED --verify------------> VERIFICATION_SUCCESSFUL when every block is
                                                         in and ``ImageCheck`` accepts its SHA-256,
                                                         else VERIFICATION_FAILED (other-reason)
    INITIATED                      --activate----------> verifies first (Blue Book), then as below
    VERIFICATION_SUCCESSFUL        --activate----------> ACTIVATION_SUCCESSFUL: ``activated`` recorded

Verifying or activating again in the state it leads to succeeds again (an answer may be lost).
An activation may also be set for a time (``activate_at``, written through the image activation
schedule, IC 22): once the meter's clock has passed it, the next access to the object runs
image_activate first, as the schedule's script would have at that moment (a simulated meter has
no timer of its own; nobody can observe the difference).
Our result codes where the Blue Book leaves them open: parameters of the wrong shape
type-unmatched; a block number outside the image data-block-unavailable; a block of the wrong
length type-unmatched; transfer disabled temporary-failure; any other out-of-order call
other-reason. The "signature" in image_to_activate_info is the image's SHA-256.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum

from gateway.codec.axdr import Data, DataType, bit_string_of
from gateway.codec.obis import obis
from gateway.codec.xdlms import AccessSelection, ActionResult, DataAccessResult
from gateway.cosem.objects import Access, ActionAnswer, Answer, CosemObject, RequestContext, as_utc

IMAGE_TRANSFER = obis("0.0.44.0.0.255")  # Blue Book 4.4.6: the Image transfer instance
INITIATE, BLOCK_TRANSFER, VERIFY, ACTIVATE = 1, 2, 3, 4  # Blue Book IC 18 methods
MAX_IMAGE_SIZE = 1 << 20  # ours: a simulated meter keeps the image in memory


class ImageTransferStatus(IntEnum):
    """Blue Book IC 18 image_transfer_status."""

    NOT_INITIATED = 0
    INITIATED = 1
    VERIFICATION_INITIATED = 2
    VERIFICATION_SUCCESSFUL = 3
    VERIFICATION_FAILED = 4
    ACTIVATION_INITIATED = 5
    ACTIVATION_SUCCESSFUL = 6
    ACTIVATION_FAILED = 7


@dataclass(frozen=True, slots=True)
class ImageCheck:
    """What image_verify accepts: an image with ``expected_sha256``, or (None) any whole image."""

    expected_sha256: bytes | None = None

    def accepts(self, digest: bytes) -> bool:
        return self.expected_sha256 is None or self.expected_sha256 == digest


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """One image: its identifier, size and SHA-256 (what verification and activation record)."""

    identifier: bytes
    size: int
    sha256: bytes


def _unsigned32(value: Data) -> int | None:
    if value.type != DataType.DOUBLE_LONG_UNSIGNED or not isinstance(value.value, int):
        return None
    return value.value


def _octets(value: Data) -> bytes | None:
    if value.type != DataType.OCTET_STRING or not isinstance(value.value, bytes):
        return None
    return value.value


def _pair(parameters: Data | None) -> tuple[Data, Data] | None:
    if parameters is None or parameters.type != DataType.STRUCTURE or len(parameters.items) != 2:
        return None
    return parameters.items[0], parameters.items[1]


class ImageTransfer(CosemObject):
    """IC 18 for one simulated meter; ``activated`` is the image it now runs (None before any)."""

    class_id = 18
    version = 0
    attribute_count = 7
    method_count = 4

    def __init__(
        self,
        *,
        rights: Mapping[int, Access],
        block_size: int,
        check: ImageCheck,
        logical_name: bytes = IMAGE_TRANSFER,
        max_image_size: int = MAX_IMAGE_SIZE,
        clock: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        super().__init__(logical_name=logical_name, rights=rights)
        if block_size < 1:
            raise ValueError("an image block holds at least one octet")
        self.block_size = block_size
        self.check = check
        self.max_image_size = max_image_size
        self.enabled = True
        self.status = ImageTransferStatus.NOT_INITIATED
        self.activated: ImageInfo | None = None
        self.verified: ImageInfo | None = None
        self._identifier = b""
        self._image = bytearray()
        self._received: list[bool] = []
        self._clock = clock
        self.activate_at: datetime.datetime | None = None  # UTC; set through the activation schedule

    def run_due(self) -> None:
        """Activate now if the scheduled activation time has passed (once per schedule)."""
        if self.activate_at is None or self._clock is None or as_utc(self._clock()) < self.activate_at:
            return
        self.activate_at = None
        self._activate()  # a failure shows in image_transfer_status, as after a scheduled script

    @property
    def missing_blocks(self) -> list[int]:
        """The numbers of the blocks not received yet."""
        return [number for number, received in enumerate(self._received) if not received]

    def _get(self, attribute_id: int, selection: AccessSelection | None, ctx: RequestContext) -> Answer:
        self.run_due()
        match attribute_id:
            case 2:
                return Data.double_long_unsigned(self.block_size)
            case 3:
                return bit_string_of(self._received)
            case 4:
                missing = self.missing_blocks
                return Data.double_long_unsigned(missing[0] if missing else len(self._received))
            case 5:
                return Data.boolean(self.enabled)
            case 6:
                return Data.enum(self.status)
            case 7:
                return Data.array(*self._to_activate())
        return DataAccessResult.OBJECT_UNAVAILABLE

    def _to_activate(self) -> list[Data]:
        if self.verified is None:
            return []
        info = self.verified
        return [
            Data.structure(
                Data.double_long_unsigned(info.size), Data.octet_string(info.identifier), Data.octet_string(info.sha256)
            )
        ]

    def _set(self, attribute_id: int, value: Data, ctx: RequestContext) -> DataAccessResult:
        if attribute_id != 5:
            return DataAccessResult.READ_WRITE_DENIED
        if value.type != DataType.BOOLEAN or not isinstance(value.value, bool):
            return DataAccessResult.TYPE_UNMATCHED
        self.enabled = value.value
        return DataAccessResult.SUCCESS

    def _action(self, method_id: int, parameters: Data | None, ctx: RequestContext) -> ActionAnswer:
        self.run_due()
        match method_id:
            case 1:
                return self._initiate(parameters), None
            case 2:
                return self._block(parameters), None
            case 3:
                return self._verify(), None
            case 4:
                return self._activate(), None
        return ActionResult.OBJECT_UNAVAILABLE, None

    def _initiate(self, parameters: Data | None) -> ActionResult:
        pair = _pair(parameters)
        identifier = _octets(pair[0]) if pair else None
        size = _unsigned32(pair[1]) if pair else None
        if identifier is None or size is None:
            return ActionResult.TYPE_UNMATCHED
        if not self.enabled:
            return ActionResult.TEMPORARY_FAILURE
        if not 0 < size <= self.max_image_size:
            return ActionResult.OTHER_REASON
        resumed = self.status in (ImageTransferStatus.INITIATED, ImageTransferStatus.VERIFICATION_FAILED)
        if not (resumed and identifier == self._identifier and size == len(self._image)):
            self._identifier = identifier
            self._image = bytearray(size)
            self._received = [False] * -(-size // self.block_size)
        self.verified = None
        self.status = ImageTransferStatus.INITIATED
        return ActionResult.SUCCESS

    def _block(self, parameters: Data | None) -> ActionResult:
        pair = _pair(parameters)
        number = _unsigned32(pair[0]) if pair else None
        value = _octets(pair[1]) if pair else None
        if number is None or value is None:
            return ActionResult.TYPE_UNMATCHED
        if not self.enabled:
            return ActionResult.TEMPORARY_FAILURE
        if self.status not in (ImageTransferStatus.INITIATED, ImageTransferStatus.VERIFICATION_FAILED):
            return ActionResult.OTHER_REASON
        if number >= len(self._received):
            return ActionResult.DATA_BLOCK_UNAVAILABLE
        start = number * self.block_size
        if len(value) != min(self.block_size, len(self._image) - start):
            return ActionResult.TYPE_UNMATCHED
        self._image[start : start + len(value)] = value
        self._received[number] = True
        self.status = ImageTransferStatus.INITIATED
        return ActionResult.SUCCESS

    def _verify(self) -> ActionResult:
        if self.status is ImageTransferStatus.VERIFICATION_SUCCESSFUL:
            return ActionResult.SUCCESS
        if self.status not in (ImageTransferStatus.INITIATED, ImageTransferStatus.VERIFICATION_FAILED):
            return ActionResult.OTHER_REASON
        digest = hashlib.sha256(self._image).digest()
        if self.missing_blocks or not self.check.accepts(digest):
            self.status = ImageTransferStatus.VERIFICATION_FAILED
            return ActionResult.OTHER_REASON
        self.verified = ImageInfo(identifier=self._identifier, size=len(self._image), sha256=digest)
        self.status = ImageTransferStatus.VERIFICATION_SUCCESSFUL
        return ActionResult.SUCCESS

    def _activate(self) -> ActionResult:
        if self.status is ImageTransferStatus.ACTIVATION_SUCCESSFUL:
            return ActionResult.SUCCESS
        if self.status is ImageTransferStatus.INITIATED and self._verify() is not ActionResult.SUCCESS:
            return ActionResult.OTHER_REASON
        if self.status is not ImageTransferStatus.VERIFICATION_SUCCESSFUL or self.verified is None:
            return ActionResult.OTHER_REASON
        self.activated = self.verified
        self.status = ImageTransferStatus.ACTIVATION_SUCCESSFUL
        return ActionResult.SUCCESS
