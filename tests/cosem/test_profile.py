"""Profile generic (IC 7): attributes and selective access by range and by entry."""

from __future__ import annotations

import pytest

from gateway.codec.axdr import Data
from gateway.codec.xdlms import AccessSelection, DataAccessResult
from gateway.cosem.profile import CaptureObject
from gateway.sim.meter import ACTIVE_ENERGY_IMPORT, CLOCK, LOAD_PROFILE, profile_rows
from tests.cosem.client import TestClient
from tests.cosem.conftest import NOW, SETTINGS
from tests.cosem.test_association import hls_associate

ROWS = profile_rows(SETTINGS, NOW)
CLOCK_COLUMN = CaptureObject(8, CLOCK, 2).to_data()
ENERGY_COLUMN = CaptureObject(3, ACTIVE_ENERGY_IMPORT, 2).to_data()
WILDCARD = Data.octet_string(bytes.fromhex("FFFFFFFFFFFFFFFFFF8000FF"))


def rows(selected: list[tuple[Data, ...]]) -> Data:
    return Data.array(*(Data.structure(*row) for row in selected))


def by_range(low: Data, high: Data, *columns: Data) -> AccessSelection:
    return AccessSelection(1, Data.structure(CLOCK_COLUMN, low, high, Data.array(*columns)))


def by_entry(from_entry: int, to_entry: int, from_value: int, to_value: int) -> AccessSelection:
    return AccessSelection(2, Data.structure(
        Data.double_long_unsigned(from_entry), Data.double_long_unsigned(to_entry),
        Data.long_unsigned(from_value), Data.long_unsigned(to_value),
    ))


@pytest.fixture
def reader(management: TestClient) -> TestClient:
    hls_associate(management)
    return management


def test_profile_attributes(reader: TestClient) -> None:
    assert reader.get(7, LOAD_PROFILE, 3) == Data.array(CLOCK_COLUMN, ENERGY_COLUMN)
    assert reader.get(7, LOAD_PROFILE, 4) == Data.double_long_unsigned(900)
    assert reader.get(7, LOAD_PROFILE, 5) == Data.enum(1)
    assert reader.get(7, LOAD_PROFILE, 7) == Data.double_long_unsigned(96)
    assert reader.get(7, LOAD_PROFILE, 8) == Data.double_long_unsigned(96)


def test_rows_are_quarter_hours_up_to_now_with_growing_energy() -> None:
    assert len(ROWS) == 96
    energies = [row[1].value for row in ROWS if isinstance(row[1].value, int)]
    assert len(energies) == 96
    assert energies == sorted(energies) and energies[0] != energies[-1]
    # the last capture is the quarter hour at or before NOW (12:07:30 -> 12:00:00)
    assert ROWS[-1][0].value == bytes.fromhex("07EA0B1506") + bytes([12, 0, 0, 0, 0, 0, 0])


def test_range_selects_rows_inclusive(reader: TestClient) -> None:
    answer = reader.get(7, LOAD_PROFILE, 2, by_range(ROWS[10][0], ROWS[20][0]))
    assert answer == rows(ROWS[10:21])


def test_range_with_selected_columns(reader: TestClient) -> None:
    answer = reader.get(7, LOAD_PROFILE, 2, by_range(ROWS[90][0], ROWS[95][0], ENERGY_COLUMN))
    assert answer == rows([(row[1],) for row in ROWS[90:]])


def test_range_with_a_wildcard_bound_is_open(reader: TestClient) -> None:
    assert reader.get(7, LOAD_PROFILE, 2, by_range(WILDCARD, ROWS[2][0])) == rows(ROWS[:3])
    assert reader.get(7, LOAD_PROFILE, 2, by_range(ROWS[93][0], WILDCARD)) == rows(ROWS[93:])


def test_range_outside_the_buffer_is_empty(reader: TestClient) -> None:
    late = Data.octet_string(bytes.fromhex("07EB0101FF000000FF0000FF"))  # 2027-01-01
    assert reader.get(7, LOAD_PROFILE, 2, by_range(late, late)) == Data.array()


def test_range_by_energy_values(reader: TestClient) -> None:
    low, high = ROWS[40][1], ROWS[42][1]
    selection = AccessSelection(1, Data.structure(ENERGY_COLUMN, low, high, Data.array()))
    assert reader.get(7, LOAD_PROFILE, 2, selection) == rows(ROWS[40:43])


@pytest.mark.parametrize(
    ("selection", "result"),
    [
        (AccessSelection(1, Data.structure(CaptureObject(1, bytes(6), 2).to_data(), WILDCARD, WILDCARD,
                                           Data.array())), DataAccessResult.OBJECT_UNAVAILABLE),
        (AccessSelection(1, Data.structure(CLOCK_COLUMN, WILDCARD)), DataAccessResult.TYPE_UNMATCHED),
        (AccessSelection(1, Data.long(3)), DataAccessResult.TYPE_UNMATCHED),
        (AccessSelection(1, Data.structure(CLOCK_COLUMN, Data.octet_string(b"abc"), WILDCARD, Data.array())),
         DataAccessResult.TYPE_UNMATCHED),
        (AccessSelection(3, Data.null()), DataAccessResult.OBJECT_UNAVAILABLE),
    ],
)
def test_bad_selections_get_a_data_access_result(
    reader: TestClient, selection: AccessSelection, result: DataAccessResult
) -> None:
    assert reader.get(7, LOAD_PROFILE, 2, selection) is result


def test_entry_descriptor(reader: TestClient) -> None:
    assert reader.get(7, LOAD_PROFILE, 2, by_entry(2, 4, 2, 2)) == rows([(row[1],) for row in ROWS[1:4]])
    assert reader.get(7, LOAD_PROFILE, 2, by_entry(95, 0, 0, 0)) == rows(ROWS[94:])
    assert reader.get(7, LOAD_PROFILE, 2, by_entry(200, 0, 1, 0)) == Data.array()
    assert reader.get(7, LOAD_PROFILE, 2, by_entry(1, 1, 3, 0)) is DataAccessResult.OBJECT_UNAVAILABLE


def test_selective_access_only_on_the_buffer(reader: TestClient) -> None:
    assert reader.get(7, LOAD_PROFILE, 3, by_entry(1, 1, 1, 1)) is DataAccessResult.OBJECT_UNAVAILABLE
