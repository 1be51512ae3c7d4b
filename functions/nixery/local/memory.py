"""Bounded heap growth for the long-running server.

glibc gives each thread that allocates concurrently an arena of its own (up to 8 per core) and
rarely returns their memory: 50 concurrent scrypt checks (16 MiB each) left 460 MB resident,
never released. Two arenas keep the request threads' allocations in memory that is reused.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def bound_malloc_arenas(arenas: int = MALLOC_ARENAS) -> None:
    """Caps glibc's arenas for this process, before its threads start; an operator's
    MALLOC_ARENA_MAX wins. A no-op on a libc without mallopt (musl)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("no mallopt in this libc: malloc arenas left as they are")
        return
    if mallopt(_M_ARENA_MAX, arenas) != 1:
        log.warning("mallopt(M_ARENA_MAX) refused: malloc arenas left as they are")
