from __future__ import annotations

import json
import threading

from nixery.index import BlobRecord, ImageRecord, Index, LayerRecord, StoredManifest
from nixery.oci import sha256_digest


def lease_winners(index: Index, key: str, racers: int = 8) -> list[str]:
    """Owners that got the lease on `key` when `racers` threads asked at once."""
    winners: list[str] = []
    lock = threading.Lock()

    def race(owner: str) -> None:
        if index.try_acquire_lease(key, owner, ttl_seconds=60):
            with lock:
                winners.append(owner)

    threads = [threading.Thread(target=race, args=(f"o{i}",)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return winners


def test_image_records(index: Index) -> None:
    assert index.get_image("k1") is None
    record = ImageRecord("k1", sha256_digest(b"oci"), sha256_digest(b"docker"))
    index.put_image(record)
    index.put_image(ImageRecord("k1", sha256_digest(b"other"), sha256_digest(b"other")))
    assert index.get_image("k1") == record, "the first writer's record stays"


def test_manifests_by_digest(index: Index) -> None:
    body = b'{"schemaVersion":2}'
    manifest = StoredManifest(
        sha256_digest(body), "application/vnd.oci.image.manifest.v1+json", body
    )
    assert index.get_manifest(manifest.digest) is None
    index.put_manifest(manifest)
    assert index.get_manifest(manifest.digest) == manifest


def test_layer_and_blob_records(index: Index) -> None:
    layer = LayerRecord("paths-key", sha256_digest(b"gz"), sha256_digest(b"tar"), 1234)
    index.put_layer(layer)
    assert index.get_layer("paths-key") == layer
    assert index.get_layer("other") is None
    blob = BlobRecord(layer.digest, 1234, "application/vnd.oci.image.layer.v1.tar+gzip")
    index.put_blob(blob)
    assert index.get_blob(layer.digest) == blob
    assert index.get_blob(sha256_digest(b"absent")) is None


def test_tags(index: Index) -> None:
    assert index.list_tags("shell/git") == []
    for tag in ["latest", "abc", "latest"]:
        index.add_tag("shell/git", tag)
    index.add_tag("hello", "latest")
    assert index.list_tags("shell/git") == ["abc", "latest"]


def test_lease_excludes_others_until_released(index: Index) -> None:
    assert index.try_acquire_lease("image", "a", ttl_seconds=60)
    assert index.try_acquire_lease("image", "a", ttl_seconds=60), "re-entrant for the owner"
    assert not index.try_acquire_lease("image", "b", ttl_seconds=60)
    index.release_lease("image", "b")  # not b's: no effect
    assert not index.try_acquire_lease("image", "b", ttl_seconds=60)
    index.release_lease("image", "a")
    assert index.try_acquire_lease("image", "b", ttl_seconds=60)


def test_expired_lease_is_taken_over(index: Index) -> None:
    assert index.try_acquire_lease("image", "crashed", ttl_seconds=0.01)
    threading.Event().wait(0.5)
    assert index.try_acquire_lease("image", "next", ttl_seconds=60)
    assert not index.try_acquire_lease("image", "crashed", ttl_seconds=60)


def test_one_winner_among_racing_leases(index: Index) -> None:
    assert len(lease_winners(index, "contended")) == 1


def test_tags_of_similar_repository_names_stay_apart(index: Index) -> None:
    index.add_tag("shell", "a")
    index.add_tag("shell/git", "b")
    index.add_tag("shell/git/htop", "c")
    assert index.list_tags("shell") == ["a"]
    assert index.list_tags("shell/git") == ["b"]
    assert index.list_tags("shell/gi") == []


def test_binary_manifest_body_round_trips(index: Index) -> None:
    body = bytes(range(256)) * 400  # every byte value, ~100 KB
    manifest = StoredManifest(sha256_digest(body), "application/vnd.oci.image.index.v1+json", body)
    index.put_manifest(manifest)
    assert index.get_manifest(manifest.digest) == manifest


def test_one_winner_among_racing_takeovers_of_an_expired_lease(index: Index) -> None:
    assert index.try_acquire_lease("stale", "crashed", ttl_seconds=0.01)
    threading.Event().wait(0.5)
    assert len(lease_winners(index, "stale")) == 1
    assert not index.try_acquire_lease("stale", "crashed", ttl_seconds=60)


def test_releasing_an_absent_lease_is_harmless(index: Index) -> None:
    index.release_lease("never-taken", "a")
    assert index.try_acquire_lease("never-taken", "b", ttl_seconds=60)


def test_multi_platform_index_records(index: Index) -> None:
    """A multi-platform tag's index is stored like an image: both wire forms as manifests, and
    a record under the index key naming them; publishing twice keeps the first."""
    from nixery.build.contract import AMD64, ARM64
    from nixery.build.multiplatform import REFUSED_ANNOTATION, publish_index

    images = []
    for architecture in ("amd64", "arm64"):
        forms = []
        for media_type in (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        ):
            body = f'{{"schemaVersion":2,"mediaType":"{media_type}","arch":"{architecture}"}}'
            manifest = StoredManifest(sha256_digest(body.encode()), media_type, body.encode())
            index.put_manifest(manifest)
            forms.append(manifest.digest)
        images.append(ImageRecord(f"image-{architecture}", forms[0], forms[1]))
    record = publish_index(index, "index-key", [(AMD64, images[0]), (ARM64, images[1])], {})
    assert index.get_image("index-key") == record
    oci = index.get_manifest(record.oci_digest)
    docker = index.get_manifest(record.docker_digest)
    assert oci is not None and oci.media_type == "application/vnd.oci.image.index.v1+json"
    assert docker is not None
    assert docker.media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert [m["digest"] for m in json.loads(oci.body)["manifests"]] == [
        images[0].oci_digest,
        images[1].oci_digest,
    ]
    again = publish_index(index, "index-key", [(AMD64, images[0])], {"linux/arm64/v8": ["x"]})
    partial = index.get_manifest(again.oci_digest)
    assert partial is not None
    assert json.loads(partial.body)["annotations"] == {REFUSED_ANNOTATION: "linux/arm64/v8: x"}
    assert index.get_image("index-key") == record, "the first index record stays"
