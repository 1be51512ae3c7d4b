"""Reading Nix archives (NARs): the serialisation of a store path that binary caches serve.

A NAR is a sequence of padded strings (a little-endian u64 length, the bytes, zeros up to a
multiple of 8): `nix-archive-1`, then one node. A node is `( type regular [executable ""]
contents <bytes> )`, `( type symlink target <string> )` or `( type directory { entry ( name
<string> node <node> ) } )`, the entries of a directory in strictly ascending bytewise order of
their names. That is everything Nix stores: no owners, no timestamps, no hard links, no other
file kinds, so nothing in a NAR needs Nix to be understood.

`NarReader.entries()` walks the archive once, in its own (depth-first) order, handing out each
regular file's body as it streams past; a body the caller does not read is skipped.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

NAR_MAGIC = b"nix-archive-1"
# Bodies are handed out in pieces of this size: memory stays bounded however large a file is.
READ_SIZE = 1 << 20
# Nix's own limits on what it writes: a file name is one path component, a link target a path.
_NAME_LIMIT = 255
_TARGET_LIMIT = 4095
_TOKEN_LIMIT = 16  # the longest keyword ("executable")
_MAX_DEPTH = 256  # deeper than any real store path; bounds the recursion of a hostile archive

Kind = Literal["regular", "symlink", "directory"]


class NarFormatError(ValueError):
    """The bytes are not a well-formed NAR."""


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


@dataclass(frozen=True)
class NarEntry:
    """One node: `path` is relative to the archive's root ("" for the root itself), os.fsdecode'd
    as names read from the file system are."""

    path: str
    kind: Kind
    executable: bool = False
    size: int = 0  # regular files only
    target: str = ""  # symlinks only


class NarBody:
    """A regular file's bytes, readable once, while the reader stands on its entry."""

    def __init__(self, reader: NarReader, size: int) -> None:
        self._reader = reader
        self.remaining = size

    def chunks(self) -> Iterator[bytes]:
        while self.remaining:
            chunk = self._reader._read_exact(min(READ_SIZE, self.remaining))
            self.remaining -= len(chunk)
            yield chunk

    def skip(self) -> None:
        for _ in self.chunks():
            pass


class NarReader:
    """One pass over a NAR read from `source` (any object with `read(n)`)."""

    def __init__(self, source: Readable) -> None:
        self._source = source
        # The archive is read in large pieces: most reads are 8-byte tokens, and a decompressor
        # (and the hash behind it) costs per call, not per byte.
        self._buffer = b""
        self._offset = 0

    def entries(self) -> Iterator[tuple[NarEntry, NarBody | None]]:
        """Every node in archive order with, for regular files, its body (read it before asking
        for the next entry, or it is skipped). Raises NarFormatError on malformed input."""
        if self._read_string(_TOKEN_LIMIT) != NAR_MAGIC:
            raise NarFormatError("not a NAR: bad magic")
        yield from self._node("", 0)
        if self._offset < len(self._buffer) or self._source.read(1):
            raise NarFormatError("trailing bytes after the archive")

    def _node(self, path: str, depth: int) -> Iterator[tuple[NarEntry, NarBody | None]]:
        if depth > _MAX_DEPTH:
            raise NarFormatError("directories nested too deeply")
        self._expect(b"(")
        self._expect(b"type")
        kind = self._read_string(_TOKEN_LIMIT)
        if kind == b"regular":
            executable = False
            token = self._read_string(_TOKEN_LIMIT)
            if token == b"executable":
                self._expect(b"")
                executable = True
                token = self._read_string(_TOKEN_LIMIT)
            if token != b"contents":
                raise NarFormatError(f"{path!r}: expected contents, got {token!r}")
            size = self._read_u64()
            body = NarBody(self, size)
            yield NarEntry(path, "regular", executable=executable, size=size), body
            body.skip()
            self._skip_padding(size)
            self._expect(b")")
        elif kind == b"symlink":
            self._expect(b"target")
            target = self._read_string(_TARGET_LIMIT)
            if not target or b"\0" in target:
                raise NarFormatError(f"{path!r}: bad symlink target")
            self._expect(b")")
            yield NarEntry(path, "symlink", target=os.fsdecode(target)), None
        elif kind == b"directory":
            yield NarEntry(path, "directory"), None
            previous = b""
            while True:
                token = self._read_string(_TOKEN_LIMIT)
                if token == b")":
                    break
                if token != b"entry":
                    raise NarFormatError(f"{path!r}: expected entry, got {token!r}")
                self._expect(b"(")
                self._expect(b"name")
                name = self._read_string(_NAME_LIMIT)
                if name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
                    raise NarFormatError(f"{path!r}: bad entry name {name!r}")
                if previous and name <= previous:
                    raise NarFormatError(f"{path!r}: entries out of order at {name!r}")
                previous = name
                self._expect(b"node")
                child = os.fsdecode(name)
                yield from self._node(f"{path}/{child}" if path else child, depth + 1)
                self._expect(b")")
        else:
            raise NarFormatError(f"{path!r}: unknown node type {kind!r}")

    def _read_exact(self, size: int) -> bytes:
        end = self._offset + size
        if end <= len(self._buffer):
            data = self._buffer[self._offset : end]
            self._offset = end
            return data
        parts = [self._buffer[self._offset :]]
        needed = size - len(parts[0])
        self._buffer, self._offset = b"", 0
        while needed:
            chunk = self._source.read(max(needed, READ_SIZE))
            if not chunk:
                raise NarFormatError("archive ends early")
            if len(chunk) > needed:
                parts.append(chunk[:needed])
                self._buffer, self._offset = chunk, needed
                needed = 0
            else:
                parts.append(chunk)
                needed -= len(chunk)
        return b"".join(parts)

    def _read_u64(self) -> int:
        return struct.unpack("<Q", self._read_exact(8))[0]

    def _skip_padding(self, length: int) -> None:
        padding = -length % 8
        if padding and self._read_exact(padding) != bytes(padding):
            raise NarFormatError("non-zero padding")

    def _read_string(self, limit: int) -> bytes:
        length = self._read_u64()
        if length > limit:
            raise NarFormatError(f"string of {length} bytes where at most {limit} belong")
        data = self._read_exact(length)
        self._skip_padding(length)
        return data

    def _expect(self, token: bytes) -> None:
        found = self._read_string(_TOKEN_LIMIT)
        if found != token:
            raise NarFormatError(f"expected {token!r}, got {found!r}")


def nar_listing(source: Readable) -> list[NarEntry]:
    """Every entry of the NAR, bodies skipped (their bytes are still read, e.g. to be hashed)."""
    return [entry for entry, _ in NarReader(source).entries()]
