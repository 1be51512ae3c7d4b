"""Content digests in the OCI form `sha256:<64 hex>`."""

from __future__ import annotations

import hashlib
import re

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
