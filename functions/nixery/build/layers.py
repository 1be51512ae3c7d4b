"""Layer blobs: deterministic gzipped tarballs written in one streaming pass.

Each layer is produced by a single pass over its sources: tar bytes are hashed (diff_id), gzipped,
hashed again (digest) and handed to a storage writer as they are made, so memory stays bounded by a
few chunks however large the layer is. The same inputs give the same bytes in any process.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import isal
from isal import igzip_threaded, isal_zlib

from nixery.oci import OCI_LAYER
from nixery.storage import BlobWriter, Storage

# isa-l's levels are 0-3. The layer is cut into blocks of _BLOCK_SIZE tar bytes, each compressed on
# its own thread with the previous block's last 32 KiB as dictionary, as pigz does: one standard
# gzip member whose bytes depend only on the tar bytes, the level and the block size, never on how
# many threads compressed it.
# Level 2 over level 1: as fast within the noise, and smaller (1.135x vs 1.149x gzip -6 on the
# benchmark's real files, BENCHMARKS.md), which leaves a margin under the 1.15x target.
_COMPRESSION_LEVEL = 2
_BLOCK_SIZE = 1 << 20
# Compression threads per layer, beside the thread that reads, tars and hashes; layers are also
# written concurrently (ImageBuilder's pool; more than 2 layer workers measured slower on 2 cores).
# The bytes do not depend on this.
_COMPRESSION_THREADS = 2
# The compressor decides a layer's bytes and so its digest: any change here must change this id,
# which is part of the layer-cache key.
COMPRESSOR = (
    f"isal-{isal.__version__}/isa-l-{isal.ISAL_VERSION}/"
    f"gzip-{_COMPRESSION_LEVEL}/blocks-{_BLOCK_SIZE}"
)

# The Nix store's own timestamp for every path; anything else would make layers differ per build.
_MTIME = 1
_DIR_MODE = 0o755
_TMP_MODE = 0o1777
_SYMLINK_MODE = 0o777
_RAW_DEFLATE = -15
# igzip_threaded's gzip header: no flags, zero mtime, then XFL 255 and OS 0 (isal 1.9.1 packs its
# OS byte before its XFL byte; decoders ignore both).
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\xff\x00"
# A final, empty fixed-Huffman block: what closes igzip_threaded's stream of sync-flushed blocks.
_FINAL_EMPTY_DEFLATE_BLOCK = isal_zlib.compress(b"", wbits=_RAW_DEFLATE)

# Bytes are fed to the compressor in chunks of exactly _BLOCK_SIZE, so the compressed stream
# depends only on the tar bytes, never on how the tar writer happened to split its writes.
_CHUNK = _BLOCK_SIZE
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE

_BASH = "bin/bash"
_SH = "bin/sh"
_ENV = "bin/env"
_USR_ENV = "usr/bin/env"
_CA_BUNDLE = "etc/ssl/certs/ca-bundle.crt"
# Where a cacert package may keep its bundle when it is not at the path that Nix tools look for.
_CA_BUNDLE_SOURCES = (_CA_BUNDLE, "etc/ssl/certs/ca-certificates.crt")
# nixpkgs' `cacert` is named `nss-cacert-<version>`.
_CACERT_NAME_PREFIXES = ("cacert-", "nss-cacert-")


@dataclass(frozen=True)
class LayerBlob:
    digest: str  # "sha256:<hex>" of the compressed stream
    diff_id: str  # "sha256:<hex>" of the uncompressed tar
    size: int  # compressed size


class StorePathChanged(OSError):
    """A source file changed while its layer was being written."""


def write_store_layer(paths: Sequence[str], storage: Storage) -> LayerBlob:
    """Tar the given absolute store paths, recursively, with their parent directories."""
    return _write_layer(_store_members(_store_layer_names(paths)), storage)


def image_root(top_level: Sequence[str]) -> dict[str, str | None]:
    """The image root's entries (name -> link target, None for a directory): the top-level
    paths merged like symlinkJoin, plus what a shell expects."""
    tree = _merge_top_level(top_level)
    _add_conventional_links(tree, top_level)
    return tree


def write_symlink_layer(top_level: Sequence[str], storage: Storage) -> LayerBlob:
    return write_image_root_layer(image_root(top_level), storage)


def write_image_root_layer(root: dict[str, str | None], storage: Storage) -> LayerBlob:
    """The symlink layer of an `image_root` already computed."""
    return _write_layer(_symlink_members(root), storage)


def _write_layer(
    members: Iterable[tuple[tarfile.TarInfo, str | None]], storage: Storage
) -> LayerBlob:
    # The writer aborts on any exception, so a half-written layer is never committed.
    with storage.writer() as writer:
        stream = _LayerStream(writer)
        try:
            for info, body_path in members:
                stream.write(tar_header(info))
                if body_path is not None:
                    _copy_body(body_path, info.size, stream)
            stream.finish_tar()
            blob = stream.finish()
        finally:
            stream.close()
        writer.commit(blob.digest, OCI_LAYER)
    return blob


class _CompressedSink:
    """Where the compressor's worker thread delivers gzip bytes: hashed, counted, stored."""

    def __init__(self, writer: BlobWriter) -> None:
        self._writer = writer
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, compressed: bytes) -> int:
        self.sha256.update(compressed)
        self.size += len(compressed)
        return self._writer.write(compressed)

    def flush(self) -> None:
        pass


