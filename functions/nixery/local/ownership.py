"""One `nixery serve` per storage, proven by a lock file, and what that proof allows at start-up:
whatever a previous process of the same storage left behind (build leases, half-written temp
files) belongs to nobody alive, so it is cleared rather than waited out."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import TextIO

LOCK_NAME = "serve.lock"


class StorageInUse(Exception):
    def __init__(self, storage: Path, holder: str) -> None:
        who = f" (pid {holder})" if holder else ""
        super().__init__(
            f"another `nixery serve`{who} is running on the storage {storage}; stop it first, "
            "or give this one another STORAGE_PATH"
        )


class StorageLock:
    """An exclusive flock on `<storage>/serve.lock`, held for the life of the process. The
    kernel drops it when the process dies however it dies, so a stale lock file never blocks."""

    def __init__(self, storage: Path) -> None:
        storage.mkdir(parents=True, exist_ok=True)
        self.path = storage / LOCK_NAME
        handle: TextIO = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise StorageInUse(storage, holder) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self._handle.close()
