"""An object made on first use: start-up pays nothing for what the first requests never touch."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class OnFirstUse(Generic[T]):
    """Stands for the object `make()` returns, made once, on the first attribute access.

    Every attribute is the made object's, so an `OnFirstUse` of an Index is used as the Index
    (cast it to the protocol's type). `make` runs at most once, even under concurrent first
    requests; if it raises, the next use tries again.
    """

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._made: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        made = self._made
        if made is None:
            with self._lock:
                if self._made is None:
                    self._made = self._make()
                made = self._made
        return made

    def __getattr__(self, name: str) -> Any:
        # Only called for names the proxy itself lacks, i.e. the made object's.
        return getattr(self.get(), name)
