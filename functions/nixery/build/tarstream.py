"""Deterministic tar streams: members in a fixed order, headers as tarfile writes them, bodies
read once.

A layer's tar depends only on the names, kinds, modes, sizes, link targets and contents of its
members: every owner is root, every timestamp the Nix store's, hard links are stored as regular
files, and members come in bytewise order of their names. The headers are exactly what `tarfile`
writes in PAX format (tests compare them), made directly for ASCII names because tarfile's general
path costs more than compressing a small file.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence

# A member's header and its body: the file whose bytes follow it, or those bytes in pieces as
# they stream in from elsewhere (a NAR); None for directories and symlinks.
Body = str | Iterable[bytes]
Member = tuple[tarfile.TarInfo, Body | None]

# The Nix store's own timestamp for every path; anything else would make layers differ per build.
_MTIME = 1
_DIR_MODE = 0o755
_WORLD_WRITABLE_DIR_MODE = 0o1777
_SYMLINK_MODE = 0o777
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
# File bodies are read in pieces of this size: memory stays bounded however large a file is.
_READ_SIZE = 1 << 20


class StorePathChanged(OSError):
    """A source file changed while its layer was being written."""


def tar_stream(members: Iterable[Member]) -> Iterator[bytes]:
    """The bytes of a tar archive of `members`, in pieces: each header, each body (read as it is
    needed), and the end-of-archive marker padded to a whole record as GNU tar and tarfile do."""
    size = 0
    for info, body in members:
        header = tar_header(info)
        size += len(header)
        yield header
        if body is not None:
            pieces = _body(body, info.size) if isinstance(body, str) else _streamed(body, info)
            for piece in pieces:
                size += len(piece)
                yield piece
    end = size + 2 * _BLOCK
    yield bytes(2 * _BLOCK + (-end) % _RECORD)


def _body(path: str, size: int) -> Iterator[bytes]:
    """The file's bytes padded to whole blocks; it must still have the size its header states."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as source:
        if os.fstat(fd).st_size != size:
            raise StorePathChanged(f"{path} changed size while its layer was written")
        remaining = size
        while remaining:
            chunk = source.read(min(_READ_SIZE, remaining))
            if not chunk:
                raise StorePathChanged(f"{path} was truncated while its layer was written")
            yield chunk
            remaining -= len(chunk)
        if source.read(1):
            raise StorePathChanged(f"{path} grew while its layer was written")
    padding = -size % _BLOCK
    if padding:
        yield bytes(padding)


def _streamed(pieces: Iterable[bytes], info: tarfile.TarInfo) -> Iterator[bytes]:
    """Bytes from a stream, padded to whole blocks; exactly the size the header states."""
    remaining = info.size
    for piece in pieces:
        remaining -= len(piece)
        if remaining < 0:
            raise ValueError(f"{info.name}: body longer than its {info.size} bytes")
        yield piece
    if remaining:
        raise ValueError(f"{info.name}: body {remaining} bytes short of {info.size}")
    padding = -info.size % _BLOCK
    if padding:
        yield bytes(padding)


# Where the fields of a ustar header block are (POSIX.1-1988 as extended by POSIX.1-2001).
_MODE_FIELD = slice(100, 108)
_UID_GID_FIELDS = slice(108, 124)
_SIZE_FIELD = slice(124, 136)
_MTIME_FIELD = slice(136, 148)
_CHECKSUM_FIELD = slice(148, 155)  # six octal digits and a NUL; the space after them stays
_CHECKSUM_BLANK = slice(148, 156)
_TYPE_OFFSET = 156
_LINK_FIELD = slice(157, 257)
_MAGIC_FIELD = slice(257, 265)
_NAME_LIMIT = 100
_PAX_HEADER_NAME = "././@PaxHeader"  # tarfile's (and star's) name for extended headers
_OCTAL_SIZE_LIMIT = 8**11


def tar_header(info: tarfile.TarInfo) -> bytes:
    """The header block(s) `tarfile` writes for `info` in PAX format, made directly for ASCII names
    (a PAX `path`/`linkpath` record carries those over 100 characters, as store paths' often
    are) and by tarfile otherwise. tarfile's general path costs more than compressing a small
    file, and a store path holds thousands of them."""
    name = (
        info.name + "/"
        if info.type == tarfile.DIRTYPE and not info.name.endswith("/")
        else info.name
    )
    link = info.linkname
    plain = (
        name.isascii()
        and link.isascii()
        and 0 <= info.size < _OCTAL_SIZE_LIMIT
        and info.uid == info.gid == 0
        and info.uname == info.gname == ""
        and info.mtime == _MTIME
        and info.type in (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE)
    )
    if not plain:
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    records = b""
    if len(name) > _NAME_LIMIT:
        records += _pax_record("path", name)
    if len(link) > _NAME_LIMIT:
        records += _pax_record("linkpath", link)
    header = _ustar_block(name, info.type, info.mode & 0o7777, info.size, _MTIME, link)
    if not records:
        return header
    extended = _ustar_block(_PAX_HEADER_NAME, tarfile.XHDTYPE, 0, len(records), 0, "")
    return extended + records + bytes(-len(records) % _BLOCK) + header


