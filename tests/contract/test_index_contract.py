from __future__ import annotations

import threading

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
