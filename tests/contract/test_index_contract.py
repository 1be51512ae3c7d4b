from __future__ import annotations

import json
import threading
import time

from nixery.index import (
    MAX_LOG_BYTES,
    BlobRecord,
    BuildRecord,
    ImageRecord,
    Index,
    LayerRecord,
    LayerSummary,
    Phase,
    StoredManifest,
)
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


def test_repositories_are_listed_once_in_byte_order(index: Index) -> None:
    assert index.list_repositories("", 10) == []
    for name in ["shell/git", "hello", "shell", "shell/git", "shell-x", "shell/git/htop"]:
        index.add_repository(name)
    # Byte order: "-" (0x2d) sorts before "/" (0x2f); both backends agree.
    everything = ["hello", "shell", "shell-x", "shell/git", "shell/git/htop"]
    assert index.list_repositories("", 10) == everything


def test_repository_pages_follow_the_last_name(index: Index) -> None:
    names = [f"pkg{number:02d}/tool" for number in range(7)]
    for name in reversed(names):
        index.add_repository(name)
    pages: list[list[str]] = []
    last = ""
    while page := index.list_repositories(last, 3):
        pages.append(page)
        last = page[-1]
    assert pages == [names[0:3], names[3:6], names[6:7]]
    assert index.list_repositories("pkg03", 2) == ["pkg03/tool", "pkg04/tool"], (
        "`after` need not be a listed name"
    )


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


def build_record(build_id: str, started_at: float, **changes: object) -> BuildRecord:
    fields: dict[str, object] = {
        "id": build_id,
        "repository": "shell/hello",
        "tag": "latest",
        "key": "k" * 64,
        "source": "path:/pkgs",
        "commit": "c" * 40,
        "client": "address:192.0.2.1",
        "started_at": started_at,
        "ended_at": started_at + 2.5,
        "outcome": "built",
        "phases": (Phase("resolve", 0.0, 0.1), Phase("realise", 0.1, 2.0)),
        "layers": (LayerSummary(sha256_digest(b"l"), 1234, ("/nix/store/abc-hello-1.0",)),),
        "manifest_digest": sha256_digest(b"m"),
        **changes,
    }
    return BuildRecord(**fields)  # type: ignore[arg-type]


def test_build_records_round_trip(index: Index) -> None:
    assert index.get_build("b1") is None
    record = build_record("b1", 1000.0)
    index.put_build(record)
    assert index.get_build("b1") == record
    assert record.layer_count == 1 and record.total_bytes == 1234 and record.seconds == 2.5
    refused = build_record(
        "b2", 1001.0, outcome="refused", refused={"nosuch": "no such package"}, layers=()
    )
    index.put_build(refused)
    assert index.get_build("b2") == refused


def test_build_log_keeps_the_last_64_kib(index: Index) -> None:
    log = "".join(f"line {n} é\n" for n in range(20000))  # ~220 KB, multi-byte characters
    index.put_build(build_record("failed", 1000.0, outcome="failed", log=log))
    stored = index.get_build("failed")
    assert stored is not None
    assert len(stored.log.encode()) <= MAX_LOG_BYTES
    assert log.endswith(stored.log) and stored.log.endswith("line 19999 é\n")


def test_recent_builds_newest_first(index: Index) -> None:
    for n in range(5):
        index.put_build(build_record(f"b{n}", 1000.0 + n))
    assert [r.id for r in index.recent_builds(3)] == ["b4", "b3", "b2"]
    assert len(index.recent_builds(50)) == 5


def test_prune_builds_by_count_and_age(index: Index) -> None:
    for n in range(6):
        index.put_build(build_record(f"b{n}", 1000.0 + n))
    assert index.prune_builds(keep=4, before=0.0) == 2
    assert [r.id for r in index.recent_builds(10)] == ["b5", "b4", "b3", "b2"]
    assert index.prune_builds(keep=100, before=1003.5) == 2
    assert [r.id for r in index.recent_builds(10)] == ["b5", "b4"]
    assert index.get_build("b0") is None


def test_hostile_build_ids_are_just_keys(index: Index) -> None:
    for hostile in ("../x", "a/b", "<script>", "__x__"):
        assert index.get_build(hostile) is None


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


# Garbage collection's part of the contract: times, listings and conditional deletes.


def _manifest(text: str) -> StoredManifest:
    body = text.encode()
    return StoredManifest(sha256_digest(body), "application/vnd.oci.image.manifest.v1+json", body)


def test_images_are_listed_with_their_last_pull(index: Index) -> None:
    started = time.time()
    record = ImageRecord("gc-image", sha256_digest(b"oci"), sha256_digest(b"docker"))
    index.put_image(record)
    (entry,) = index.list_images()
    assert entry.record == record
    assert started - 1 <= entry.pulled_at <= time.time() + 1, "built counts as pulled"
    assert index.mark_pulled("gc-image", 1000.0)
    assert [e.pulled_at for e in index.list_images()] == [1000.0]
    assert not index.mark_pulled("absent", 1000.0)
    assert index.get_image("absent") is None, "marking never creates"


