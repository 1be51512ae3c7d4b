"""Which manifest form a client gets, from the media types its Accept header lists."""

from __future__ import annotations

from typing import Literal

from nixery.oci import DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST


def prefers_docker(accept_header: str | None) -> bool:
    """Docker schema2 only for a client that lists media types but no OCI one."""
    if not accept_header:
        return False
    types = {part.split(";")[0].strip().lower() for part in accept_header.split(",")}
    types.discard("")
    if not types or "*/*" in types or "application/*" in types:
        return False
    return OCI_MANIFEST not in types and OCI_INDEX not in types


def index_form(accept_header: str | None) -> Literal["oci", "docker", "manifest"]:
    """For a multi-platform tag: the OCI index, Docker's manifest list, or (for a client that
    takes neither) one platform's plain manifest, as registries answer such clients."""
    if not accept_header:
        return "oci"
    types = {part.split(";")[0].strip().lower() for part in accept_header.split(",")}
    types.discard("")
    if not types or "*/*" in types or "application/*" in types or OCI_INDEX in types:
        return "oci"
    if DOCKER_MANIFEST_LIST in types:
        return "docker"
    return "manifest"
