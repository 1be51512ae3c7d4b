"""The index: what has been built, keyed so that a warm request never touches Nix.

Two implementations share one contract (tests/contract): SQLite (the embedded default) and
Firestore (the cloud deployment). Every record is content-addressed or keyed by a hash of its
inputs, so a `put_*` of an existing key keeps the first value (all writers agree on it anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StoredManifest:
    digest: str
    media_type: str
    body: bytes


@dataclass(frozen=True)
class ImageRecord:
    """A built image: its key (see nixery.registry.imagekey) and the digests of both manifest forms."""

    key: str
    oci_digest: str
    docker_digest: str


@dataclass(frozen=True)
class LayerRecord:
    """A layer built once for a set of store paths and compression settings."""

    key: str
    digest: str
    diff_id: str
    size: int


@dataclass(frozen=True)
class BlobRecord:
    digest: str
    size: int
    media_type: str


class Index(Protocol):
    def get_image(self, key: str) -> ImageRecord | None: ...

    def put_image(self, record: ImageRecord) -> None: ...

    def get_manifest(self, digest: str) -> StoredManifest | None: ...

    def put_manifest(self, manifest: StoredManifest) -> None: ...

    def get_layer(self, key: str) -> LayerRecord | None: ...

    def put_layer(self, record: LayerRecord) -> None: ...

    def get_blob(self, digest: str) -> BlobRecord | None: ...

    def put_blob(self, record: BlobRecord) -> None: ...

    def add_repository(self, name: str) -> None:
        """Remember `name` as a repository an image was served for (for `/v2/_catalog`)."""
        ...

    def list_repositories(self, after: str, limit: int) -> list[str]:
        """Up to `limit` remembered names sorted bytewise, each greater than `after` ("" for
        the first page)."""
        ...

    def try_acquire_lease(self, key: str, owner: str, ttl_seconds: float) -> bool:
        """Take the build lease on `key` if it is free, expired, or already `owner`'s."""
        ...

    def release_lease(self, key: str, owner: str) -> None:
        """Drop the lease if `owner` still holds it."""
        ...
