"""A built tag as a whole, for writing it out of the registry: the manifest a pull gets (an
image index or one image's manifest), each platform's manifest and every blob they name."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nixery.index import StoredManifest
from nixery.oci import DOCKER_MANIFEST_LIST, OCI_INDEX


@dataclass(frozen=True)
class BlobRef:
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class PlatformImage:
    manifest: StoredManifest
    config: BlobRef
    layers: tuple[BlobRef, ...]
    platform: dict[str, str] | None  # as the index lists it; None for a single image


@dataclass(frozen=True)
class ExportedImage:
    top: StoredManifest  # what a pull of the tag answers
    images: tuple[PlatformImage, ...]

    @property
    def is_index(self) -> bool:
        return self.top.media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST)

    def blobs(self) -> list[BlobRef]:
        """Every config and layer, each once, in pull order."""
        seen: dict[str, BlobRef] = {}
        for image in self.images:
            for blob in (image.config, *image.layers):
                seen.setdefault(blob.digest, blob)
        return list(seen.values())


def _ref(descriptor: dict[str, Any]) -> BlobRef:
    return BlobRef(str(descriptor["digest"]), int(descriptor["size"]), str(descriptor["mediaType"]))


def _platform_image(manifest: StoredManifest, platform: dict[str, str] | None) -> PlatformImage:
    body = json.loads(manifest.body)
    layers = tuple(_ref(layer) for layer in body["layers"])
    return PlatformImage(manifest, _ref(body["config"]), layers, platform)


def exported_image(top: StoredManifest, manifest_by_digest: Any) -> ExportedImage:
    """`manifest_by_digest(digest) -> StoredManifest` reads the index's children."""
    if top.media_type not in (OCI_INDEX, DOCKER_MANIFEST_LIST):
        return ExportedImage(top, (_platform_image(top, None),))
    entries = json.loads(top.body)["manifests"]
    images = tuple(
        _platform_image(manifest_by_digest(entry["digest"]), entry.get("platform"))
        for entry in entries
    )
    return ExportedImage(top, images)
