"""One tag for several platforms: the image index over the platforms' images, in both wire
forms (OCI image index, Docker manifest list), written to the index like an image's manifests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nixery.build.contract import Platform
from nixery.build.manifest import Descriptor, ImageIndex, IndexEntry
from nixery.index import ImageRecord, Index

# The annotation that says, on a partial index, which platform refused which packages.
REFUSED_ANNOTATION = "org.nixery.platforms.refused"


class IndexLostManifest(RuntimeError):
    pass


def _entry(index: Index, digest: str, platform: Platform) -> IndexEntry:
    manifest = index.get_manifest(digest)
    if manifest is None:
        raise IndexLostManifest(f"the index lost manifest {digest}")
    descriptor = Descriptor(manifest.media_type, manifest.digest, len(manifest.body))
    return IndexEntry(descriptor, platform.architecture, platform.os, platform.variant)


def refusal_text(refused: Mapping[str, Sequence[str]]) -> str:
    """`linux/arm64: foo, bar; ...`: what each platform lacked, in a stable order."""
    return "; ".join(f"{spec}: {', '.join(names)}" for spec, names in sorted(refused.items()))


def publish_index(
    index: Index,
    key: str,
    built: Sequence[tuple[Platform, ImageRecord]],
    refused: Mapping[str, Sequence[str]],
) -> ImageRecord:
    """Both forms of the index over `built` (in order), stored, then its record under `key`."""
    annotations = ((REFUSED_ANNOTATION, refusal_text(refused)),) if refused else ()
    oci = ImageIndex(
        False,
        tuple(_entry(index, record.oci_digest, platform) for platform, record in built),
        annotations,
    ).stored()
    docker = ImageIndex(
        True, tuple(_entry(index, record.docker_digest, platform) for platform, record in built)
    ).stored()
    index.put_manifest(oci)
    index.put_manifest(docker)
    record = ImageRecord(key, oci.digest, docker.digest)
    index.put_image(record)
    return record