def _ustar_block(name: str, kind: bytes, mode: int, size: int, mtime: int, link: str) -> bytes:
    """One ustar header block; names and links cut to 100 characters as tarfile cuts them."""
    block = bytearray(_BLOCK)
    encoded_name = name[:_NAME_LIMIT].encode("ascii")
    encoded_link = link[:_NAME_LIMIT].encode("ascii")
    block[: len(encoded_name)] = encoded_name
    block[_MODE_FIELD] = b"%07o\0" % mode
    block[_UID_GID_FIELDS] = b"0000000\0" * 2
    block[_SIZE_FIELD] = b"%011o\0" % size
    block[_MTIME_FIELD] = b"%011o\0" % mtime
    block[_CHECKSUM_BLANK] = b" " * 8
    block[_TYPE_OFFSET] = kind[0]
    block[_LINK_FIELD.start : _LINK_FIELD.start + len(encoded_link)] = encoded_link
    block[_MAGIC_FIELD] = tarfile.POSIX_MAGIC
    block[_CHECKSUM_FIELD] = b"%06o\0" % sum(block)
    return bytes(block)


def _pax_record(keyword: str, value: str) -> bytes:
    """`<length> <keyword>=<value>\n`, where the length counts its own digits (as tarfile does)."""
    length = len(keyword) + len(value) + 3  # " ", "=" and "\n"
    total = previous = 0
    while True:
        total = length + len(str(previous))
        if total == previous:
            break
        previous = total
    return b"%d %s=%s\n" % (total, keyword.encode("ascii"), value.encode("ascii"))


def tar_info(name: str, kind: bytes, mode: int, size: int = 0, target: str = "") -> tarfile.TarInfo:
    """A member's header fields, with nothing of the machine that wrote it."""
    # Built by hand: tarfile.gettarinfo would turn hard-linked files into link entries by inode
    # and copy owners and timestamps, all of which vary between machines.
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = target
    info.mtime = _MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _sort_key(name: str) -> bytes:
    return os.fsencode(name)


def store_members(paths: Sequence[str]) -> Iterator[Member]:
    """The given absolute store paths, recursively, with their parent directories.

    The names are walked now (so a bad path fails before anything is written); each member's
    status is read as the stream reaches it.
    """
    return _store_members(_store_layer_names(paths))


def _store_layer_names(paths: Sequence[str]) -> list[tuple[str, bool]]:
    """Every member name, sorted bytewise, each with whether it is a synthesized parent directory.

    Only names are kept (the file bodies are read later, one at a time). A full bytewise sort, not a
    depth-first walk, decides the order; since a name sorts before every name it prefixes, parents
    still come before their contents.
    """
    synthesized: dict[str, bool] = {}
    for path in paths:
        name = _member_name(path)
        parts = name.split("/")
        for depth in range(1, len(parts)):
            synthesized.setdefault("/".join(parts[:depth]), True)
        for member in _walk(name):
            synthesized[member] = False
    return sorted(synthesized.items(), key=lambda item: _sort_key(item[0]))


def _member_name(path: str) -> str:
    normalized = os.path.normpath(path)
    if not os.path.isabs(normalized) or normalized.strip("/") == "":
        raise ValueError(f"not an absolute path below /: {path!r}")
    return normalized.lstrip("/")


def _walk(name: str) -> Iterator[str]:
    """`name` and, when it is a real directory, everything below it (symlinks are not followed)."""
    yield name
    if not stat.S_ISDIR(os.lstat("/" + name).st_mode):
        return
    pending = [name]
    while pending:
        directory = pending.pop()
        with os.scandir("/" + directory) as entries:
            for entry in entries:
                member = f"{directory}/{entry.name}"
                yield member
                if entry.is_dir(follow_symlinks=False):
                    pending.append(member)


def _store_members(names: list[tuple[str, bool]]) -> Iterator[Member]:
    for name, is_synthesized in names:
        if is_synthesized:
            yield tar_info(name, tarfile.DIRTYPE, _DIR_MODE), None
            continue
        path = "/" + name
        status = os.lstat(path)
        mode = stat.S_IMODE(status.st_mode)
        if stat.S_ISREG(status.st_mode):
            yield tar_info(name, tarfile.REGTYPE, mode, size=status.st_size), path
        elif stat.S_ISDIR(status.st_mode):
            yield tar_info(name, tarfile.DIRTYPE, mode), None
        elif stat.S_ISLNK(status.st_mode):
            yield tar_info(name, tarfile.SYMTYPE, _SYMLINK_MODE, target=os.readlink(path)), None
        else:
            # The Nix store holds only these three kinds; anything else is not a store path.
            raise ValueError(f"{path}: unsupported file type {stat.S_IFMT(status.st_mode):o}")


def link_tree_members(
    tree: Mapping[str, str | None], world_writable: Collection[str] = ()
) -> Iterator[Member]:
    """A tree of directories (None) and symlinks (name -> target), in bytewise order of names;
    the directories named in `world_writable` get mode 1777, as /tmp needs."""
    for name in sorted(tree, key=_sort_key):
        target = tree[name]
        if target is None:
            mode = _WORLD_WRITABLE_DIR_MODE if name in world_writable else _DIR_MODE
            yield tar_info(name, tarfile.DIRTYPE, mode), None
        else:
            yield tar_info(name, tarfile.SYMTYPE, _SYMLINK_MODE, target=target), None
