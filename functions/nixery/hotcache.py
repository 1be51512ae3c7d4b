"""A bounded in-process cache of hot manifests, so a warm pull touches neither disk nor index.

Everything cached here is immutable once written: an image key is a hash of everything that
decides the image (see nixery.imagekey) and the index keeps the first record written for it, and
a manifest is addressed by the digest of its bytes. So the cache never needs invalidating; a
moving tag (a channel's `latest`, a git branch, an edited local path) resolves to a new image
key before the cache is asked, within the tag-resolution TTLs of nixery.sources.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

from nixery.index import ImageRecord, StoredManifest

# A manifest of 95 layers is about 20 kB; 32 MB holds well over a thousand images of that size,
# and far more of the usual few-kB ones.
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_IMAGES = 16384

K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """Least-recently-used entries go first once the summed weight or the count exceeds a bound."""

    def __init__(self, max_weight: int, max_entries: int) -> None:
        self._max_weight = max_weight
        self._max_entries = max_entries
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            self._entries.move_to_end(key)
            return hit[0]

    def put(self, key: K, value: V, weight: int) -> None:
        if weight > self._max_weight:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._weight -= old[1]
            self._entries[key] = (value, weight)
            self._weight += weight
            while self._weight > self._max_weight or len(self._entries) > self._max_entries:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._weight -= evicted

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def weight(self) -> int:
        with self._lock:
            return self._weight


class ManifestCache:
    """Image key -> image record, and manifest digest -> the stored manifest bytes, both LRU."""

    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, max_images: int = DEFAULT_MAX_IMAGES
    ) -> None:
        self._images: _Lru[str, ImageRecord] = _Lru(max_images, max_images)
        self._manifests: _Lru[str, StoredManifest] = _Lru(max_bytes, max_images * 2)

    def image(self, key: str) -> ImageRecord | None:
        return self._images.get(key)

    def put_image(self, record: ImageRecord) -> None:
        self._images.put(record.key, record, 1)

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
