"""The substituter build path against a real binary cache on loopback.

The test set-up builds the tests' salted package set, signs a key, copies the closure into
`file://` caches (xz with NAR listings, and zstd), serves them over HTTP on 127.0.0.1 and deletes
the closure from the store: the builder starts with none of it, the cache as its substituter and
Nix offline (so a fallback realises by building). Every image must equal the one made by tarring
the realised closure, whichever path made it, and every fault must end in that same image (Nix
fallback) or a clean failure, never a partial blob.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from nixery.build.builder import ImageBuilder
from nixery.build.contract import AMD64, ImageRequest, Revision, image_key
from nixery.build.nix import Nix
from nixery.build.substituter import Substituter
from nixery.config import find_nix_dir
from nixery.index.sqlite import SqliteIndex
from nixery.registry.sources import PathSource
from nixery.storage.filesystem import FilesystemStorage
from tests.substituter.binary_cache import (
    CacheServer,
    SaltedSet,
    SigningKey,
    delete_from_store,
    fill_cache,
    generate_key,
    nix_env,
    salted_package_set,
)

PACKAGES = ("bashInteractive", "cacert", "iana-etc", "shapes", "single")
REQUEST = ImageRequest(repository="substituted", packages=PACKAGES, platform=AMD64)


@dataclass(frozen=True)
class Caches:
    salted: SaltedSet
    key: SigningKey
    xz: Path  # with .ls listings
    zstd: Path
    others: dict[str, Path]  # bzip2, gzip and none
    revision: Revision
    reference_manifest: str  # the OCI manifest's digest, built by realising
    reference_blobs: frozenset[str]


@dataclass
class Registry:
    builder: ImageBuilder
    storage: FilesystemStorage
    index: SqliteIndex
    substituter: Substituter | None


def make_registry(root: Path, substituter: Substituter | None) -> Registry:
    storage = FilesystemStorage(root / "storage")
    index = SqliteIndex(root / "index.sqlite")
    nix = Nix(
        find_nix_dir(), root / "gcroots", 300, extra_env={"NIX_CONFIG": nix_env()["NIX_CONFIG"]}
    )
    builder = ImageBuilder(nix, storage, index, {}, 20, substituter=substituter)
    return Registry(builder, storage, index, substituter)


def build(registry: Registry, revision: Revision) -> str:
    record = registry.builder.build(image_key(revision, REQUEST), REQUEST, revision)
    return record.oci_digest


def stored_blobs(storage: FilesystemStorage) -> frozenset[str]:
    """Every blob's digest, each checked against its content: nothing partial under a final name."""
    digests = set()
    for path in storage.blob_dir.iterdir():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, path
        digests.add("sha256:" + path.name)
    assert not any(storage.tmp_dir.iterdir()), "an upload was left behind"
    assert digests, "no blobs at all"
    return frozenset(digests)


def in_store(salted: SaltedSet) -> list[str]:
    return [path for path in salted.closure if os.path.lexists(path)]


def forget(salted: SaltedSet, root: Path) -> None:
    """The builder's GC roots gone and the closure deleted: the next build starts store-cold."""
    shutil.rmtree(root / "gcroots", ignore_errors=True)
    delete_from_store(salted.closure)
    assert in_store(salted) == []


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Caches]:
    scratch = tmp_path_factory.mktemp("caches")
    salted = salted_package_set(scratch / "pkgs", f"subst-{os.getpid()}-{os.urandom(4).hex()}")
    revision = PathSource(salted.directory).resolve("latest")
    assert revision is not None
    reference = make_registry(scratch / "reference", None)
    manifest = build(reference, revision)
    blobs = stored_blobs(reference.storage)
    key = generate_key(scratch / "keys", "nixery-test-cache-1")
    xz = fill_cache(scratch / "xz", key, salted.closure, "xz", listings=True)
    zstd = fill_cache(scratch / "zstd", key, salted.closure, "zstd")
    others = {
        compression: fill_cache(scratch / compression, key, salted.closure, compression)
        for compression in ("bzip2", "gzip", "none")
    }
    forget(salted, scratch / "reference")
    yield Caches(salted, key, xz, zstd, others, revision, manifest, blobs)
    forget(salted, scratch / "reference")


@pytest.fixture
def cold(caches: Caches, tmp_path: Path) -> Iterator[Path]:
    """A fresh registry root; afterwards the store is cold again, whatever the test realised."""
    assert in_store(caches.salted) == []
    yield tmp_path
    forget(caches.salted, tmp_path)