def test_an_image_is_deleted_only_if_not_pulled_since(index: Index) -> None:
    index.put_image(ImageRecord("gc-old", sha256_digest(b"a"), sha256_digest(b"b")))
    index.mark_pulled("gc-old", 1000.0)
    index.mark_pulled("gc-old", 5000.0)  # a pull after the collector listed it
    assert not index.delete_image("gc-old", pulled_before=2000.0)
    assert index.get_image("gc-old") is not None
    assert index.delete_image("gc-old", pulled_before=6000.0)
    assert index.get_image("gc-old") is None
    assert not index.delete_image("gc-old", pulled_before=6000.0)
    assert not index.mark_pulled("gc-old", 7000.0), "a pull after deletion finds nothing"


def test_manifests_are_listed_and_deleted_if_not_stored_since(index: Index) -> None:
    manifest = _manifest('{"schemaVersion":2,"gc":1}')
    index.put_manifest(manifest)
    stored = time.time()
    (entry,) = index.list_manifests()
    assert (entry.digest, entry.size) == (manifest.digest, len(manifest.body))
    assert entry.stored_at <= stored + 1
    assert not index.delete_manifest(manifest.digest, stored_before=entry.stored_at - 60)
    time.sleep(0.05)
    index.put_manifest(manifest)  # a build publishing the same manifest again
    (again,) = index.list_manifests()
    assert again.stored_at > entry.stored_at
    assert not index.delete_manifest(manifest.digest, stored_before=again.stored_at)
    assert index.get_manifest(manifest.digest) == manifest
    assert index.delete_manifest(manifest.digest, stored_before=time.time() + 1)
    assert index.get_manifest(manifest.digest) is None
    assert list(index.list_manifests()) == []


def test_blob_use_is_stamped_by_put_and_touch(index: Index) -> None:
    blob = BlobRecord(sha256_digest(b"gc-layer"), 77, "application/vnd.oci.image.layer.v1.tar+gzip")
    index.put_blob(blob)
    (first,) = index.list_blobs()
    assert (first.digest, first.size) == (blob.digest, 77)
    time.sleep(0.05)
    assert index.touch_blob(blob.digest)
    (touched,) = index.list_blobs()
    assert touched.used_at > first.used_at
    time.sleep(0.05)
    index.put_blob(BlobRecord(blob.digest, 77, blob.media_type))
    (put_again,) = index.list_blobs()
    assert put_again.used_at > touched.used_at
    assert index.get_blob(blob.digest) == blob
    assert not index.touch_blob(sha256_digest(b"absent"))
    assert index.get_blob(sha256_digest(b"absent")) is None


def test_deleting_a_blob_takes_its_layer_records(index: Index) -> None:
    gone = BlobRecord(sha256_digest(b"gone"), 4, "application/vnd.oci.image.layer.v1.tar+gzip")
    kept = BlobRecord(sha256_digest(b"kept"), 4, "application/vnd.oci.image.layer.v1.tar+gzip")
    for blob, key in ((gone, "layer-gone"), (kept, "layer-kept")):
        index.put_blob(blob)
        index.put_layer(LayerRecord(key, blob.digest, sha256_digest(key.encode()), 4))
    index.put_layer(LayerRecord("layer-gone-2", gone.digest, sha256_digest(b"g2"), 4))
    (entry,) = [e for e in index.list_blobs() if e.digest == gone.digest]
    assert not index.delete_blob(gone.digest, used_before=entry.used_at), "used since"
    assert index.get_layer("layer-gone") is not None, "a refused delete keeps the layers"
    assert index.delete_blob(gone.digest, used_before=time.time() + 1)
    assert index.get_blob(gone.digest) is None
    assert index.get_layer("layer-gone") is None and index.get_layer("layer-gone-2") is None
    assert index.get_layer("layer-kept") is not None and index.get_blob(kept.digest) == kept
    assert not index.touch_blob(gone.digest), "a build finds the blob collected"
    assert not index.delete_blob(gone.digest, used_before=time.time() + 1)


def test_prunable_builds_are_what_prune_drops(index: Index) -> None:
    for n in range(6):
        index.put_build(build_record(f"p{n}", 1000.0 + n))
    assert index.prunable_builds(keep=4, before=1000.5) == ["p0", "p1"]
    assert index.prunable_builds(keep=100, before=1003.5) == ["p0", "p1", "p2", "p3"]
    assert [r.id for r in index.recent_builds(10)] == ["p5", "p4", "p3", "p2", "p1", "p0"]
    assert index.prune_builds(keep=100, before=1003.5) == 4
