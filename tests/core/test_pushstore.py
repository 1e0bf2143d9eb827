"""The push queue file: order per destination, bounds by size and age, drops counted durably."""

from __future__ import annotations

from pathlib import Path

from gateway.core.pushstore import PushStore


class Clock:
    now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_each_destination_gets_every_push_in_order_and_forgets_what_it_delivered(tmp_path: Path) -> None:
    store = PushStore(tmp_path / "pushes.db", max_bytes=1 << 20, max_age_s=3600)
    store.put(destinations=["a", "b"], pushes=[(17, 0x66, bytes([0x0F, n])) for n in range(5)])
    assert [p.apdu[1] for p in store.pending("a")] == [0, 1, 2, 3, 4]
    store.delivered(store.pending("a", limit=3))
    assert [p.apdu[1] for p in store.pending("a")] == [3, 4]
    assert [p.apdu[1] for p in store.pending("b")] == [0, 1, 2, 3, 4]  # b still owed everything
    assert store.depth == 7


def test_over_size_the_oldest_go_first_and_the_drops_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "pushes.db"
    store = PushStore(path, max_bytes=1000, max_age_s=3600)
    for n in range(30):  # 30 x 100 bytes into a 1000-byte queue
        store.put(destinations=["hes"], pushes=[(17, 0x66, bytes([0x0F, n]) + bytes(98))])
    kept = [p.apdu[1] for p in store.pending("hes")]
    assert kept == list(range(20, 30))
    assert store.dropped == 20
    store.close()
    again = PushStore(path, max_bytes=1000, max_age_s=3600)
    assert again.dropped == 20
    assert [p.apdu[1] for p in again.pending("hes")] == list(range(20, 30))


def test_pushes_older_than_the_age_limit_are_dropped(tmp_path: Path) -> None:
    clock = Clock()
    store = PushStore(tmp_path / "pushes.db", max_bytes=1 << 20, max_age_s=60, clock=clock)
    store.put(destinations=["hes"], pushes=[(17, 0x66, b"\x0f\x01")])
    clock.now += 30
    assert store.oldest_age_s() == 30.0
    clock.now += 31
    store.put(destinations=["hes"], pushes=[(17, 0x66, b"\x0f\x02")])
    assert [p.apdu for p in store.pending("hes")] == [b"\x0f\x02"]
    assert store.dropped == 1


def test_the_write_ahead_log_stays_near_the_queue_bound_and_empties_with_the_queue(tmp_path: Path) -> None:
    path = tmp_path / "pushes.db"
    wal = tmp_path / "pushes.db-wal"
    store = PushStore(path, max_bytes=16 * 1024, max_age_s=3600)
    largest = 0
    for burst in range(150):  # 3 MB of alarms through a 16 KiB queue, delivered as they come
        store.put(destinations=["hes"], pushes=[(17, 0x66, bytes([0x0F, burst, n]) + bytes(2000)) for n in range(10)])
        if burst % 3 == 0:
            store.delivered(store.pending("hes", limit=5))
        largest = max(largest, wal.stat().st_size)
    assert largest <= 512 * 1024  # SQLite's own default lets it reach 4 MiB whatever max_bytes is
    store.delivered(store.pending("hes", limit=1000))
    assert store.depth == 0
    assert wal.stat().st_size <= 64 * 1024
