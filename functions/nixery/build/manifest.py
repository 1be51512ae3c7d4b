"""Image config and manifests: typed wire formats, each with exactly one serialiser."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nixery.index import StoredManifest
from nixery.oci import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    sha256_digest,
)

# Images are functions of their inputs, not of the time they were built.
FIXED_CREATED = "1970-01-01T00:00:01Z"
IMAGE_PATH = "/bin:/usr/bin"


def _serialise(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class HistoryEntry:
    created_by: str
    comment: str

    def to_dict(self) -> dict[str, Any]:
        return {"created": FIXED_CREATED, "created_by": self.created_by, "comment": self.comment}


@dataclass(frozen=True)
class ImageConfig:
    architecture: str
    diff_ids: tuple[str, ...]
    history: tuple[HistoryEntry, ...]
    ca_bundle: str | None  # the CA bundle's path in the image, for SSL_CERT_FILE
    has_bash: bool  # the default command is bash

    def to_json(self) -> bytes:
        env = [f"PATH={IMAGE_PATH}"]
        if self.ca_bundle is not None:
            env.append(f"SSL_CERT_FILE={self.ca_bundle}")
        container: dict[str, Any] = {"Env": env}
        if self.has_bash:
            container["Cmd"] = ["bash"]
        return _serialise(
            {
                "architecture": self.architecture,
                "os": "linux",
                "created": FIXED_CREATED,
                "config": container,
                "rootfs": {"type": "layers", "diff_ids": list(self.diff_ids)},
                "history": [entry.to_dict() for entry in self.history],
            }
        )


@dataclass(frozen=True)
class ImageManifest:
    """One image, in either wire form; the forms differ only in media types."""

    docker: bool
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def media_type(self) -> str:
        return DOCKER_MANIFEST if self.docker else OCI_MANIFEST

    def to_json(self) -> bytes:
        config_type, layer_type = (
            (DOCKER_CONFIG, DOCKER_LAYER) if self.docker else (OCI_CONFIG, OCI_LAYER)
        )
        config = Descriptor(config_type, self.config.digest, self.config.size)
        layers = [Descriptor(layer_type, layer.digest, layer.size) for layer in self.layers]
        return _serialise(
            {
                "schemaVersion": 2,
                "mediaType": self.media_type,
                "config": config.to_dict(),
                "layers": [layer.to_dict() for layer in layers],
            }
        )

    def stored(self) -> StoredManifest:
        body = self.to_json()
        return StoredManifest(sha256_digest(body), self.media_type, body)
