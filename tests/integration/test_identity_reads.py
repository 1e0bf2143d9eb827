"""One identity read per meter at a time: callers that meet share it, and one that is cancelled
(an interrupted ping) leaves it to the others."""

from __future__ import annotations

import asyncio

import pytest

from gateway.control.discovery import identify
from gateway.daemon import Gateway
from tests.integration.conftest import SimLine


async def test_callers_share_one_read_and_a_cancelled_one_leaves_it_to_the_others(
        sim_line: SimLine, gateway: Gateway) -> None:
    interrupted = asyncio.create_task(identify(gateway, 18))
    waiting = asyncio.create_task(identify(gateway, 18, background=True))
    await asyncio.sleep(0)  # one turn of the loop, no time: both callers now wait on the read
    assert len(gateway.identity_reads) == 1
    associations_before = sim_line.meters[1].device.counters.associations  # type: ignore[attr-defined]
    interrupted.cancel()
    with pytest.raises(asyncio.CancelledError):
        await interrupted
    meter = await waiting
    registered = gateway.registry.get(18)
    assert meter.name_text == "SIM0000000000002" and registered is not None and registered.name_text == meter.name_text
    assert sim_line.meters[1].device.counters.associations == associations_before + 1  # type: ignore[attr-defined]
    assert gateway.identity_reads == {}
