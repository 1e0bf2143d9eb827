"""What one poll reads from one meter, and how COSEM values become stored readings.

A poll, inside one association: the clock (so register values carry the meter's time), the
registers in one GET with-list (value and scaler_unit each), then each profile by range from
just after its cursor (the newest row stored) up to the meter's time. Rows at or before the
cursor are dropped, so a profile continues without gaps or duplicates as long as the meter
still holds the rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from gateway.codec import xdlms
from gateway.codec.axdr import AxdrError, BitString, Data, DataType, parse_date_time
from gateway.codec.obis import obis, obis_text
from gateway.poller.client import Attribute, DlmsClient, PollingError, ReadRefusedError
from gateway.poller.store import Reading

CLOCK = obis("0.0.1.0.0.255")  # Blue Book IC 8: the clock
CLOCK_CLASS, REGISTER_CLASS, PROFILE_CLASS = 8, 3, 7  # Blue Book interface classes
CLOCK_TIME, REGISTER_VALUE, REGISTER_SCALER_UNIT, CAPTURE_OBJECTS = 2, 2, 3, 3  # attribute indexes
ONE_SECOND = dt.timedelta(seconds=1)  # profile rows are at least a second apart (date-time resolution)


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What to read from each meter of a group."""

    clock: bool = True
    registers: tuple[bytes, ...] = ()
    profiles: tuple[bytes, ...] = ()  # load profiles and event logs alike
    first_read: dt.timedelta = dt.timedelta(days=1)


