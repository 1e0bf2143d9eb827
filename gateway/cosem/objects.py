"""COSEM interface classes (DLMS UA Blue Book, IEC 62056-6-2) served by our logical devices.

Every object answers ``get``/``set``/``action`` for one request context (the association
it is asked through). Access rights live on the object, keyed by client SAP: an object
with no entry for a client is invisible to it (not in its object_list, object-undefined).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Protocol

from gateway.codec.axdr import AxdrError, Data, DataType, date_time, parse_date_time
from gateway.codec.xdlms import AccessSelection, ActionResult, DataAccessResult

Answer = Data | DataAccessResult
ActionAnswer = tuple[ActionResult, Data | None]


@dataclass(frozen=True, slots=True)
class Access:
    """What one client may do with one object: readable/writable attributes, allowed methods."""

    read: frozenset[int] = frozenset()
    write: frozenset[int] = frozenset()
    methods: frozenset[int] = frozenset()


def access(*, read: Sequence[int] = (), write: Sequence[int] = (), methods: Sequence[int] = ()) -> Access:
    """Build an Access from plain sequences."""
    return Access(read=frozenset(read), write=frozenset(write), methods=frozenset(methods))


class AssociationStatus(IntEnum):
    """Blue Book IC 15 association_status."""

    NON_ASSOCIATED = 0
    ASSOCIATION_PENDING = 1
    ASSOCIATED = 2


@dataclass(frozen=True, slots=True)
class AssociationInfo:
    """What IC 15 (current association) reports about the association a request came through."""

    client_sap: int
    server_sap: int
    application_context: int
    mechanism: int
    conformance: int
    client_max_receive_pdu_size: int
    server_max_receive_pdu_size: int
    dlms_version: int
    status: AssociationStatus


class RequestContext(Protocol):
    """The association a request arrives through (implemented by cosem.association.Association)."""

    @property
    def client_sap(self) -> int: ...

    def association_info(self) -> AssociationInfo: ...

    def visible_objects(self) -> Sequence[CosemObject]: ...

    def reply_to_hls_authentication(self, f_stoc: bytes) -> bytes | None:
        """Check the client's f(StoC); on success the association opens and f(CtoS) comes back."""


class CosemObject:
    """Base of the interface classes: rights checks here, the class logic in ``_get``/``_set``/``_action``."""

    class_id: ClassVar[int]
    version: ClassVar[int]
    attribute_count: ClassVar[int]
    method_count: ClassVar[int] = 0
    selective_attributes: ClassVar[Mapping[int, tuple[int, ...]]] = {}  # attribute -> access selectors

    def __init__(self, *, logical_name: bytes, rights: Mapping[int, Access]) -> None:
        if len(logical_name) != 6:
            raise ValueError("a logical name is 6 octets")
        self.logical_name = bytes(logical_name)
        self.rights = dict(rights)

    def visible_to(self, client_sap: int) -> bool:
        return client_sap in self.rights

    def get(self, attribute_id: int, selection: AccessSelection | None, ctx: RequestContext) -> Answer:
        rights = self.rights.get(ctx.client_sap)
        if rights is None:
            return DataAccessResult.OBJECT_UNDEFINED
        if attribute_id not in rights.read:
            return DataAccessResult.READ_WRITE_DENIED
        if selection is not None and selection.selector not in self.selective_attributes.get(attribute_id, ()):
            return DataAccessResult.OBJECT_UNAVAILABLE
        if attribute_id == 1:
            return Data.octet_string(self.logical_name)
        return self._get(attribute_id, selection, ctx)

    def set(self, attribute_id: int, value: Data, ctx: RequestContext) -> DataAccessResult:
        rights = self.rights.get(ctx.client_sap)
        if rights is None:
            return DataAccessResult.OBJECT_UNDEFINED
        if attribute_id not in rights.write or attribute_id == 1:
            return DataAccessResult.READ_WRITE_DENIED
        return self._set(attribute_id, value, ctx)

    def action(self, method_id: int, parameters: Data | None, ctx: RequestContext) -> ActionAnswer:
        rights = self.rights.get(ctx.client_sap)
        if rights is None:
            return ActionResult.OBJECT_UNDEFINED, None
        if method_id not in rights.methods:
            return ActionResult.READ_WRITE_DENIED, None
        return self._action(method_id, parameters, ctx)

    def _get(self, attribute_id: int, selection: AccessSelection | None, ctx: RequestContext) -> Answer:
        return DataAccessResult.OBJECT_UNAVAILABLE

    def _set(self, attribute_id: int, value: Data, ctx: RequestContext) -> DataAccessResult:
        return DataAccessResult.READ_WRITE_DENIED

    def _action(self, method_id: int, parameters: Data | None, ctx: RequestContext) -> ActionAnswer:
        return ActionResult.OBJECT_UNAVAILABLE, None


