"""Layers straight from binary caches: narinfos for the closure graph, NAR streams for the layers,
nothing realised into /nix/store.

Per image: evaluation (Nix) gives the output paths; `closure` fetches their narinfos and those of
everything they reference (concurrently, verified against the trusted keys, cached by store
path) and gives the same closure graph `nix path-info` would; the layer plan is made from it as
for a realised closure. Only a layer whose blob is not stored yet costs a download: each of its
NARs is fetched once into a spool of its compressed bytes, checked (FileSize/FileHash, then
NarSize/NarHash while it is decompressed and listed), and only then converted into the layer's
tar stream (`nartar`): a corrupted or truncated NAR fails before any byte of it reaches a blob.

Anything this cannot do (a path missing from every cache, an unsigned narinfo, a cache down or
dropping connections, a NAR that fails its hash) raises `SubstitutionUnavailable`, and the
builder falls back to realising with Nix.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import json
import logging
import lzma
import posixpath
import tempfile
import threading
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO

import requests
import zstandard

from nixery.build.graph import STORE_DIR, ClosureGraph, StorePathInfo
from nixery.build.imageroot import ImageRoot, image_root
from nixery.build.layers import LayerBlob, write_members_layer
from nixery.build.nar import NarEntry, NarFormatError, Readable, nar_listing
from nixery.build.narinfo import (
    NarInfo,
    NarInfoError,
    parse_narinfo,
    parse_trusted_keys,
    verify_narinfo,
)
from nixery.build.nartar import NarSource, SpoolStats, nar_members
from nixery.storage import Storage
from nixery.util.lru import Lru

log = logging.getLogger(__name__)

# Concurrent narinfo requests: each is one small round trip, so latency, not bandwidth, bounds them.
NARINFO_WORKERS = 16
# A NAR download that fails (a dropped connection) is tried this many times in all.
NAR_ATTEMPTS = 2
REQUEST_TIMEOUT_SECONDS = 30.0
_DOWNLOAD_CHUNK = 1 << 16
# Compressed NARs stay in memory up to this size, then go to a temporary file.
_SPOOL_MEMORY = 1 << 20
_NARINFO_CACHE_ENTRIES = 100_000
# Listings of top-level store paths (for image roots), bounded by their number of entries.
_LISTING_CACHE_WEIGHT = 200_000
_MAX_SYMLINK_HOPS = 40


class SubstitutionUnavailable(Exception):
    """The caches cannot provide this: fall back to realising with Nix."""


@dataclass
class FetchStats:
    """What was downloaded, for logs and the benchmark."""

    narinfos: int = 0
    nars: int = 0
    nar_bytes: int = 0  # compressed, as transferred
    listing_nars: int = 0  # NARs fetched only for an image root's listing
    checking_passes: int = 0  # NARs read twice (no listing beforehand: check and list first)
    spooled: SpoolStats = field(default_factory=SpoolStats)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)


@dataclass(frozen=True)
class _Located:
    cache: str  # base URL, no trailing slash
    info: NarInfo


def parse_substituter_list(text: str) -> tuple[str, ...]:
    """Nix's whitespace-separated list; only HTTP(S) caches are read directly."""
    return tuple(url.rstrip("/") for url in text.split() if url.startswith(("http://", "https://")))


