"""The in-process manifest cache: bounded, and never a stale manifest for a moving tag."""

from __future__ import annotations

import hashlib
from pathlib import Path

from nixery.build.contract import ImageRequest, IndexRequest, Revision
from nixery.index import ImageRecord, StoredManifest
from nixery.index.sqlite import SqliteIndex
from nixery.registry.hotcache import ManifestCache
from nixery.registry.service import RegistryService
from nixery.registry.sources import PathSource
from nixery.storage.filesystem import FilesystemStorage

OCI = "application/vnd.oci.image.manifest.v1+json"


def _manifest(text: str) -> StoredManifest:
    body = text.encode()
    return StoredManifest("sha256:" + hashlib.sha256(body).hexdigest(), OCI, body)


def test_the_cache_is_bounded_by_bytes_and_evicts_the_least_recently_used() -> None:
    cache = ManifestCache(max_bytes=1000, max_images=100)
    manifests = [_manifest(f"{i:03d}" + "x" * 97) for i in range(30)]  # 100 bytes each
    for i, manifest in enumerate(manifests):
        cache.put_manifest(manifest)
        if i >= 1:
            assert cache.manifest(manifests[0].digest) is not None  # keep the first one hot
        assert cache.manifest_bytes <= 1000
    assert cache.manifest_bytes == 1000
    assert cache.manifest(manifests[0].digest) == manifests[0]
    assert cache.manifest(manifests[-1].digest) == manifests[-1]
    assert cache.manifest(manifests[1].digest) is None
    assert cache.counts[1] == 10
    # A manifest bigger than the whole bound is served from the index, never cached.
    cache.put_manifest(_manifest("y" * 1001))
    assert cache.counts[1] == 10


def test_the_cache_is_bounded_by_image_count() -> None:
    cache = ManifestCache(max_bytes=10**6, max_images=5)
    for i in range(20):
        cache.put_image(ImageRecord(f"key{i}", f"sha256:{i:064d}", f"sha256:{i + 100:064d}"))
    assert cache.counts[0] == 5
    assert cache.image("key0") is None
    assert cache.image("key19") is not None


class CountingIndex(SqliteIndex):
    """The real SQLite index, counting the reads the hot path must no longer make."""

    reads = 0

    def get_image(self, key: str) -> ImageRecord | None:
        self.reads += 1
        return super().get_image(key)

    def get_manifest(self, digest: str) -> StoredManifest | None:
        self.reads += 1
        return super().get_manifest(digest)


class ManifestPerKey:
    """A builder that publishes a manifest naming the image key and the package set's text.

    Nix is not what is under test here (tests/e2e builds for real); what matters is that each
    image key gets a distinct manifest, as a real build of a changed package set would.
    """

    def __init__(self, index: SqliteIndex, tree: Path) -> None:
        self.index = index
        self.tree = tree
        self.builds: list[str] = []

    def build_index(self, key: str, request: IndexRequest, revision: Revision) -> ImageRecord:
        raise AssertionError("a single-platform registry builds no index")

    def build(
        self, key: str, request: ImageRequest, revision: Revision, report: object = None
    ) -> ImageRecord:
        self.builds.append(key)
        text = (self.tree / "default.nix").read_text()
        manifest = _manifest(f'{{"key":"{key}","pkgs":"{text}"}}')
        self.index.put_manifest(manifest)
        record = ImageRecord(key, manifest.digest, manifest.digest)
        self.index.put_image(record)
        return record


def test_a_moving_tag_is_never_served_stale_beyond_the_resolution_ttl(tmp_path: Path) -> None:
    tree = tmp_path / "pkgs"
    tree.mkdir()
    (tree / "default.nix").write_text("first")
    now = [0.0]
    source = PathSource(tree, recheck_seconds=2, clock=lambda: now[0])
    index = CountingIndex(tmp_path / "index.sqlite")
    builder = ManifestPerKey(index, tree)
    service = RegistryService(source, index, FilesystemStorage(tmp_path / "blobs"), builder)

    first = service.manifest("hello", "latest", OCI)
    assert b"first" in first.body
    reads = index.reads
    for _ in range(50):
        assert service.manifest("hello", "latest", OCI) == first
        assert service.manifest_by_digest(first.digest) == first
    assert index.reads == reads, "a hot manifest is served without reading the index"

    (tree / "default.nix").write_text("second, a longer text")
    now[0] = 1.0  # within the path source's recheck time: the old revision still holds
    assert service.manifest("hello", "latest", OCI) == first
    now[0] = 2.5  # past it: the tag resolves to a new revision, hence a new image key
    second = service.manifest("hello", "latest", OCI)
    assert b"second" in second.body
    assert second.digest != first.digest
    assert len(builder.builds) == 2
    # The old image is still addressable by digest; the tag now names only the new one.
    assert service.manifest_by_digest(first.digest) == first
    now[0] = 10.0
    assert service.manifest("hello", "latest", OCI) == second
