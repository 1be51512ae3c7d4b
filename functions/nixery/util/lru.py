"""A thread-safe, bounded mapping: the least recently used entries go first.

The one cache type of the code base: hot manifests, token verdicts, the not-found memory,
resolved tags, signed URLs and ID tokens all live in an `Lru`. An entry may carry its own
expiry time (`put(..., expires_at=)`): from then on it reads as absent and is dropped.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class _Entry(NamedTuple, Generic[V]):
    value: V
    weight: int
    expires_at: float | None


class Lru(Generic[K, V]):
    """At most `max_entries` entries and, with weights, at most `max_weight` in all.

    `clock` (seconds) is read only for entries that expire; an entry is fresh while
    `clock() < expires_at`.
    """

    def __init__(
        self,
        max_entries: int,
        max_weight: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_entries = max_entries
        self._max_weight = max_weight
        self._clock = clock
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            if hit.expires_at is not None and self._clock() >= hit.expires_at:
                self._pop(key)
                return None
            self._entries.move_to_end(key)
            return hit.value

    def put(self, key: K, value: V, weight: int = 1, *, expires_at: float | None = None) -> None:
        if self._max_weight is not None and weight > self._max_weight:
            return
        with self._lock:
            self._pop(key)
            self._entries[key] = _Entry(value, weight, expires_at)
            self._weight += weight
            while len(self._entries) > self._max_entries or (
                self._max_weight is not None and self._weight > self._max_weight
            ):
                _, evicted = self._entries.popitem(last=False)
                self._weight -= evicted.weight

    def pop(self, key: K) -> None:
        with self._lock:
            self._pop(key)

    def _pop(self, key: K) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._weight -= old.weight

    def keys(self) -> list[K]:
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def weight(self) -> int:
        with self._lock:
            return self._weight