ValueSource = Data | Callable[[], Data]


def _current(value: ValueSource) -> Data:
    return value() if callable(value) else value


class DataObject(CosemObject):
    """IC 1 Data: one value (attribute 2)."""

    class_id = 1
    version = 0
    attribute_count = 2

    def __init__(self, *, logical_name: bytes, rights: Mapping[int, Access], value: ValueSource) -> None:
        super().__init__(logical_name=logical_name, rights=rights)
        self.value = value

    def _get(self, attribute_id: int, selection: AccessSelection | None, ctx: RequestContext) -> Answer:
        return _current(self.value) if attribute_id == 2 else DataAccessResult.OBJECT_UNAVAILABLE

    def _set(self, attribute_id: int, value: Data, ctx: RequestContext) -> DataAccessResult:
        if callable(self.value):
            return DataAccessResult.READ_WRITE_DENIED  # a live value cannot be overwritten
        if value.type != self.value.type:
            return DataAccessResult.TYPE_UNMATCHED
        self.value = value
        return DataAccessResult.SUCCESS


class Register(CosemObject):
    """IC 3 Register: value (2) and scaler_unit (3); method 1 reset is not offered."""

    class_id = 3
    version = 0
    attribute_count = 3
    method_count = 1

    def __init__(
        self, *, logical_name: bytes, rights: Mapping[int, Access], value: ValueSource, scaler: int, unit: int
    ) -> None:
        super().__init__(logical_name=logical_name, rights=rights)
        self.value = value
        self.scaler = scaler
        self.unit = unit

    def _get(self, attribute_id: int, selection: AccessSelection | None, ctx: RequestContext) -> Answer:
        if attribute_id == 2:
            return _current(self.value)
        if attribute_id == 3:
            return Data.structure(Data.integer(self.scaler), Data.enum(self.unit))
        return DataAccessResult.OBJECT_UNAVAILABLE


def as_utc(moment: datetime.datetime) -> datetime.datetime:
    """A naive datetime is taken as UTC (our clocks and the simulator run in UTC)."""
    return moment.replace(tzinfo=datetime.UTC) if moment.tzinfo is None else moment.astimezone(datetime.UTC)


# Blue Book 4.1.6.1: a date-time with every field "not specified" (deviation 0x8000).
UNSPECIFIED_DATE_TIME = bytes.fromhex("FFFFFFFFFFFFFFFFFF8000FF")
CLOCK_BASE_CRYSTAL = 1  # Blue Book IC 8 clock_base: internal crystal


def _octets(value: Data) -> bytes:
    assert isinstance(value.value, bytes)
    return value.value


class Clock(CosemObject):
    """IC 8 Clock, in UTC (time_zone 0, no DST); time comes from an injected clock, a SET shifts it."""

    class_id = 8
    version = 0
    attribute_count = 9
    method_count = 6

    def __init__(
        self,
        *,
        logical_name: bytes,
        rights: Mapping[int, Access],
        clock: Callable[[], datetime.datetime],
    ) -> None:
        super().__init__(logical_name=logical_name, rights=rights)
        self._clock = clock
        self._offset = datetime.timedelta(0)

    def now(self) -> datetime.datetime:
        return as_utc(self._clock()) + self._offset

    def _get(self, attribute_id: int, selection: AccessSelection | None, ctx: RequestContext) -> Answer:
        match attribute_id:
            case 2:  # Blue Book IC 8: time is octet-string(12), not the date-time type
                return Data.octet_string(_octets(date_time(self.now(), deviation_minutes=0)))
            case 3:
                return Data.long(0)
            case 4:
                return Data.unsigned(0)
            case 5 | 6:
                return Data.octet_string(UNSPECIFIED_DATE_TIME)
            case 7:
                return Data.integer(0)
            case 8:
                return Data.boolean(False)
            case 9:
                return Data.enum(CLOCK_BASE_CRYSTAL)
        return DataAccessResult.OBJECT_UNAVAILABLE

    def _set(self, attribute_id: int, value: Data, ctx: RequestContext) -> DataAccessResult:
        if attribute_id != 2:
            return DataAccessResult.READ_WRITE_DENIED
        if value.type not in (DataType.OCTET_STRING, DataType.DATE_TIME) or not isinstance(value.value, bytes):
            return DataAccessResult.TYPE_UNMATCHED
        try:
            wanted = parse_date_time(value.value)
        except AxdrError:
            return DataAccessResult.TYPE_UNMATCHED
        if wanted is None:
            return DataAccessResult.OTHER_REASON  # a wildcard time cannot be set
        self._offset = as_utc(wanted) - as_utc(self._clock())
        return DataAccessResult.SUCCESS