class _LayerStream:
    """Tar bytes in; diff_id, gzip, digest and size computed on the way to the blob writer."""

    def __init__(self, writer: BlobWriter) -> None:
        self._tar_sha256 = hashlib.sha256()
        self._tar_size = 0
        self._pending = bytearray()
        self._sink = _CompressedSink(writer)
        # Started at the first whole block: most store-path layers are smaller than one, and for
        # them starting threads would cost more than compressing.
        self._gzip: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        self._tar_sha256.update(data)
        self._tar_size += len(data)
        self._pending += data
        whole = len(self._pending) - len(self._pending) % _CHUNK
        if whole:
            if self._gzip is None:
                # The gzip writer buffers exactly one block; every write here is exactly one
                # block (the last one excepted), so the blocks it compresses are the same
                # whatever its buffering.
                self._gzip = igzip_threaded.open(
                    self._sink,
                    "wb",
                    compresslevel=_COMPRESSION_LEVEL,
                    threads=_COMPRESSION_THREADS,
                    block_size=_BLOCK_SIZE,
                )
            with memoryview(self._pending) as view:
                for start in range(0, whole, _CHUNK):
                    self._gzip.write(view[start : start + _CHUNK])
            del self._pending[:whole]

    def finish_tar(self) -> None:
        """The end-of-archive marker, padded to a whole record as GNU tar and tarfile do."""
        end = self._tar_size + 2 * _BLOCK
        self.write(bytes(2 * _BLOCK + (-end) % _RECORD))

    def finish(self) -> LayerBlob:
        if self._gzip is None:
            self._compress_single_block(bytes(self._pending))
        else:
            self._gzip.write(self._pending)
            self._gzip.close()
        self._pending.clear()
        return LayerBlob(
            digest="sha256:" + self._sink.sha256.hexdigest(),
            diff_id="sha256:" + self._tar_sha256.hexdigest(),
            size=self._sink.size,
        )

    def _compress_single_block(self, block: bytes) -> None:
        """What igzip_threaded writes for a stream of one block, made on this thread."""
        compressor = isal_zlib.compressobj(_COMPRESSION_LEVEL, isal_zlib.DEFLATED, _RAW_DEFLATE)
        self._sink.write(_GZIP_HEADER)
        self._sink.write(compressor.compress(block) + compressor.flush(isal_zlib.Z_SYNC_FLUSH))
        self._sink.write(_FINAL_EMPTY_DEFLATE_BLOCK)
        self._sink.write(struct.pack("<II", isal_zlib.crc32(block), len(block) & 0xFFFFFFFF))

    def close(self) -> None:
        """Stop the compressor's threads (after `finish`, a no-op)."""
        if self._gzip is not None:
            self._gzip.close()


def _copy_body(path: str, size: int, stream: _LayerStream) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as source:
        if os.fstat(fd).st_size != size:
            raise StorePathChanged(f"{path} changed size while its layer was written")
        remaining = size
        while remaining:
            chunk = source.read(min(_CHUNK, remaining))
            if not chunk:
                raise StorePathChanged(f"{path} was truncated while its layer was written")
            stream.write(chunk)
            remaining -= len(chunk)
        if source.read(1):
            raise StorePathChanged(f"{path} grew while its layer was written")
    padding = -size % _BLOCK
    if padding:
        stream.write(bytes(padding))


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