@pytest.mark.parametrize("compression", ["xz", "zstd"])
def test_streamed_image_equals_the_realised_one(
    caches: Caches, cold: Path, compression: str
) -> None:
    directory = caches.xz if compression == "xz" else caches.zstd
    with CacheServer(directory) as cache:
        substituter = Substituter([cache.url], [caches.key.public])
        registry = make_registry(cold, substituter)
        assert build(registry, caches.revision) == caches.reference_manifest
    assert in_store(caches.salted) == [], "the substituter path realised something"
    assert stored_blobs(registry.storage) == caches.reference_blobs
    # Each NAR once for the layers. The image root reads the top-level paths' listings the
    # layers kept; a path its links lead into (busybox, for /usr/bin/env) is listed from the
    # cache's .ls when there is one, else from its NAR once more.
    stats = substituter.stats
    assert stats.nars - stats.listing_nars == len(caches.salted.closure)
    assert stats.listing_nars == (0 if compression == "xz" else 1)
    # With the cache's .ls listings each NAR is decompressed once; without, twice.
    expected_passes = 0 if compression == "xz" else stats.nars
    assert substituter.stats.checking_passes == expected_passes
    # NarHash checked on what was downloaded: the figures match the cache's files.
    nar_files = sum(path.stat().st_size for path in (directory / "nar").iterdir())
    if compression != "xz":
        busybox = caches.salted.outputs["busybox"].removeprefix("/nix/store/").partition("-")[0]
        url = re.search(r"^URL: (.*)$", (directory / f"{busybox}.narinfo").read_text(), re.M)
        nar_files += (directory / url.group(1)).stat().st_size  # type: ignore[union-attr]
    assert {path.suffix for path in (directory / "nar").iterdir()} == {
        {"none": ".nar", "gzip": ".gz", "bzip2": ".bz2", "zstd": ".zst"}.get(compression, ".xz")
    }
    assert substituter.stats.nar_bytes == nar_files


@pytest.mark.parametrize("compression", ["xz", "zstd"])
def test_stored_layers_download_nothing(caches: Caches, cold: Path, compression: str) -> None:
    directory = caches.xz if compression == "xz" else caches.zstd
    with CacheServer(directory) as cache:
        first = make_registry(cold, Substituter([cache.url], [caches.key.public]))
        build(first, caches.revision)
        # A new builder process (nothing cached in memory) on the same storage and index.
        again = Substituter([cache.url], [caches.key.public])
        second = make_registry(cold, again)
        assert build(second, caches.revision) == caches.reference_manifest
    assert in_store(caches.salted) == []
    if compression == "xz":
        # The image root's listings came from the cache's .ls files: no NAR at all.
        assert again.stats.nars == 0
    else:
        # Without listings, only the top-level paths' NARs (and what their links lead to).
        assert 0 < again.stats.listing_nars == again.stats.nars < len(caches.salted.closure)


def corrupt_nar(cache: Path, store_path: str) -> None:
    """Change one byte of the NAR's content, recompress it and fix FileHash/FileSize (which the
    signature does not cover): only NarHash can tell."""
    narinfo = cache / (os.path.basename(store_path).partition("-")[0] + ".narinfo")
    text = narinfo.read_text()
    url = re.search(r"^URL: (.*)$", text, re.M).group(1)  # type: ignore[union-attr]
    if url.endswith(".xz"):
        nar = lzma.decompress((cache / url).read_bytes())
        compress: Callable[[bytes], bytes] = lzma.compress
    else:
        nar = zstandard.ZstdDecompressor().decompressobj().decompress((cache / url).read_bytes())
        compress = zstandard.ZstdCompressor().compress
    assert b"header\n" in nar
    compressed = compress(nar.replace(b"header\n", b"HEADER\n"))
    (cache / url).write_bytes(compressed)
    file_hash = hashlib.sha256(compressed).hexdigest()
    text = re.sub(r"^FileHash: .*$", f"FileHash: sha256:{file_hash}", text, flags=re.M)
    text = re.sub(r"^FileSize: .*$", f"FileSize: {len(compressed)}", text, flags=re.M)
    narinfo.write_text(text)


def resign_with_another_key(cache: Path, store_path: str, other: SigningKey) -> None:
    """The narinfo signed by a key of the same name that nobody trusts."""
    narinfo = cache / (os.path.basename(store_path).partition("-")[0] + ".narinfo")
    text = re.sub(r"^Sig: .*\n?", "", narinfo.read_text(), flags=re.M)
    narinfo.write_text(text)
    subprocess.run(
        ["nix", "store", "sign", "--store", f"file://{cache}", "--key-file", str(other.secret_file), store_path],
        check=True,
        env=nix_env(),
    )  # fmt: skip


def assert_fell_back_to_the_same_image(caches: Caches, registry: Registry, digest: str) -> None:
    assert digest == caches.reference_manifest
    assert in_store(caches.salted) != [], "expected Nix to realise the closure"
    assert stored_blobs(registry.storage) == caches.reference_blobs


