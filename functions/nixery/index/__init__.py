"""The index: what has been built, keyed so that a warm request never touches Nix.

Two implementations share one contract (tests/contract): SQLite (the embedded default) and
Firestore (the cloud deployment). Every record is content-addressed or keyed by a hash of its
inputs, so a `put_*` of an existing key keeps the first value (all writers agree on it anyway).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

# The end of a Nix log explains a failure; a record keeps at most this much of it.
MAX_LOG_BYTES = 64 * 1024


@dataclass(frozen=True)
class StoredManifest:
    digest: str
    media_type: str
    body: bytes


@dataclass(frozen=True)
class ImageRecord:
    """A built image: its key (see nixery.build.contract.image_key) and the digests of both manifest forms."""

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


# What garbage collection (nixery.index.gc) reads: each record with the time that decides
# whether it may go (Unix time).


@dataclass(frozen=True)
class ImageEntry:
    record: ImageRecord
    pulled_at: float  # the last pull by tag marked (at most daily), else when it was built


@dataclass(frozen=True)
class ManifestEntry:
    digest: str
    size: int
    stored_at: float  # when last put: a build in flight re-puts the manifests it publishes


@dataclass(frozen=True)
class BlobEntry:
    digest: str
    size: int
    used_at: float  # when last put or touched by a build (written or reused as a layer)


BuildOutcomeKind = Literal["built", "cached", "refused", "failed"]
# The phases of a build, in order: the tag resolved to a commit (registry), Nix evaluating and
# realising the packages (builder), then our own layering, layer writing and publishing.
PHASES = ("resolve", "evaluate", "realise", "layering", "layers", "publish")


@dataclass(frozen=True)
class Phase:
    name: str
    start: float  # seconds after the build started
    seconds: float


@dataclass(frozen=True)
class LayerSummary:
    digest: str
    size: int
    paths: tuple[str, ...]  # the store paths in the layer; the image root's are its roots


def bounded_log(text: str, limit: int = MAX_LOG_BYTES) -> str:
    """The last `limit` bytes of `text` (UTF-8), cut at a character boundary."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[-limit:].decode(errors="ignore")


@dataclass(frozen=True)
class BuildRecord:
    """One cold request for an image, as the pages and `?format=json` show it.

    `client` is who asked as the access check saw it: an identity (`google:alice@example.com`,
    `robot:ci`) or an address (`address:192.0.2.1`); never a token or password.
    """

    id: str
    repository: str
    tag: str
    key: str
    source: str
    commit: str
    client: str
    started_at: float  # Unix time
    ended_at: float
    outcome: BuildOutcomeKind
    message: str = ""
    refused: dict[str, str] = field(default_factory=dict)  # package -> why it was refused
    phases: tuple[Phase, ...] = ()
    layers: tuple[LayerSummary, ...] = ()
    manifest_digest: str = ""
    log: str = ""

    @property
    def seconds(self) -> float:
        return max(0.0, self.ended_at - self.started_at)

    @property
    def layer_count(self) -> int:
        return len(self.layers)

    @property
    def total_bytes(self) -> int:
        return sum(layer.size for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["log"] = bounded_log(self.log)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildRecord:
        known = {name: value for name, value in data.items() if name in _BUILD_FIELDS}
        return cls(
            **{
                **known,
                "refused": dict(data.get("refused") or {}),
                "phases": tuple(Phase(**phase) for phase in data.get("phases") or ()),
                "layers": tuple(
                    LayerSummary(layer["digest"], int(layer["size"]), tuple(layer["paths"]))
                    for layer in data.get("layers") or ()
                ),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> BuildRecord:
        return cls.from_dict(json.loads(text))


_BUILD_FIELDS = frozenset(BuildRecord.__dataclass_fields__)


class Index(Protocol):
    def get_image(self, key: str) -> ImageRecord | None: ...

    def put_image(self, record: ImageRecord) -> None:
        """Store the record unless its key has one (the first stays); it counts as pulled now."""
        ...

    def mark_pulled(self, key: str, at: float) -> bool:
        """Set the image's last-pulled time; False when no such image (garbage collected)."""
        ...

    def list_images(self) -> Iterator[ImageEntry]: ...

    def delete_image(self, key: str, pulled_before: float) -> bool:
        """Drop the image record if it was last pulled before `pulled_before`, atomically with
        that check (a pull marking it meanwhile keeps it); True if dropped."""
        ...

    def get_manifest(self, digest: str) -> StoredManifest | None: ...

    def put_manifest(self, manifest: StoredManifest) -> None:
        """Store the manifest (the first body stays) and set its stored time to now."""
        ...

    def list_manifests(self) -> Iterator[ManifestEntry]: ...

    def delete_manifest(self, digest: str, stored_before: float) -> bool:
        """Drop the manifest if it was last put before `stored_before`, atomically with that
        check; True if dropped."""
        ...

    def get_layer(self, key: str) -> LayerRecord | None: ...

    def put_layer(self, record: LayerRecord) -> None: ...

    def get_blob(self, digest: str) -> BlobRecord | None: ...

    def put_blob(self, record: BlobRecord) -> None:
        """Store the record (the first stays) and set the blob's used time to now."""
        ...

    def touch_blob(self, digest: str) -> bool:
        """Set the blob's used time to now, before a build reuses it; False when the record is
        gone (collected: the build must write the blob again)."""
        ...

    def list_blobs(self) -> Iterator[BlobEntry]: ...

    def delete_blob(self, digest: str, used_before: float) -> bool:
        """Drop the blob record if it was last used before `used_before`, atomically with that
        check, and then every layer record naming the blob; True if dropped."""
        ...

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

    def put_build(self, record: BuildRecord) -> None:
        """Store (or replace) a build record; its log is cut to the last MAX_LOG_BYTES."""
        ...

    def get_build(self, build_id: str) -> BuildRecord | None: ...

    def recent_builds(self, limit: int) -> list[BuildRecord]:
        """The latest `limit` builds, newest first."""
        ...

    def prunable_builds(self, keep: int, before: float) -> list[str]:
        """The ids `prune_builds(keep, before)` would drop now."""
        ...

    def prune_builds(self, keep: int, before: float) -> int:
        """Drop every record beyond the newest `keep` and every record started before `before`
        (Unix time); returns how many were dropped."""
        ...
