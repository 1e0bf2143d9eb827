"""Every fuzz target under hypothesis: its seeds, mutations of them and random bytes hold the invariant."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cosem.test_fuzz import mutated
from tests.fuzz.seeds import seeds
from tests.fuzz.targets import TARGETS

SEEDS = seeds()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_hold(name: str) -> None:
    for data in SEEDS[name]:
        TARGETS[name].one_input(data)


def test_the_fuzzing_command_knows_every_target() -> None:
    from tests.fuzz.__main__ import TARGET_NAMES  # noqa: PLC0415

    assert sorted(TARGET_NAMES) == sorted(TARGETS)


def test_every_target_has_seeds_on_disk() -> None:
    from tests.fuzz.seeds import CORPUS  # noqa: PLC0415

    for name in TARGETS:
        on_disk = sorted(p.read_bytes() for p in (CORPUS / name).glob("seed-*"))
        assert on_disk == sorted(SEEDS[name]), f"corpus/{name} is stale: run python -m tests.fuzz.seeds"


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutations_hold(name: str, data: st.DataObject) -> None:
    TARGETS[name].one_input(data.draw(st.one_of(mutated(SEEDS[name]), st.binary(max_size=300))))
