"""nixery.util.lru.Lru, the one cache type: bounds, recency, weights and per-entry expiry."""

from __future__ import annotations

import threading

from nixery.util.lru import Lru


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_least_recently_used_goes_first() -> None:
    cache: Lru[str, int] = Lru(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert cache.keys() == ["a", "c"] and cache.get("b") is None


def test_weights_bound_the_total_and_an_oversized_entry_is_not_kept() -> None:
    cache: Lru[str, bytes] = Lru(10, max_weight=10)
    cache.put("a", b"a", 4)
    cache.put("b", b"b", 4)
    cache.put("c", b"c", 4)
    assert cache.keys() == ["b", "c"] and cache.weight == 8
    cache.put("huge", b"h", 11)
    assert cache.get("huge") is None and cache.weight == 8
    cache.put("b", b"b2", 1)  # replacing an entry replaces its weight
    assert cache.weight == 5 and cache.get("b") == b"b2"
    cache.pop("b")
    assert cache.weight == 4 and len(cache) == 1


def test_an_entry_expires_at_its_own_time() -> None:
    clock = FakeClock()
    cache: Lru[str, str] = Lru(10, clock=clock)
    cache.put("short", "s", expires_at=clock.now + 5)
    cache.put("long", "l", expires_at=clock.now + 50)
    cache.put("forever", "f")
    clock.now += 4.999
    assert cache.get("short") == "s"
    clock.now += 0.001  # fresh while clock() < expires_at
    assert cache.get("short") is None
    remaining = cache.keys()
    assert "short" not in remaining, "an expired entry is dropped when read"
    assert cache.get("long") == "l" and cache.get("forever") == "f"
    clock.now += 1e9
    assert cache.get("long") is None and cache.get("forever") == "f"


def test_putting_again_renews_the_expiry() -> None:
    clock = FakeClock()
    cache: Lru[str, int] = Lru(10, clock=clock)
    cache.put("k", 1, expires_at=clock.now + 1)
    clock.now += 2
    cache.put("k", 2, expires_at=clock.now + 1)
    assert cache.get("k") == 2


def test_the_clock_is_read_only_for_entries_that_expire() -> None:
    reads: list[int] = []

    def clock() -> float:
        reads.append(1)
        return 0.0

    cache: Lru[str, int] = Lru(10, clock=clock)
    cache.put("k", 1)
    assert cache.get("k") == 1 and reads == []


def test_concurrent_use_keeps_the_bounds() -> None:
    cache: Lru[int, int] = Lru(64, max_weight=100)

    def churn(offset: int) -> None:
        for i in range(2000):
            cache.put(offset + i % 200, i, weight=1 + i % 3)
            cache.get(offset + (i * 7) % 200)

    threads = [threading.Thread(target=churn, args=(n * 1000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) <= 64 and cache.weight <= 100
    # Each entry weighs 1 to 3: the running total matches what is held.
    assert len(cache) <= cache.weight <= 3 * len(cache)
