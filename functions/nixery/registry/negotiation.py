"""Which manifest form a client gets for a tag: decided by the media types it says it accepts.

Every image is stored in both forms (an OCI image manifest and a Docker schema2 manifest of the
same config and layers). The OCI form goes only to a client that lists the OCI image manifest,
or accepts anything (`*/*`, `application/*`, no Accept header at all); every other client gets
Docker schema2. Listing the OCI *index* does not count: the Docker 20.10 CLI's `docker manifest
inspect` lists the index but not the OCI manifest, and fails on one ("unsupported manifest media
type and no default available"). The Accept lists real clients send are pinned, captured, in
tests/test_negotiation.py.
"""

from __future__ import annotations

from typing import Literal

from nixery.oci import OCI_MANIFEST

WILDCARDS = frozenset({"*/*", "application/*"})

ManifestForm = Literal["oci", "docker"]


def accepted_types(accept_header: str | None) -> set[str]:
    """The media types an Accept header lists (several headers arrive joined by commas),
    without parameters such as `q=`."""
    if not accept_header:
        return set()
    types = {part.split(";")[0].strip().lower() for part in accept_header.split(",")}
    types.discard("")
    return types


def manifest_form(accept_header: str | None) -> ManifestForm:
    types = accepted_types(accept_header)
    if not types or types & WILDCARDS or OCI_MANIFEST in types:
        return "oci"
    return "docker"


def prefers_docker(accept_header: str | None) -> bool:
    return manifest_form(accept_header) == "docker"