def _tar_info(
    name: str, kind: bytes, mode: int, size: int = 0, target: str = ""
) -> tarfile.TarInfo:
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


def _store_members(names: list[tuple[str, bool]]) -> Iterator[tuple[tarfile.TarInfo, str | None]]:
    for name, is_synthesized in names:
        if is_synthesized:
            yield _tar_info(name, tarfile.DIRTYPE, _DIR_MODE), None
            continue
        path = "/" + name
        status = os.lstat(path)
        mode = stat.S_IMODE(status.st_mode)
        if stat.S_ISREG(status.st_mode):
            yield _tar_info(name, tarfile.REGTYPE, mode, size=status.st_size), path
        elif stat.S_ISDIR(status.st_mode):
            yield _tar_info(name, tarfile.DIRTYPE, mode), None
        elif stat.S_ISLNK(status.st_mode):
            yield _tar_info(name, tarfile.SYMTYPE, _SYMLINK_MODE, target=os.readlink(path)), None
        else:
            # The Nix store holds only these three kinds; anything else is not a store path.
            raise ValueError(f"{path}: unsupported file type {stat.S_IFMT(status.st_mode):o}")


# The symlink layer's tree: member name -> None for a directory, or the absolute link target.
_Tree = dict[str, str | None]


def _merge_top_level(top_level: Sequence[str]) -> _Tree:
    """symlinkJoin/lndir: directories merge, everything else links to its store path; first wins."""
    # /tmp is claimed before any package so that it is always a world-writable directory.
    tree: _Tree = {"tmp": None}
    for root in top_level:
        if not os.path.isdir(root) or not _inside_its_store(root):
            continue
        pending = [""]
        while pending:
            relative_dir = pending.pop()
            with os.scandir(os.path.join(root, relative_dir)) as entries:
                for entry in entries:
                    member = f"{relative_dir}/{entry.name}" if relative_dir else entry.name
                    is_dir = entry.is_dir(follow_symlinks=False)
                    if member not in tree:
                        tree[member] = None if is_dir else entry.path
                    elif not (is_dir and tree[member] is None):
                        continue  # an earlier package owns this name
                    if is_dir:
                        pending.append(member)
    return tree


def _inside_its_store(path: str) -> bool:
    """A store path that is a symlink may only lead to another path of the same store."""
    store = os.path.realpath(os.path.dirname(path))
    return os.path.realpath(path).startswith(store + os.sep)


def _add_conventional_links(tree: _Tree, top_level: Sequence[str]) -> None:
    """/bin/sh, /usr/bin/env and the CA bundle, each only when something real backs it."""
    _add_link(tree, _SH, tree.get(_BASH))
    _add_link(tree, _USR_ENV, tree.get(_ENV))
    if _CA_BUNDLE not in tree:
        for root in top_level:
            store_name = os.path.basename(root).partition("-")[2]
            if not store_name.startswith(_CACERT_NAME_PREFIXES):
                continue
            bundles = (os.path.join(root, source) for source in _CA_BUNDLE_SOURCES)
            bundle = next((path for path in bundles if os.path.isfile(path)), None)
            if _add_link(tree, _CA_BUNDLE, bundle):
                break


def _add_link(tree: _Tree, name: str, target: str | None) -> bool:
    """Link `name` to `target` unless that would dangle, shadow an entry or go through a link."""
    if target is None or name in tree or not os.path.exists(target):
        return False
    parts = name.split("/")
    parents = ["/".join(parts[:depth]) for depth in range(1, len(parts))]
    if any(tree.get(parent, None) is not None for parent in parents):
        return False  # a package made a parent a symlink; writing below it would change that
    for parent in parents:
        tree.setdefault(parent, None)
    tree[name] = target
    return True


def _symlink_members(tree: _Tree) -> Iterator[tuple[tarfile.TarInfo, str | None]]:
    for name in sorted(tree, key=_sort_key):
        target = tree[name]
        if target is None:
            mode = _TMP_MODE if name == "tmp" else _DIR_MODE
            yield _tar_info(name, tarfile.DIRTYPE, mode), None
        else:
            yield _tar_info(name, tarfile.SYMTYPE, _SYMLINK_MODE, target=target), None
