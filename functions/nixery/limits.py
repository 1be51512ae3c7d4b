"""Per-client limits on expensive work: a client may run only so many cold builds at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from nixery import errors

RETRY_AFTER_SECONDS = 10


class ClientBuildLimit:
    """Counts each client's cold builds in this process; the one over the limit gets a 429."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    @contextmanager
    def slot(self, client: str) -> Iterator[None]:
        with self._lock:
            running = self._running.get(client, 0)
            if running >= self.limit:
                raise errors.too_many_requests(
                    f"too many images building for this client at once (limit {self.limit})",
                    self.limit,
                    RETRY_AFTER_SECONDS,
                )
            self._running[client] = running + 1
        try:
            yield
        finally:
            with self._lock:
                remaining = self._running[client] - 1
                if remaining:
                    self._running[client] = remaining
                else:
                    del self._running[client]

    def running(self, client: str) -> int:
        with self._lock:
            return self._running.get(client, 0)