class ControlState:
    """Blue Book IC 70 control_state values."""

    DISCONNECTED = 0
    CONNECTED = 1
    READY_FOR_RECONNECTION = 2


class DisconnectControl(CosemObject):
    """IC 70 Disconnect control: methods 1 remote_disconnect and 2 remote_reconnect.

    Only the remote transitions are modelled (a simulator has no button): in control modes
    2, 4 and 6 remote_reconnect closes the switch; in 1, 3 and 5 it only arms it
    (ready_for_reconnection); mode 0 means "always connected" and refuses both methods.
    """

    class_id = 70
    version = 0
    attribute_count = 4
    method_count = 2

    def __init__(self, *, logical_name: bytes, rights: Mapping[int, Access], control_mode: int = 2) -> None:
        super().__init__(logical_name=logical_name, rights=rights)
        self.control_mode = control_mode
        self.control_state = ControlState.CONNECTED

    @property
    def output_state(self) -> bool:
        return self.control_state == ControlState.CONNECTED

    def _get(self, attribute_id: int, selection: AccessSelection | None, ctx: RequestContext) -> Answer:
        match attribute_id:
            case 2:
                return Data.boolean(self.output_state)
            case 3:
                return Data.enum(self.control_state)
            case 4:
                return Data.enum(self.control_mode)
        return DataAccessResult.OBJECT_UNAVAILABLE

    def _set(self, attribute_id: int, value: Data, ctx: RequestContext) -> DataAccessResult:
        if attribute_id != 4:
            return DataAccessResult.READ_WRITE_DENIED
        if value.type != DataType.ENUM or not isinstance(value.value, int) or not 0 <= value.value <= 6:
            return DataAccessResult.TYPE_UNMATCHED
        self.control_mode = value.value
        return DataAccessResult.SUCCESS

    def _action(self, method_id: int, parameters: Data | None, ctx: RequestContext) -> ActionAnswer:
        if self.control_mode == 0:
            return ActionResult.TEMPORARY_FAILURE, None
        if method_id == 1:
            self.control_state = ControlState.DISCONNECTED
        elif method_id == 2:
            direct = self.control_mode in (2, 4, 6)
            self.control_state = ControlState.CONNECTED if direct else ControlState.READY_FOR_RECONNECTION
        else:
            return ActionResult.OBJECT_UNAVAILABLE, None
        return ActionResult.SUCCESS, None


SAP_MAX = 0xFFFF  # Blue Book IC 17: SAP is long-unsigned


class SapAssignment(CosemObject):
    """IC 17 SAP assignment: the list comes from a callable, connect_logical_device goes to a callback."""

    class_id = 17
    version = 0
    attribute_count = 2
    method_count = 1

    def __init__(
        self,
        *,
        logical_name: bytes,
        rights: Mapping[int, Access],
        assignments: Callable[[], Sequence[tuple[int, bytes]]],
        connect_logical_device: Callable[[int, bytes], ActionResult],
    ) -> None:
        super().__init__(logical_name=logical_name, rights=rights)
        self._assignments = assignments
        self._connect = connect_logical_device

    def _get(self, attribute_id: int, selection: AccessSelection | None, ctx: RequestContext) -> Answer:
        if attribute_id != 2:
            return DataAccessResult.OBJECT_UNAVAILABLE
        return Data.array(
            *(Data.structure(Data.long_unsigned(sap), Data.octet_string(name)) for sap, name in self._assignments())
        )

    def _action(self, method_id: int, parameters: Data | None, ctx: RequestContext) -> ActionAnswer:
        if method_id != 1:
            return ActionResult.OBJECT_UNAVAILABLE, None
        # connect_logical_device(structure{long-unsigned SAP, octet-string name}); SAP 0 disconnects the device.
        if parameters is None or parameters.type != DataType.STRUCTURE or len(parameters.items) != 2:
            return ActionResult.TYPE_UNMATCHED, None
        sap, name = parameters.items
        if sap.type != DataType.LONG_UNSIGNED or not isinstance(sap.value, int) or not isinstance(name.value, bytes):
            return ActionResult.TYPE_UNMATCHED, None
        if name.type != DataType.OCTET_STRING:
            return ActionResult.TYPE_UNMATCHED, None
        return self._connect(sap.value, name.value), None
