"""The identity of an image: everything that decides its contents, hashed.

Shared by the registry front (which must not import the builder's dependencies) and the builder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from nixery.registry.names import ImageRequest
from nixery.registry.sources import Revision

# Bump when anything that shapes an image changes (layout, config, layering), so cache
# entries of the old format are not served for the new one.
BUILDER_FORMAT = 2  # 2: per-path layering by default


class PackagesNotFound(Exception):
    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(", ".join(names))
        self.names = list(names)


def image_key(revision: Revision, request: ImageRequest) -> str:
    material = {
        "format": BUILDER_FORMAT,
        "source": revision.source_id,
        "commit": revision.commit,
        "system": request.platform.system,
        "packages": list(request.packages),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
