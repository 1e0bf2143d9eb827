"""Push delivery to a subscribed HES connection: a push leaves the queue only once written and drained.

The subscriber is a small in-process stand-in for a HES connection whose send buffer the test
controls (drained to the kernel, still holding bytes, or gone); the queue is the real PushStore.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.codec.wrapper import WrapperPdu
from gateway.config import PushConfig
from gateway.core.push import SUBSCRIBER_BATCH, PushForwarder
from gateway.core.pushstore import PushStore
from tests.wan.support import until

PUSHES = 20


class Subscriber:
    """What the forwarder sees of a HES connection: it sends, and says what is left unsent."""

    def __init__(self, name: str, *, drains: bool) -> None:
        self.peer = self.peer_address = name
        self.received: list[WrapperPdu] = []
        self.drains = drains  # False: the HES reads nothing, our send buffer keeps what we wrote
        self.gone = False

    def send(self, pdu: WrapperPdu) -> None:
        if not self.gone:
            self.received.append(pdu)

    def unsent_bytes(self) -> int | None:
        if self.gone:
            return None
        return 0 if self.drains or not self.received else 100


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[PushStore]:
    queue = PushStore(tmp_path / "pushes.db", max_bytes=1 << 20, max_age_s=3600)
    queue.put(destinations=["hes"], pushes=[(17, 0x66, bytes([0x0F, n])) for n in range(PUSHES)])
    yield queue
    queue.close()


async def test_a_batch_stays_queued_until_drained_and_is_delivered_again_when_the_connection_dies(
    store: PushStore,
) -> None:
    slow = Subscriber("10.0.0.1:4000", drains=False)
    current: list[Subscriber] = [slow]
    forwarder = PushForwarder(config=PushConfig(name="hes", reconnect_min_s=600.0), store=store,
                              subscriber=lambda: current[0])
    task = asyncio.create_task(forwarder.run())
    try:
        await until(lambda: len(slow.received) == SUBSCRIBER_BATCH)
        assert store.depth == PUSHES  # written, not drained: nothing deleted, nothing more written
        slow.gone = True  # the connection dies with our bytes still in its buffer
        fresh = Subscriber("10.0.0.1:4001", drains=True)
        current[0] = fresh
        forwarder.wake()
        await until(lambda: store.depth == 0)
        assert [pdu.apdu[1] for pdu in fresh.received] == list(range(PUSHES))  # the lost batch again, in order
        assert len(slow.received) == SUBSCRIBER_BATCH
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
