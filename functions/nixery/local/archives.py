"""Writing a built image to files: an OCI image layout (a directory, as `skopeo copy oci:`
and `umoci` read it) or a docker archive (a tar, as `docker load` reads it). Blob bytes are
copied unchanged, so digests are the registry's."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from nixery.local.exported import ExportedImage
from nixery.oci import digest_hex

REF_NAME = "org.opencontainers.image.ref.name"
OpenBlob = Callable[[str], BinaryIO]
# Called after each blob is written: (blobs done, blobs in all).
Progress = Callable[[int, int], None]


def _no_progress(done: int, total: int) -> None:
    pass


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def write_oci_layout(
    image: ExportedImage,
    directory: Path,
    tag: str,
    open_blob: OpenBlob,
    progress: Progress = _no_progress,
) -> None:
    """Adds (or replaces) `tag` in the OCI layout at `directory`, creating it if needed."""
    blobs_dir = directory / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(directory / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    blobs = image.blobs()
    for done, blob in enumerate(blobs, 1):
        target = blobs_dir / digest_hex(blob.digest)
        if not (target.exists() and target.stat().st_size == blob.size):
            partial = target.with_name(f".{target.name}.partial")
            with open_blob(blob.digest) as source, open(partial, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
            os.replace(partial, target)
        progress(done, len(blobs))
    for manifest in (*(i.manifest for i in image.images), image.top):
        _write_atomically(blobs_dir / digest_hex(manifest.digest), manifest.body)

    index_path = directory / "index.json"
    index = json.loads(index_path.read_bytes()) if index_path.exists() else {}
    kept = [
        entry
        for entry in index.get("manifests", [])
        if entry.get("annotations", {}).get(REF_NAME) != tag
    ]
    entry = {
        "mediaType": image.top.media_type,
        "digest": image.top.digest,
        "size": len(image.top.body),
        "annotations": {REF_NAME: tag},
    }
    index = {"schemaVersion": 2, "manifests": [*kept, entry]}
    _write_atomically(index_path, json.dumps(index, separators=(",", ":")).encode())


class NotOnePlatform(ValueError):
    pass


def write_docker_archive(
    image: ExportedImage,
    path: Path,
    reference: str | None,
    open_blob: OpenBlob,
    progress: Progress = _no_progress,
) -> None:
    """One platform's image as `docker save` writes it: manifest.json, the config and the
    (gzip-compressed: `docker load` inflates them) layers under blobs/sha256/."""
    if len(image.images) != 1:
        raise NotOnePlatform("a docker archive holds one platform's image: name one --platform")
    (platform_image,) = image.images

    def member(digest: str) -> str:
        return f"blobs/sha256/{digest_hex(digest)}"

    manifest = [
        {
            "Config": member(platform_image.config.digest),
            "RepoTags": [reference] if reference else [],
            "Layers": [member(layer.digest) for layer in platform_image.layers],
        }
    ]
    partial = path.with_name(f".{path.name}.partial")
    blobs = image.blobs()
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as archive:
        for done, blob in enumerate(blobs, 1):
            info = tarfile.TarInfo(member(blob.digest))
            info.size = blob.size
            info.mode = 0o444
            with open_blob(blob.digest) as source:
                archive.addfile(info, source)
            progress(done, len(blobs))
        body = json.dumps(manifest, separators=(",", ":")).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(body)
        info.mode = 0o444
        archive.addfile(info, io.BytesIO(body))
    os.replace(partial, path)
