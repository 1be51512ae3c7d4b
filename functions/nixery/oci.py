"""The OCI wire vocabulary shared by every part: media types, and content digests in the form
`sha256:<64 hex>`."""

from __future__ import annotations

import hashlib
import re

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


class InvalidDigest(ValueError):
    pass


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_hex(digest: str) -> str:
    """The hex part of a validated digest; anything else raises InvalidDigest.

    Every storage path is built from this, so a malformed digest can never name a path.
    """
    if not DIGEST_RE.fullmatch(digest):
        raise InvalidDigest(digest)
    return digest.removeprefix("sha256:")
