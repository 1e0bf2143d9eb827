"""IC 22 Single action schedule, the image activation instance (Blue Book 4.5.7; 0.0.15.0.2.255).

A head-end sets attribute 4, execution_time, to the moment every meter shall activate the image
it received; one unconfirmed SET under the broadcast key does it for a whole network. Attribute 2
names the script that runs then (the image activation script table, 0.0.10.0.107.255, script 1);
ours runs image_activate on the Image transfer object directly instead of through an IC 9 script
table. Type 1 (Blue Book): one execution time, no wildcards. An empty array cancels.

    execution_time = array { structure { time: octet-string(4) hh mm ss hundredths,
                                          date: octet-string(5) yyyy(2) mm dd weekday } }   (UTC)
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Mapping

from gateway.codec.axdr import Data, DataType
from gateway.codec.obis import obis
from gateway.codec.xdlms import AccessSelection, DataAccessResult
from gateway.cosem.image_transfer import ImageTransfer
from gateway.cosem.objects import Access, Answer, CosemObject, RequestContext, as_utc

IMAGE_ACTIVATION_SCHEDULE = obis("0.0.15.0.2.255")  # Blue Book: single action schedule for image activation
IMAGE_ACTIVATION_SCRIPT = obis("0.0.10.0.107.255")  # Blue Book: image activation script table
EXECUTION_TIME = 4  # Blue Book IC 22 attribute
SCHEDULE_TYPE_ONE_TIME = 1  # Blue Book IC 22 type: size of execution_time = 1, no wildcards


def execution_time(moment: datetime.datetime) -> Data:
    """Attribute 4's value for one activation at ``moment`` (UTC)."""
    moment = as_utc(moment)
    time = struct.pack(">BBBB", moment.hour, moment.minute, moment.second, moment.microsecond // 10_000)
    date = struct.pack(">HBBB", moment.year, moment.month, moment.day, moment.isoweekday())
    return Data.array(Data.structure(Data.octet_string(time), Data.octet_string(date)))


def parse_execution_time(value: Data) -> datetime.datetime | DataAccessResult | None:
    """The one moment in attribute 4 (None: cancelled), or why the value is refused."""
    if value.type != DataType.ARRAY:
        return DataAccessResult.TYPE_UNMATCHED
    if not value.items:
        return None
    if len(value.items) != 1:
        return DataAccessResult.OTHER_REASON  # type 1: one execution time
    entry = value.items[0]
    if entry.type != DataType.STRUCTURE or len(entry.items) != 2:
        return DataAccessResult.TYPE_UNMATCHED
    time, date = (item.value for item in entry.items)
    if not isinstance(time, bytes) or not isinstance(date, bytes) or len(time) != 4 or len(date) != 5:
        return DataAccessResult.TYPE_UNMATCHED
    hour, minute, second, hundredths = time
    year, month, day, _weekday = struct.unpack(">HBBB", date)
    try:
        return datetime.datetime(year, month, day, hour, minute, second, (hundredths % 100) * 10_000,
                                 tzinfo=datetime.UTC)
    except ValueError:
        return DataAccessResult.OTHER_REASON  # wildcards or impossible dates: not for a one-time schedule


class ImageActivationSchedule(CosemObject):
    """IC 22 driving one Image transfer object's activation."""

    class_id = 22
    version = 0
    attribute_count = 4

    def __init__(self, *, rights: Mapping[int, Access], transfer: ImageTransfer,
                 logical_name: bytes = IMAGE_ACTIVATION_SCHEDULE) -> None:
        super().__init__(logical_name=logical_name, rights=rights)
        self._transfer = transfer

    def _get(self, attribute_id: int, selection: AccessSelection | None, ctx: RequestContext) -> Answer:
        self._transfer.run_due()
        match attribute_id:
            case 2:
                return Data.structure(Data.octet_string(IMAGE_ACTIVATION_SCRIPT), Data.long_unsigned(1))
            case 3:
                return Data.enum(SCHEDULE_TYPE_ONE_TIME)
            case 4:
                at = self._transfer.activate_at
                return execution_time(at) if at is not None else Data.array()
        return DataAccessResult.OBJECT_UNAVAILABLE

    def _set(self, attribute_id: int, value: Data, ctx: RequestContext) -> DataAccessResult:
        if attribute_id != EXECUTION_TIME:
            return DataAccessResult.READ_WRITE_DENIED
        moment = parse_execution_time(value)
        if isinstance(moment, DataAccessResult):
            return moment
        self._transfer.run_due()  # an earlier time that has passed runs before it is replaced
        self._transfer.activate_at = moment
        return DataAccessResult.SUCCESS
