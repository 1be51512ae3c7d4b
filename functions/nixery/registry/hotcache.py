"""A bounded in-process cache of hot manifests, so a warm pull touches neither disk nor index.

Everything cached here is immutable once written: an image key is a hash of everything that
decides the image (see nixery.build.contract) and the index keeps the first record written for it, and
a manifest is addressed by the digest of its bytes. So the cache never needs invalidating, except
for images garbage collection deleted (nixery.registry.service re-checks a cached image daily);
a moving tag (a channel's `latest`, a git branch, an edited local path) resolves to a new image
key before the cache is asked, within the tag-resolution TTLs of nixery.registry.sources.
"""

from __future__ import annotations

from nixery.index import ImageRecord, StoredManifest
from nixery.util.lru import Lru

# A manifest of 95 layers is about 20 kB; 32 MB holds well over a thousand images of that size,
# and far more of the usual few-kB ones.
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_IMAGES = 16384


class ManifestCache:
    """Image key -> image record, and manifest digest -> the stored manifest bytes, both LRU."""

    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, max_images: int = DEFAULT_MAX_IMAGES
    ) -> None:
        self._images: Lru[str, ImageRecord] = Lru(max_images)
        self._manifests: Lru[str, StoredManifest] = Lru(max_images * 2, max_weight=max_bytes)

    def image(self, key: str) -> ImageRecord | None:
        return self._images.get(key)

    def put_image(self, record: ImageRecord) -> None:
        self._images.put(record.key, record)

    def drop_image(self, key: str) -> None:
        """Forget an image garbage collection deleted (its manifests may stay cached: they are
        addressed by content, and nothing names them once no image does)."""
        self._images.pop(key)

    def manifest(self, digest: str) -> StoredManifest | None:
        return self._manifests.get(digest)

    def put_manifest(self, manifest: StoredManifest) -> None:
        self._manifests.put(manifest.digest, manifest, len(manifest.body))

    @property
    def manifest_bytes(self) -> int:
        return self._manifests.weight

    @property
    def counts(self) -> tuple[int, int]:
        """(images, manifests) held now."""
        return len(self._images), len(self._manifests)
