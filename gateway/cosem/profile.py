"""IC 7 Profile generic (Blue Book 4.3.6): a buffer of captured rows with selective access.

    selector 1, range_descriptor ::= structure { restricting_object capture_object_definition,
        from_value, to_value, selected_values array of capture_object_definition }
    selector 2, entry_descriptor ::= structure { from_entry double-long-unsigned,
        to_entry double-long-unsigned, from_selected_value long-unsigned, to_selected_value long-unsigned }

Entries and selected values count from 1; a "to" of 0 means "up to the last one".
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.codec.axdr import AxdrError, Data, DataType, parse_date_time
from gateway.codec.xdlms import AccessSelection, DataAccessResult
from gateway.cosem.objects import Access, Answer, CosemObject, RequestContext, as_utc

Row = tuple[Data, ...]
SORT_METHOD_FIFO = 1  # Blue Book IC 7 sort_method
SELECTOR_RANGE = 1
SELECTOR_ENTRY = 2


@dataclass(frozen=True, slots=True)
class CaptureObject:
    """One column of a profile: an attribute of another object (data_index 0 = the whole attribute)."""

    class_id: int
    logical_name: bytes
    attribute_index: int
    data_index: int = 0

    def to_data(self) -> Data:
        return Data.structure(
            Data.long_unsigned(self.class_id),
            Data.octet_string(self.logical_name),
            Data.integer(self.attribute_index),
            Data.long_unsigned(self.data_index),
        )

    @classmethod
    def from_data(cls, value: Data) -> CaptureObject | None:
        """Parse a capture_object_definition; None if it is not one."""
        if value.type != DataType.STRUCTURE or len(value.items) != 4:
            return None
        class_id, name, attribute_index, data_index = (item.value for item in value.items)
        if not (isinstance(class_id, int) and isinstance(name, bytes) and isinstance(attribute_index, int)):
            return None
        if not isinstance(data_index, int) or isinstance(class_id, bool) or len(name) != 6:
            return None
        return cls(class_id, name, attribute_index, data_index)


class ProfileGeneric(CosemObject):
    """IC 7 Profile generic over rows supplied by a callable (oldest first), sort method FIFO."""

    class_id = 7
    version = 1
    attribute_count = 8
    method_count = 2
    selective_attributes = {2: (SELECTOR_RANGE, SELECTOR_ENTRY)}

    def __init__(
        self,
        *,
        logical_name: bytes,
        rights: Mapping[int, Access],
        capture_objects: Sequence[CaptureObject],
        capture_period: int,
        profile_entries: int,
        rows: Callable[[], Sequence[Row]],
    ) -> None:
        super().__init__(logical_name=logical_name, rights=rights)
        self.capture_objects = tuple(capture_objects)
        self.capture_period = capture_period
        self.profile_entries = profile_entries
        self._rows = rows

    def rows(self) -> Sequence[Row]:
        rows = self._rows()
        return rows[-self.profile_entries :] if self.profile_entries else rows

    def _get(self, attribute_id: int, selection: AccessSelection | None, ctx: RequestContext) -> Answer:
        match attribute_id:
            case 2:
                return self._buffer(selection)
            case 3:
                return Data.array(*(column.to_data() for column in self.capture_objects))
            case 4:
                return Data.double_long_unsigned(self.capture_period)
            case 5:
                return Data.enum(SORT_METHOD_FIFO)
            case 6:
                return CaptureObject(0, bytes(6), 0, 0).to_data()  # no sort object under FIFO
            case 7:
                return Data.double_long_unsigned(len(self.rows()))
            case 8:
                return Data.double_long_unsigned(self.profile_entries)
        return DataAccessResult.OBJECT_UNAVAILABLE

    def _buffer(self, selection: AccessSelection | None) -> Answer:
        rows = list(self.rows())
        if selection is None:
            return _as_array(rows)
        parameters = selection.parameters
        if parameters.type != DataType.STRUCTURE:
            return DataAccessResult.TYPE_UNMATCHED
        if selection.selector == SELECTOR_RANGE:
            return self._by_range(rows, parameters.items)
        return _by_entry(rows, parameters.items)

    def _by_range(self, rows: list[Row], fields: tuple[Data, ...]) -> Answer:
        if len(fields) != 4 or fields[3].type != DataType.ARRAY:
            return DataAccessResult.TYPE_UNMATCHED
        restricting = CaptureObject.from_data(fields[0])
        if restricting is None:
            return DataAccessResult.TYPE_UNMATCHED
        column = self._column_of(restricting)
        if column is None:
            return DataAccessResult.OBJECT_UNAVAILABLE
        low, high = _bound(fields[1]), _bound(fields[2])
        if low is _INVALID or high is _INVALID:
            return DataAccessResult.TYPE_UNMATCHED
        selected = [row for row in rows if _within(_bound(row[column]), low, high)]
        columns: list[int] = []
        for item in fields[3].items:
            wanted = CaptureObject.from_data(item)
            index = None if wanted is None else self._column_of(wanted)
            if index is None:
                return DataAccessResult.OBJECT_UNAVAILABLE
            columns.append(index)
        if columns:
            selected = [tuple(row[i] for i in columns) for row in selected]
        return _as_array(selected)

    def _column_of(self, wanted: CaptureObject) -> int | None:
        for index, column in enumerate(self.capture_objects):
            same = (column.class_id, column.logical_name, column.attribute_index)
            if same == (wanted.class_id, wanted.logical_name, wanted.attribute_index):
                return index
        return None


def _as_array(rows: Sequence[Row]) -> Data:
    return Data.array(*(Data.structure(*row) for row in rows))


def _by_entry(rows: list[Row], fields: tuple[Data, ...]) -> Answer:
    numbers = [field.value for field in fields]
    if len(numbers) != 4 or not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        return DataAccessResult.TYPE_UNMATCHED
    from_entry, to_entry, from_value, to_value = (int(n) for n in numbers if isinstance(n, int))
    chosen = rows[max(from_entry, 1) - 1 : to_entry or None]
    if not chosen:
        return Data.array()
    width = len(chosen[0])
    if from_value > width or (to_value and to_value < from_value):
        return DataAccessResult.OBJECT_UNAVAILABLE
    return _as_array([row[max(from_value, 1) - 1 : to_value or None] for row in chosen])


class _Invalid:
    pass


_INVALID = _Invalid()
Bound = datetime.datetime | int | None | _Invalid


def _bound(value: Data) -> Bound:
    """A comparable form of a range bound: a UTC datetime, an int, None (wildcard), or invalid."""
    if value.type in (DataType.OCTET_STRING, DataType.DATE_TIME) and isinstance(value.value, bytes):
        if len(value.value) != 12:
            return _INVALID
        try:
            moment = parse_date_time(value.value)
        except AxdrError:
            return _INVALID
        return None if moment is None else as_utc(moment)
    if isinstance(value.value, int) and not isinstance(value.value, bool):
        return value.value
    return _INVALID


def _within(value: Bound, low: Bound, high: Bound) -> bool:
    """low <= value <= high, an open (None) bound matching everything; mixed kinds never match."""
    if value is None or isinstance(value, _Invalid):
        return False
    return _ordered(low, value) and _ordered(value, high)


def _ordered(first: Bound, second: Bound) -> bool:
    if first is None or second is None:
        return True
    if isinstance(first, datetime.datetime) and isinstance(second, datetime.datetime):
        return first <= second
    if isinstance(first, int) and isinstance(second, int):
        return first <= second
    return False
