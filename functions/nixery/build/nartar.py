"""A layer's tar members made from NARs instead of realised store paths, byte for byte the same.

`tarstream.store_members` walks realised paths: a full bytewise sort of member names, the parent
directories synthesized (mode 755), and what the store holds (directories 555, files 444 or 555,
symlinks 777). Here the same names and modes come from NAR listings.

Orders: a NAR is depth-first with each directory's entries sorted, the tar a sort of full names.
They disagree whenever a directory `d` has a sibling `d<c>...` with `c` below `/` in ASCII
(`include/foo/` beside `include/foo.h`; `-`, `.` and `+` all sort before `/`): the tar puts the
sibling before `d/...`, the NAR after. A streaming reader cannot know that before it has read all
of `d/...`, so the conversion takes two passes over each (already verified) NAR: the first gives
the listing (names only), the second the bodies. With the listing known, a body that arrives
before its turn (only those) is spooled; every other body goes straight from the decompressor
into the tar stream.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from nixery.build.nar import READ_SIZE, NarBody, NarEntry, NarReader, Readable
from nixery.build.tarstream import Member, tar_info

# What the store holds, whatever the machine: Nix canonicalises every path it registers.
_STORE_DIR_MODE = 0o555
_STORE_FILE_MODE = 0o444
_STORE_EXECUTABLE_MODE = 0o555
_SYNTHESIZED_DIR_MODE = 0o755  # as tarstream's synthesized parents
_SYMLINK_MODE = 0o777
# Out-of-order bodies stay in memory up to this much, then go to a temporary file.
SPOOL_MEMORY = 4 << 20


@dataclass(frozen=True)
class NarSource:
    """One store path of a layer: its absolute path, its listing (first pass) and a way to read
    its NAR again (second pass)."""

    store_path: str
    listing: Sequence[NarEntry]
    reopen: Callable[[], Readable]


@dataclass
class SpoolStats:
    """How many bodies (and bytes) arrived before their turn and were spooled."""

    bodies: int = 0
    size: int = 0


def _member_name(store_path: str, relative: str) -> str:
    base = os.path.normpath(store_path).lstrip("/")
    return f"{base}/{relative}" if relative else base


def nar_members(sources: Sequence[NarSource], stats: SpoolStats | None = None) -> Iterator[Member]:
    """The tar members of the given store paths, in `tarstream.store_members`' order."""
    named: dict[str, tuple[int, NarEntry] | None] = {}
    for index, source in enumerate(sources):
        parts = _member_name(source.store_path, "").split("/")
        for depth in range(1, len(parts)):
            named.setdefault("/".join(parts[:depth]), None)
        for entry in source.listing:
            named[_member_name(source.store_path, entry.path)] = (index, entry)
    order = sorted(named, key=os.fsencode)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY) as spool:
        bodies = _Bodies(sources, spool, stats or SpoolStats())
        for name in order:
            item = named[name]
            if item is None:
                yield tar_info(name, tarfile.DIRTYPE, _SYNTHESIZED_DIR_MODE), None
                continue
            index, entry = item
            if entry.kind == "directory":
                yield tar_info(name, tarfile.DIRTYPE, _STORE_DIR_MODE), None
            elif entry.kind == "symlink":
                yield tar_info(name, tarfile.SYMTYPE, _SYMLINK_MODE, target=entry.target), None
            else:
                mode = _STORE_EXECUTABLE_MODE if entry.executable else _STORE_FILE_MODE
                info = tar_info(name, tarfile.REGTYPE, mode, size=entry.size)
                yield info, bodies.body(index, entry)
        bodies.finish()


class _Bodies:
    """The second pass: NARs read in order, each body handed out live when it is the one the tar
    needs next, else spooled until it is."""

    def __init__(self, sources: Sequence[NarSource], spool: IO[bytes], stats: SpoolStats) -> None:
        self._sources = sources
        self._spool = spool
        self._stats = stats
        self._spooled: dict[tuple[int, str], tuple[int, int]] = {}  # -> (offset, size)
        self._current = -1
        self._entries: Iterator[tuple[NarEntry, NarBody | None]] = iter(())
        self._listed: Iterator[NarEntry] = iter(())

    def body(self, index: int, entry: NarEntry) -> Iterator[bytes]:
        key = (index, entry.path)
        if key in self._spooled:
            return self._from_spool(*self._spooled.pop(key))
        while True:
            found_index, found, body = self._next_file()
            if (found_index, found.path) == key:
                return body.chunks()
            self._spool_body(found_index, found, body)

    def finish(self) -> None:
        """Every NAR read to its end (so a malformed tail is noticed) and every body used."""
        while self._current < len(self._sources):
            for entry, _ in self._entries:
                self._check_listed(entry)
            if next(self._listed, None) is not None:
                raise ValueError(f"{self._name()}: second pass is shorter than the listing")
            self._open_next()
        if self._spooled:
            raise ValueError("spooled bodies were never written")

    def _next_file(self) -> tuple[int, NarEntry, NarBody]:
        while True:
            for entry, body in self._entries:
                self._check_listed(entry)
                if body is not None:
                    return self._current, entry, body
            if next(self._listed, None) is not None:
                raise ValueError(f"{self._name()}: second pass is shorter than the listing")
            self._open_next()
            if self._current >= len(self._sources):
                raise ValueError("a body the listing promised is missing from its NAR")

    def _open_next(self) -> None:
        self._current += 1
        if self._current < len(self._sources):
            source = self._sources[self._current]
            self._entries = NarReader(source.reopen()).entries()
            self._listed = iter(source.listing)

    def _check_listed(self, entry: NarEntry) -> None:
        if next(self._listed, None) != entry:
            raise ValueError(f"{self._name()}: second pass differs from the listing")

    def _name(self) -> str:
        return self._sources[min(self._current, len(self._sources) - 1)].store_path

    def _spool_body(self, index: int, entry: NarEntry, body: NarBody) -> None:
        self._spool.seek(0, os.SEEK_END)
        offset = self._spool.tell()
        for chunk in body.chunks():
            self._spool.write(chunk)
        self._spooled[(index, entry.path)] = (offset, entry.size)
        self._stats.bodies += 1
        self._stats.size += entry.size

    def _from_spool(self, offset: int, size: int) -> Iterator[bytes]:
        remaining = size
        position = offset
        while remaining:
            # Seek each time: spooling other bodies may move the file position in between.
            self._spool.seek(position)
            chunk = self._spool.read(min(READ_SIZE, remaining))
            if not chunk:
                raise ValueError("spool ended early")
            position += len(chunk)
            remaining -= len(chunk)
            yield chunk