@pytest.mark.parametrize("compression", ["xz", "zstd"])  # one pass (with listings), two passes
def test_corrupted_nar_falls_back_to_nix(caches: Caches, cold: Path, compression: str) -> None:
    source = caches.xz if compression == "xz" else caches.zstd
    broken = shutil.copytree(source, cold / "broken-cache")
    corrupt_nar(broken, caches.salted.outputs["shapes"])
    with CacheServer(broken) as cache:
        registry = make_registry(cold, Substituter([cache.url], [caches.key.public]))
        assert_fell_back_to_the_same_image(caches, registry, build(registry, caches.revision))


def test_badly_signed_narinfo_falls_back_to_nix(caches: Caches, cold: Path) -> None:
    broken = shutil.copytree(caches.xz, cold / "broken-cache")
    other = generate_key(cold / "other-key", caches.key.public.partition(":")[0])
    resign_with_another_key(broken, caches.salted.outputs["base"], other)
    with CacheServer(broken) as cache:
        substituter = Substituter([cache.url], [caches.key.public])
        registry = make_registry(cold, substituter)
        assert_fell_back_to_the_same_image(caches, registry, build(registry, caches.revision))
    assert substituter.stats.nars == 0  # refused at the closure, before any download


def test_connection_dropped_mid_nar_is_retried(caches: Caches, cold: Path) -> None:
    with CacheServer(caches.xz) as cache:
        dropped: list[str] = []

        def once(path: str) -> int | None:
            if path.startswith("/nar/") and path not in dropped:
                dropped.append(path)
                return 200  # bytes, then the connection closes
            return None

        cache.cut = once
        substituter = Substituter([cache.url], [caches.key.public])
        registry = make_registry(cold, substituter)
        assert build(registry, caches.revision) == caches.reference_manifest
    assert len(dropped) == len(caches.salted.closure)
    assert in_store(caches.salted) == []
    assert stored_blobs(registry.storage) == caches.reference_blobs


def test_connection_always_dropped_mid_nar_falls_back_to_nix(caches: Caches, cold: Path) -> None:
    shapes_nar = caches.salted.outputs["shapes"]
    with CacheServer(caches.xz) as cache:
        narinfo = (
            caches.xz / (os.path.basename(shapes_nar).partition("-")[0] + ".narinfo")
        ).read_text()
        url = "/" + re.search(r"^URL: (.*)$", narinfo, re.M).group(1)  # type: ignore[union-attr]
        cache.cut = lambda path: 100 if path == url else None
        registry = make_registry(cold, Substituter([cache.url], [caches.key.public]))
        assert_fell_back_to_the_same_image(caches, registry, build(registry, caches.revision))
    assert [path for path, _ in cache.served] == [url, url]


def test_cache_down_falls_back_to_nix(caches: Caches, cold: Path) -> None:
    with CacheServer(caches.xz) as cache:
        url = cache.url  # served nothing; closed when the block ends
    registry = make_registry(cold, Substituter([url], [caches.key.public], timeout=5))
    assert_fell_back_to_the_same_image(caches, registry, build(registry, caches.revision))


def test_path_missing_from_the_cache_falls_back_to_nix(caches: Caches, cold: Path) -> None:
    partial = shutil.copytree(caches.xz, cold / "partial-cache")
    single = caches.salted.outputs["single"]
    (partial / (os.path.basename(single).partition("-")[0] + ".narinfo")).unlink()
    with CacheServer(partial) as cache:
        substituter = Substituter([cache.url], [caches.key.public])
        registry = make_registry(cold, substituter)
        assert_fell_back_to_the_same_image(caches, registry, build(registry, caches.revision))
    assert substituter.stats.nars == 0


def test_settings_default_to_nix_configuration(tmp_path: Path) -> None:
    from nixery.build.assemble import substituter_from
    from nixery.config import Config

    nix = Nix(
        find_nix_dir(),
        tmp_path,
        60,
        extra_env={
            "NIX_CONFIG": "substituters = http://127.0.0.1:9 file:///x\ntrusted-public-keys = k:"
            + "A" * 43
            + "=\nexperimental-features = nix-command"
        },
    )
    substituter = substituter_from(Config(), nix)
    assert substituter is not None and substituter.caches == ("http://127.0.0.1:9",)
    offline = Nix(find_nix_dir(), tmp_path, 60, extra_env={"NIX_CONFIG": nix_env()["NIX_CONFIG"]})
    assert substituter_from(Config(), offline) is None
    explicit = Config(substituters="http://127.0.0.1:9", trusted_public_keys="")
    assert substituter_from(explicit, offline) is not None
