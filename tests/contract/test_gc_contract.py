"""Garbage collection (nixery.index.gc) behaves the same on filesystem+SQLite and GCS+Firestore:
each scenario runs on both pairs, on the emulators for the cloud one."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nixery.index import BlobRecord, ImageRecord, Index, LayerRecord, StoredManifest
from nixery.index.gc import GcPolicy, collect
from nixery.index.sqlite import SqliteIndex
from nixery.oci import (
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    sha256_digest,
)
from nixery.storage import Storage, put_bytes
from nixery.storage.filesystem import FilesystemStorage

DAY = 86400.0
POLICY = GcPolicy(retention_days=30, grace_seconds=3600, build_records=1000, build_record_days=30)


@dataclass
class Backend:
    index: Index
    storage: Storage


@pytest.fixture(params=["local", pytest.param("cloud", marks=pytest.mark.cloud)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        yield Backend(
            SqliteIndex(tmp_path / "index.sqlite"), FilesystemStorage(tmp_path / "storage")
        )
    else:
        from nixery.index.firestore import FirestoreIndex
        from nixery.storage.gcs import GcsStorage

        client = request.getfixturevalue("firestore_client")
        yield Backend(
            FirestoreIndex(client, prefix=f"gc{uuid.uuid4().hex[:12]}_"),
            GcsStorage(request.getfixturevalue("gcs_bucket")),
        )


def blob(backend: Backend, data: bytes, media_type: str = OCI_LAYER) -> str:
    digest = sha256_digest(data)
    put_bytes(backend.storage, digest, data, media_type)
    backend.index.put_blob(BlobRecord(digest, len(data), media_type))
    if media_type == OCI_LAYER:
        backend.index.put_layer(LayerRecord(f"layer-{digest}", digest, digest, len(data)))
    return digest


def manifest(backend: Backend, document: dict[str, Any], media_type: str) -> str:
    body = json.dumps(document, sort_keys=True).encode()
    stored = StoredManifest(sha256_digest(body), media_type, body)
    backend.index.put_manifest(stored)
    return stored.digest


def image(backend: Backend, key: str, layers: list[bytes]) -> ImageRecord:
    """An image as the builder publishes it: blobs, both manifest forms, then the record."""
    config = blob(backend, json.dumps({"image": key}).encode(), OCI_CONFIG)
    descriptors = [{"digest": blob(backend, data), "size": len(data)} for data in layers]
    forms = [
        manifest(
            backend,
            {"mediaType": media_type, "config": {"digest": config}, "layers": descriptors},
            media_type,
        )
        for media_type in (OCI_MANIFEST, DOCKER_MANIFEST)
    ]
    record = ImageRecord(key, forms[0], forms[1])
    backend.index.put_image(record)
    return record


def state(backend: Backend) -> tuple[set[str], set[str], set[str], set[str]]:
    """(image keys, manifests, blob records, stored blobs)."""
    return (
        {entry.record.key for entry in backend.index.list_images()},
        {entry.digest for entry in backend.index.list_manifests()},
        {entry.digest for entry in backend.index.list_blobs()},
        {stored.name for stored in backend.storage.list_blobs()},
    )


def test_expired_images_go_with_what_only_they_used(backend: Backend) -> None:
    old = image(backend, "old", [b"shared layer", b"old's own layer"])
    new = image(backend, "new", [b"shared layer", b"new's own layer"])
    now = time.time() + 2 * 3600  # everything written is past the grace period
    backend.index.mark_pulled("old", now - 31 * DAY)
    backend.index.mark_pulled("new", now - 29 * DAY)
    before = state(backend)

    dry = collect(backend.index, backend.storage, POLICY, dry_run=True, now=now)
    assert state(backend) == before, "a dry run deletes nothing"
    report = collect(backend.index, backend.storage, POLICY, now=now)
    assert [(d.kind, d.name) for d in report.deleted] == [(d.kind, d.name) for d in dry.deleted], (
        "the dry run reported exactly what the real run deleted"
    )

    own = sha256_digest(b"old's own layer")
    old_config = sha256_digest(json.dumps({"image": "old"}).encode())
    assert {(d.kind, d.name) for d in report.deleted} == {
        ("image", "old"),
        ("manifest", old.oci_digest),
        ("manifest", old.docker_digest),
        ("blob", own),
        ("blob", old_config),
    }
    assert report.bytes("blob") == len(b"old's own layer") + len(json.dumps({"image": "old"}))
    images, manifests, records, stored = state(backend)
    assert images == {"new"}
    assert manifests == {new.oci_digest, new.docker_digest}
    assert records == stored
    assert sha256_digest(b"shared layer") in stored and own not in stored
    assert backend.index.get_layer(f"layer-{own}") is None, "its layer record went too"
    assert backend.index.get_layer(f"layer-{sha256_digest(b'shared layer')}") is not None
    again = collect(backend.index, backend.storage, POLICY, now=now)
    assert again.deleted == [], "a second pass finds nothing more"


def test_the_grace_period_keeps_what_a_build_in_flight_wrote(backend: Backend) -> None:
    """A build's blobs and manifests are published before its image record: unreferenced, but
    younger than the grace period. A layer it reuses is stamped by the reuse."""
    image(backend, "expired", [b"reused layer", b"expired's own"])
    now = time.time()
    backend.index.mark_pulled("expired", now - 31 * DAY)
    # The build in flight: one new layer, one reused from the expired image, no record yet.
    new_layer = blob(backend, b"in-flight layer")
    assert backend.index.touch_blob(sha256_digest(b"reused layer"))
    report = collect(backend.index, backend.storage, POLICY, now=now)
    assert [(d.kind, d.name) for d in report.deleted] == [("image", "expired")]
    _, _, records, stored = state(backend)
    assert {new_layer, sha256_digest(b"reused layer")} <= records & stored
    # An hour on, with the expired image still gone, its unique blobs and manifests go.
    later = collect(backend.index, backend.storage, POLICY, now=now + 3601)
    assert sha256_digest(b"expired's own") in {d.name for d in later.deleted}


def test_an_image_index_keeps_its_platform_manifests(backend: Backend) -> None:
    amd64 = image(backend, "amd64", [b"amd64 layer"])
    arm64 = image(backend, "arm64", [b"arm64 layer"])
    entries = [{"digest": amd64.oci_digest}, {"digest": arm64.oci_digest}]
    top = manifest(backend, {"mediaType": OCI_INDEX, "manifests": entries}, OCI_INDEX)
    backend.index.put_image(ImageRecord("multi", top, top))
    now = time.time() + 2 * 3600
    for key in ("amd64", "arm64"):
        backend.index.mark_pulled(key, now - 40 * DAY)  # pulled only through the index
    report = collect(backend.index, backend.storage, POLICY, now=now)
    # The platforms' Docker forms are named by the Docker list (here absent): they go.
    assert {(d.kind, d.name) for d in report.deleted} == {
        ("image", "amd64"),
        ("image", "arm64"),
        ("manifest", amd64.docker_digest),
        ("manifest", arm64.docker_digest),
    }
    _, manifests, _, stored = state(backend)
    assert {amd64.oci_digest, arm64.oci_digest, top} <= manifests
    assert {sha256_digest(b"amd64 layer"), sha256_digest(b"arm64 layer")} <= stored


def test_leftover_uploads_and_old_build_records(backend: Backend) -> None:
    from tests.contract.test_index_contract import build_record

    writer = backend.storage.writer()  # a writer whose process died: never committed
    writer.write(b"half a layer" * 30000)
    if not isinstance(backend.storage, FilesystemStorage):
        from nixery.storage.gcs import STAGING_PREFIX, GcsStorage

        assert isinstance(backend.storage, GcsStorage)
        writer.abort()  # a resumable upload leaves nothing; a crashed copy leaves this:
        backend.storage.bucket.blob(STAGING_PREFIX + "crashed").upload_from_string(b"x" * 10)
    now = time.time()
    for n in range(4):
        backend.index.put_build(build_record(f"b{n}", now - (40 - n) * DAY))
    backend.index.put_build(build_record("recent", now))
    young = collect(backend.index, backend.storage, POLICY, now=now)
    assert {d.kind for d in young.deleted} == {"build"}, "uploads younger than the grace stay"
    assert sorted(d.name for d in young.deleted) == ["b0", "b1", "b2", "b3"]
    assert [r.id for r in backend.index.recent_builds(10)] == ["recent"]
    old = collect(backend.index, backend.storage, POLICY, now=now + 3601)
    assert [d.kind for d in old.deleted] == ["upload"]
    assert list(backend.storage.list_uploads()) == []


def test_a_stored_blob_without_a_record_goes_after_the_grace(backend: Backend) -> None:
    """A builder killed between writing a blob and recording it leaves bytes nothing names."""
    data = b"orphan bytes"
    put_bytes(backend.storage, sha256_digest(data), data, OCI_LAYER)
    assert collect(backend.index, backend.storage, POLICY).deleted == []
    report = collect(backend.index, backend.storage, POLICY, now=time.time() + 3601)
    assert [(d.kind, d.name, d.size) for d in report.deleted] == [
        ("blob", sha256_digest(data), len(data))
    ]
    assert backend.storage.size(sha256_digest(data)) is None