@dataclass(slots=True)
class PollResult:
    readings: list[Reading] = field(default_factory=list)
    cursors: list[tuple[str, float]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # items the meter would not give (partial poll)


@dataclass(frozen=True, slots=True)
class Column:
    """One captured column of a profile."""

    class_id: int
    logical_name: bytes
    attribute_id: int

    @property
    def is_clock(self) -> bool:
        return (self.class_id, self.logical_name, self.attribute_id) == (CLOCK_CLASS, CLOCK, CLOCK_TIME)


async def read_meter(client: DlmsClient, plan: ReadPlan, *, cursors: dict[str, float | None],
                     columns: dict[bytes, tuple[Column, ...]], now: dt.datetime) -> PollResult:
    """Everything in ``plan`` from one associated meter. ``columns`` caches capture objects per profile."""
    result = PollResult()
    meter_time = now
    if plan.clock:
        value = await client.get(Attribute(CLOCK_CLASS, CLOCK, CLOCK_TIME))
        moment = _moment(value)
        if moment is None:
            raise PollingError("the meter's clock is not a date-time")
        meter_time = moment
        result.readings.append(Reading(source=obis_text(CLOCK), obis=obis_text(CLOCK),
                                       captured_at=meter_time.timestamp(), value=meter_time.isoformat(),
                                       dlms_type="date-time"))
    if plan.registers:
        await _registers(client, plan.registers, meter_time, result)
    for profile in plan.profiles:
        try:
            await _profile(client, profile, plan, cursors=cursors, columns=columns, meter_time=meter_time,
                           result=result)
        except ReadRefusedError as exc:
            result.refused.append(f"{obis_text(profile)}: {exc}")
    return result


async def _registers(client: DlmsClient, registers: tuple[bytes, ...], meter_time: dt.datetime,
                     result: PollResult) -> None:
    attributes = []
    for name in registers:
        attributes += [Attribute(REGISTER_CLASS, name, REGISTER_VALUE), Attribute(REGISTER_CLASS, name,
                                                                                   REGISTER_SCALER_UNIT)]
    answers = await client.get_with_list(attributes)
    for index, name in enumerate(registers):
        value, scaler_unit = answers[2 * index], answers[2 * index + 1]
        text = obis_text(name)
        if isinstance(value, xdlms.DataAccessResult):
            result.refused.append(f"{text}: {value.name.lower()}")
            continue
        scaler = unit = None
        if isinstance(scaler_unit, Data) and scaler_unit.type == DataType.STRUCTURE and len(scaler_unit.items) == 2:
            first, second = scaler_unit.items
            scaler = first.value if isinstance(first.value, int) else None
            unit = second.value if isinstance(second.value, int) else None
        result.readings.append(Reading(source=text, obis=text, captured_at=meter_time.timestamp(),
                                       value=json_value(value), dlms_type=value.type.name.lower().replace("_", "-"),
                                       scaler=scaler, unit=unit))


async def _profile(client: DlmsClient, profile: bytes, plan: ReadPlan, *, cursors: dict[str, float | None],
                   columns: dict[bytes, tuple[Column, ...]], meter_time: dt.datetime, result: PollResult) -> None:
    source = obis_text(profile)
    if profile not in columns:
        columns[profile] = _columns(await client.get(Attribute(PROFILE_CLASS, profile, CAPTURE_OBJECTS)))
    capture = columns[profile]
    clock_index = next((i for i, column in enumerate(capture) if column.is_clock), None)
    if clock_index is None:
        raise ReadRefusedError(f"{source} has no clock column to read it by range")
    last = cursors.get(source)
    start = (dt.datetime.fromtimestamp(last, dt.UTC) + ONE_SECOND if last is not None
             else meter_time - plan.first_read)
    restricting = Attribute(CLOCK_CLASS, CLOCK, CLOCK_TIME)
    rows = await client.get_range(profile, restricting=restricting, start=start, end=meter_time)
    newest = last
    for row in rows.items if isinstance(rows.value, tuple) else ():
        cells = row.items if row.type == DataType.STRUCTURE else ()
        if len(cells) != len(capture):
            raise PollingError(f"{source}: a row of {len(cells)} values for {len(capture)} columns")
        moment = _moment(cells[clock_index])
        if moment is None:
            continue  # a row without a usable time cannot be placed; real meters mark gaps this way
        stamp = moment.timestamp()
        if last is not None and stamp <= last:
            continue  # the meter sent more than asked: already stored
        for column, cell in zip(capture, cells, strict=True):
            if column.is_clock:
                continue
            result.readings.append(Reading(source=source, obis=obis_text(column.logical_name), captured_at=stamp,
                                           value=json_value(cell), dlms_type=cell.type.name.lower().replace("_", "-")))
        newest = stamp if newest is None else max(newest, stamp)
    if newest is not None and newest != last:
        result.cursors.append((source, newest))


def _columns(value: Data) -> tuple[Column, ...]:
    """Parse capture_objects (Blue Book IC 7 attribute 3)."""
    found = []
    for item in value.items if value.type == DataType.ARRAY else ():
        fields = item.items if item.type == DataType.STRUCTURE else ()
        if len(fields) != 4:
            raise PollingError("malformed capture_objects")
        class_id, name, attribute_id = fields[0].value, fields[1].value, fields[2].value
        if not (isinstance(class_id, int) and isinstance(name, bytes) and isinstance(attribute_id, int)):
            raise PollingError("malformed capture_objects")
        found.append(Column(class_id, name, attribute_id))
    return tuple(found)


def _moment(value: Data) -> dt.datetime | None:
    """A COSEM date-time (octet-string of 12 or the date-time type) as UTC; None if unspecified."""
    if not isinstance(value.value, bytes) or len(value.value) != 12:
        return None
    try:
        moment = parse_date_time(value.value)
    except AxdrError:
        return None
    # Meters on a concentrator's line keep UTC (as ours do); the deviation field is not applied.
    return None if moment is None else moment.replace(tzinfo=dt.UTC)


def json_value(value: Data) -> Any:
    """A COSEM value as JSON: numbers and strings as they are, octets in hex, date-times in ISO 8601."""
    raw = value.value
    if isinstance(raw, tuple):
        return [json_value(item) for item in raw]
    if isinstance(raw, BitString | bytes):
        if value.type in (DataType.DATE_TIME, DataType.OCTET_STRING) and len(raw) == 12:
            moment = _moment(value)
            if moment is not None:
                return moment.isoformat()
        return bytes(raw).hex()
    return raw
