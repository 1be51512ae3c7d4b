"""Which manifest form a client gets, from the media types its Accept header lists."""

from __future__ import annotations

from nixery.oci import OCI_INDEX, OCI_MANIFEST


def prefers_docker(accept_header: str | None) -> bool:
    """Docker schema2 only for a client that lists media types but no OCI one."""
    if not accept_header:
        return False
    types = {part.split(";")[0].strip().lower() for part in accept_header.split(",")}
    types.discard("")
    if not types or "*/*" in types or "application/*" in types:
        return False
    return OCI_MANIFEST not in types and OCI_INDEX not in types
