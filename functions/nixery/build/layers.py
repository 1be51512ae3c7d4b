"""Layer blobs: deterministic gzipped tarballs written in one streaming pass.

One pass per layer, top-down: members (a store walk, or the image root's tree) -> tar stream
(`tarstream`) -> gzip and both hashes (`gzipstream`) -> storage blob writer -> `LayerBlob`. Memory
stays bounded by a few chunks however large the layer is, and the same inputs give the same bytes
in any process.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nixery.build.gzipstream import GzipHashStream
from nixery.build.imageroot import ImageRoot, image_root
from nixery.build.tarstream import Member, link_tree_members, store_members, tar_stream
from nixery.oci import OCI_LAYER
from nixery.storage import Storage


@dataclass(frozen=True)
class LayerBlob:
    digest: str  # "sha256:<hex>" of the compressed stream
    diff_id: str  # "sha256:<hex>" of the uncompressed tar
    size: int  # compressed size


def write_store_layer(paths: Sequence[str], storage: Storage) -> LayerBlob:
    """Tar the given absolute store paths, recursively, with their parent directories."""
    return _write_layer(store_members(paths), storage)


def write_image_root_layer(root: ImageRoot, storage: Storage) -> LayerBlob:
    """The symlink layer of an image root already computed."""
    return _write_layer(link_tree_members(root.entries, root.world_writable), storage)


def write_symlink_layer(top_level: Sequence[str], storage: Storage) -> LayerBlob:
    """The symlink layer of the image root of the given top-level store paths."""
    return write_image_root_layer(image_root(top_level), storage)


def write_members_layer(members: Iterable[Member], storage: Storage) -> LayerBlob:
    """Members from elsewhere (a NAR stream), already in the layer's order."""
    return _write_layer(members, storage)


def _write_layer(members: Iterable[Member], storage: Storage) -> LayerBlob:
    # The writer aborts on any exception, so a half-written layer is never committed.
    with storage.writer() as writer, GzipHashStream(writer) as stream:
        for piece in tar_stream(members):
            stream.write(piece)
        digests = stream.finish()
        blob = LayerBlob(
            digest="sha256:" + digests.compressed_sha256,
            diff_id="sha256:" + digests.uncompressed_sha256,
            size=digests.compressed_size,
        )
        writer.commit(blob.digest, OCI_LAYER)
    return blob