class Substituter:
    def __init__(
        self,
        caches: Sequence[str],
        trusted_public_keys: Iterable[str],
        *,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        if not caches:
            raise ValueError("no binary cache to substitute from")
        self.caches = tuple(url.rstrip("/") for url in caches)
        self._trusted = parse_trusted_keys(trusted_public_keys)
        self._timeout = timeout
        self._session = requests.Session()
        self._narinfos: Lru[str, _Located] = Lru(_NARINFO_CACHE_ENTRIES)
        self._listings: Lru[str, tuple[NarEntry, ...]] = Lru(
            _NARINFO_CACHE_ENTRIES, _LISTING_CACHE_WEIGHT
        )
        self._pool = ThreadPoolExecutor(NARINFO_WORKERS, thread_name_prefix="narinfo")
        self.stats = FetchStats()

    # --- the closure graph -------------------------------------------------------------------

    def closure(self, roots: Sequence[str]) -> ClosureGraph:
        """The runtime closure of `roots` as the caches describe it (every path signed)."""
        found: dict[str, _Located] = {}
        frontier = sorted(set(roots))
        while frontier:
            for path, located in zip(frontier, self._pool.map(self._locate, frontier), strict=True):
                found[path] = located
            frontier = sorted(
                {ref for path in frontier for ref in found[path].info.references} - set(found)
            )
        nodes = {
            path: StorePathInfo(
                path=path,
                nar_size=located.info.nar_size,
                references=tuple(ref for ref in located.info.references if ref != path),
            )
            for path, located in sorted(found.items())
        }
        return ClosureGraph(roots=tuple(sorted(set(roots))), nodes=nodes)

    def _locate(self, store_path: str) -> _Located:
        cached = self._narinfos.get(store_path)
        if cached is not None:
            return cached
        if not store_path.startswith(STORE_DIR + "/"):
            raise SubstitutionUnavailable(f"{store_path} is not in {STORE_DIR}")
        hash_part = store_path[len(STORE_DIR) + 1 :].partition("-")[0]
        refusals = []
        for cache in self.caches:
            text = self._get_text(f"{cache}/{hash_part}.narinfo")
            if text is None:
                continue
            try:
                info = parse_narinfo(text, store_path)
                verify_narinfo(info, self._trusted)
            except NarInfoError as error:
                refusals.append(str(error))  # another cache may hold a properly signed copy
                continue
            located = _Located(cache, info)
            self._narinfos.put(store_path, located)
            return located
        reason = "; ".join(refusals) or "in no binary cache"
        raise SubstitutionUnavailable(f"{store_path}: {reason}")

    def _get_text(self, url: str) -> str | None:
        """The body, or None for 404/403 (what S3-backed caches answer for a missing key)."""
        try:
            response = self._session.get(url, timeout=self._timeout)
        except requests.RequestException as error:
            raise SubstitutionUnavailable(f"{url}: {error}") from None
        self.stats.add(narinfos=1)
        if response.status_code in (403, 404):
            return None
        if response.status_code != 200:
            raise SubstitutionUnavailable(f"{url}: HTTP {response.status_code}")
        return response.text

    # --- layers ------------------------------------------------------------------------------

    def write_layer(
        self, paths: Sequence[str], storage: Storage, keep_listings: Collection[str] = ()
    ) -> LayerBlob:
        """The layer of `paths` (all located by `closure`), from their NARs. The listings of
        `keep_listings` (the image's top-level paths) are kept for its image root; the others are
        dropped, so memory does not grow with the closure.

        With a listing known beforehand (the cache's `.ls`, or an earlier read), each NAR is
        decompressed once: its bodies go to the tar as they arrive, and its NarHash is checked
        when it ends, before the layer is committed (a mismatch aborts the blob). Without one,
        a first pass checks the NAR and lists it, and a second one feeds the tar."""
        with contextlib.ExitStack() as stack:
            sources = []
            for path in sorted(paths):
                spool, reopen, listing = self._fetch_nar(path, self._known_listing(path))
                stack.callback(spool.close)
                sources.append(NarSource(path, listing, reopen))
            try:
                blob = write_members_layer(nar_members(sources, self.stats.spooled), storage)
            except _NAR_ERRORS as error:
                raise SubstitutionUnavailable(f"writing a layer from NARs: {error}") from None
        for source in sources:
            if source.store_path in keep_listings:
                self._listings.put(source.store_path, tuple(source.listing), len(source.listing))
        return blob

    def _known_listing(self, store_path: str) -> tuple[NarEntry, ...] | None:
        """What a NAR holds, when known without reading it (trusted only once the NAR that
        follows matches it entry for entry and by hash)."""
        return self._listings.get(store_path) or self._listing_file(store_path)

    def _fetch_nar(
        self, store_path: str, listing: Sequence[NarEntry] | None = None
    ) -> tuple[IO[bytes], Callable[[], Readable], Sequence[NarEntry]]:
        """The NAR's compressed bytes in a spool (checked against FileSize/FileHash), a way to
        read it decompressed (checked against NarSize/NarHash as it reaches its end), and its
        listing: `listing` if given, else read (and so checked) now."""
        located = self._locate(store_path)
        info = located.info
        url = f"{located.cache}/{info.url}"
        # Handed to the caller, who closes it; closed here on every failure.
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)  # noqa: SIM115
        try:
            self._download(url, info, spool)

            def reopen() -> Readable:
                spool.seek(0)
                return _VerifyingReader(_decompressed(spool, info.compression), info, url)

            if listing is None:
                listing = nar_listing(reopen())
                self.stats.add(checking_passes=1)
        except _NAR_ERRORS as error:
            spool.close()
            raise SubstitutionUnavailable(f"{url}: {error}") from None
        except BaseException:
            spool.close()
            raise
        return spool, reopen, listing

    def _download(self, url: str, info: NarInfo, spool: IO[bytes]) -> None:
        problem = ""
        for _ in range(NAR_ATTEMPTS):
            spool.seek(0)
            spool.truncate()
            file_hash = hashlib.sha256()
            size = 0
            try:
                with self._session.get(url, stream=True, timeout=self._timeout) as response:
                    if response.status_code != 200:
                        problem = f"HTTP {response.status_code}"
                        continue
                    for chunk in response.iter_content(_DOWNLOAD_CHUNK):
                        spool.write(chunk)
                        file_hash.update(chunk)
                        size += len(chunk)
            except requests.RequestException as error:
                problem = str(error)
                continue
            finally:
                self.stats.add(nar_bytes=size)
            if info.file_size is not None and size != info.file_size:
                problem = f"{size} bytes, narinfo says {info.file_size}"
                continue
            if info.file_sha256 is not None and file_hash.digest() != info.file_sha256:
                raise SubstitutionUnavailable(f"{url}: file does not match FileHash")
            self.stats.add(nars=1)
            return
        raise SubstitutionUnavailable(f"{url}: {problem}")

    # --- the image root ----------------------------------------------------------------------

    def image_root(self, graph: ClosureGraph) -> ImageRoot:
        """`imageroot.image_root` over the caches' listings instead of the file system: what
        a builder that realised `graph` would see (paths outside the closure do not exist)."""

        def listing(store_path: str) -> Mapping[str, NarEntry] | None:
            return self._listing(store_path) if store_path in graph.nodes else None

        return image_root(graph.roots, _ListingTree(listing))

    def _listing(self, store_path: str) -> Mapping[str, NarEntry]:
        """A store path's entries by relative path: its `.ls` file, else its NAR."""
        listing = self._listings.get(store_path)
        if listing is None:
            listing = self._listing_file(store_path)
            if listing is None:
                spool, _, fetched = self._fetch_nar(store_path)
                spool.close()
                self.stats.add(listing_nars=1)
                listing = tuple(fetched)
            self._listings.put(store_path, listing, weight=len(listing))
        return {entry.path: entry for entry in listing}

    def _listing_file(self, store_path: str) -> tuple[NarEntry, ...] | None:
        """The cache's `<hash>.ls` (written with `write-nar-listing`), when it has one."""
        located = self._locate(store_path)
        hash_part = store_path[len(STORE_DIR) + 1 :].partition("-")[0]
        try:
            text = self._get_text(f"{located.cache}/{hash_part}.ls")
            if text is None:
                return None
            document = json.loads(text)
            if document.get("version") != 1:
                return None
            return tuple(_listing_entries("", document["root"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # unreadable (e.g. brotli without a decoder): the NAR will do


def _listing_entries(path: str, node: Mapping[str, object]) -> Iterable[NarEntry]:
    kind = node["type"]
    if kind == "regular":
        size = node.get("size", 0)
        if not isinstance(size, int):
            raise TypeError("size")
        yield NarEntry(path, "regular", executable=node.get("executable") is True, size=size)
    elif kind == "symlink":
        yield NarEntry(path, "symlink", target=str(node["target"]))
    elif kind == "directory":
        yield NarEntry(path, "directory")
        entries = node.get("entries", {})
        if not isinstance(entries, dict):
            raise TypeError("entries")
        for name in sorted(entries, key=lambda n: n.encode("utf-8", "surrogateescape")):
            if name in ("", ".", "..") or "/" in name:
                raise ValueError(f"bad name {name!r}")
            yield from _listing_entries(f"{path}/{name}" if path else name, entries[name])
    else:
        raise ValueError(f"unknown type {kind!r}")


class _ListingTree:
    """The file-system questions `image_root` asks, answered from NAR listings: symlinks are
    followed within the store as the kernel would; anything outside the caches does not exist."""

    def __init__(self, listing: Callable[[str], Mapping[str, NarEntry] | None]) -> None:
        self._fetch_listing = listing
        self._children: dict[str, dict[str, list[tuple[str, bool]]]] = {}
        self._listings: dict[str, Mapping[str, NarEntry] | None] = {}

    def _listing(self, store_path: str) -> Mapping[str, NarEntry] | None:
        if store_path not in self._listings:
            self._listings[store_path] = self._fetch_listing(store_path)
        return self._listings[store_path]

    def _resolve(self, path: str) -> tuple[str, str, NarEntry] | None:
        pending = posixpath.normpath(path)
        for _ in range(_MAX_SYMLINK_HOPS):
            if not pending.startswith(STORE_DIR + "/"):
                return None
            base, _, relative = pending[len(STORE_DIR) + 1 :].partition("/")
            store_path = f"{STORE_DIR}/{base}"
            listing = self._listing(store_path)
            if listing is None:
                return None
            parts = relative.split("/") if relative else []
            current = ""
            entry = listing.get("")
            redirected = False
            for index in range(len(parts) + 1):
                if entry is None:
                    return None
                if entry.kind == "symlink":
                    link_dir = posixpath.dirname(posixpath.join(store_path, current))
                    target = posixpath.join(link_dir, entry.target)
                    pending = posixpath.normpath(posixpath.join(target, *parts[index:]))
                    redirected = True
                    break
                if index == len(parts):
                    return store_path, current, entry
                if entry.kind != "directory":
                    return None
                current = f"{current}/{parts[index]}" if current else parts[index]
                entry = listing.get(current)
            if not redirected:
                return None
        return None  # too many levels of symbolic links

    def is_dir(self, path: str) -> bool:
        found = self._resolve(path)
        return found is not None and found[2].kind == "directory"

    def is_file(self, path: str) -> bool:
        found = self._resolve(path)
        return found is not None and found[2].kind == "regular"

    def exists(self, path: str) -> bool:
        return self._resolve(path) is not None

    def inside_its_store(self, path: str) -> bool:
        return self._resolve(path) is not None  # resolution never leaves the store

    def list_dir(self, path: str) -> list[tuple[str, bool]]:
        found = self._resolve(path)
        if found is None or found[2].kind != "directory":
            return []
        store_path, directory, _ = found
        if store_path not in self._children:
            children: dict[str, list[tuple[str, bool]]] = {}
            for entry in (self._listing(store_path) or {}).values():
                if entry.path:
                    parent, _, name = entry.path.rpartition("/")
                    children.setdefault(parent, []).append((name, entry.kind == "directory"))
            self._children[store_path] = children
        return self._children[store_path].get(directory, [])


class NarMismatch(ValueError):
    """A NAR that is not the one its narinfo describes."""


class _VerifyingReader:
    """A decompressed NAR, hashed as it is read; at its end (or past NarSize) it must match the
    narinfo's NarSize and NarHash, or reading fails."""

    def __init__(self, source: Readable, info: NarInfo, url: str) -> None:
        self._source = source
        self._info = info
        self._url = url
        self._sha256 = hashlib.sha256()
        self._size = 0

    def read(self, size: int, /) -> bytes:
        data = self._source.read(size)
        self._sha256.update(data)
        self._size += len(data)
        if self._size > self._info.nar_size:
            raise NarMismatch(f"{self._url}: NAR longer than NarSize {self._info.nar_size}")
        if size and not data and not self._matches():
            raise NarMismatch(f"{self._url}: NAR does not match NarSize/NarHash")
        return data

    def _matches(self) -> bool:
        return self._size == self._info.nar_size and self._sha256.digest() == self._info.nar_sha256


_NAR_ERRORS = (
    NarFormatError,
    NarMismatch,
    ValueError,
    OSError,
    EOFError,
    lzma.LZMAError,
    zlib.error,
    zstandard.ZstdError,
)


def _decompressed(raw: IO[bytes], compression: str) -> Readable:
    if compression == "xz":
        return lzma.LZMAFile(raw, "rb")
    if compression == "bzip2":
        return bz2.BZ2File(raw, "rb")
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(
            raw, read_across_frames=True, closefd=False
        )
    if compression == "none":
        return raw
    raise SubstitutionUnavailable(f"unsupported compression {compression!r}")
