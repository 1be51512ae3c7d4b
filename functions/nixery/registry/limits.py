"""Per-client limits on expensive work: a client may build only so many images at once."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

RETRY_AFTER_SECONDS = 10


class BuildLimitReached(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"too many images building for this client at once (limit {limit})")
        self.limit = limit
        self.retry_after = RETRY_AFTER_SECONDS


class ClientBuildLimit:
    """Counts the distinct images each client is waiting to have built, in this process.

    Requests for an image the client already waits for share its slot (clients fetch one
    manifest several times at once); a new image over the limit is a 429.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._waiting: dict[str, Counter[str]] = {}

    @contextmanager
    def slot(self, client: str, image_key: str) -> Iterator[None]:
        with self._lock:
            images = self._waiting.setdefault(client, Counter())
            if image_key not in images and len(images) >= self.limit:
                raise BuildLimitReached(self.limit)
            images[image_key] += 1
        try:
            yield
        finally:
            with self._lock:
                images[image_key] -= 1
                if not images[image_key]:
                    del images[image_key]
                if not images:
                    del self._waiting[client]

    def images_building(self, client: str) -> int:
        with self._lock:
            return len(self._waiting.get(client, ()))
