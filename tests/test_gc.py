"""Garbage collection's other half: pulls mark images (at most daily), a collected image is
built again, and `nixery gc` on `nixery serve`'s storage. The collection itself is in
tests/contract/test_gc_contract.py (on both backends); a real registry in tests/e2e/test_gc.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from nixery import cli
from nixery.index import ImageRecord
from nixery.index.gc import GcPolicy, collect, referenced_digests
from nixery.registry import service as service_module
from nixery.registry.service import RegistryService
from nixery.registry.sources import PathSource
from nixery.storage.filesystem import FilesystemStorage
from tests.test_hotcache import OCI, CountingIndex, ManifestPerKey


class MarkCountingIndex(CountingIndex):
    marks = 0

    def mark_pulled(self, key: str, at: float) -> bool:
        self.marks += 1
        return super().mark_pulled(key, at)


@pytest.fixture
def registry(tmp_path: Path) -> tuple[RegistryService, MarkCountingIndex, ManifestPerKey]:
    tree = tmp_path / "pkgs"
    tree.mkdir()
    (tree / "default.nix").write_text("pkgs")
    index = MarkCountingIndex(tmp_path / "index.sqlite")
    builder = ManifestPerKey(index, tree)
    source = PathSource(tree, recheck_seconds=3600)
    storage = FilesystemStorage(tmp_path / "blobs")
    return RegistryService(source, index, storage, builder), index, builder


def test_warm_pulls_mark_an_image_at_most_once_a_day(
    registry: tuple[RegistryService, MarkCountingIndex, ManifestPerKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, index, builder = registry
    service.manifest("hello", "latest", OCI)
    assert (len(builder.builds), index.marks) == (1, 0), "a build counts as a pull"
    for _ in range(100):
        service.manifest("hello", "latest", OCI)
    assert index.marks == 0, "warm pulls within the day write nothing"
    day_later = time.time() + service_module.PULL_MARK_INTERVAL + 1
    monkeypatch.setattr("time.time", lambda: day_later)
    for _ in range(10):
        service.manifest("hello", "latest", OCI)
    assert index.marks == 1, "a day on, the first pull marks it once"
    (entry,) = index.list_images()
    assert entry.pulled_at == day_later


def test_a_process_marks_an_image_it_read_from_the_index_once(
    registry: tuple[RegistryService, MarkCountingIndex, ManifestPerKey], tmp_path: Path
) -> None:
    service, index, builder = registry
    service.manifest("hello", "latest", OCI)
    other = RegistryService(service.source, index, service.storage, builder)
    for _ in range(5):
        other.manifest("hello", "latest", OCI)
    assert (len(builder.builds), index.marks) == (1, 1)


def test_a_collected_image_is_built_again_even_when_cached(
    registry: tuple[RegistryService, MarkCountingIndex, ManifestPerKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, index, builder = registry
    first = service.manifest("hello", "latest", OCI)
    later = time.time() + 31 * 86400
    policy = GcPolicy(30, 3600, 1000, 30)
    report = collect(index, service.storage, policy, now=later)
    assert [d.kind for d in report.deleted] == ["image", "manifest", "build"]
    assert index.get_image(builder.builds[0]) is None
    monkeypatch.setattr("time.time", lambda: later)
    again = service.manifest("hello", "latest", OCI)
    assert again == first and len(builder.builds) == 2, "rebuilt, not served from memory"
    assert index.get_image(builder.builds[0]) is not None


def test_referenced_digests_of_each_manifest_kind() -> None:
    digest = "sha256:" + "a" * 64
    other = "sha256:" + "b" * 64
    image = {"config": {"digest": digest}, "layers": [{"digest": other}, {"digest": "x"}]}
    assert referenced_digests(json.dumps(image).encode()) == ([], [digest, other])
    index = {"manifests": [{"digest": digest}, "junk"]}
    assert referenced_digests(json.dumps(index).encode()) == ([digest], [])
    assert referenced_digests(b"not json") == ([], [])
    assert referenced_digests(b"[1]") == ([], [])


def test_nixery_gc_dry_run_then_for_real(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    storage_path = tmp_path / "storage"
    index = CountingIndex(storage_path / "index.sqlite")
    storage = FilesystemStorage(storage_path)
    body = json.dumps({"config": {"digest": "sha256:" + "c" * 64}}).encode()
    from nixery.index import StoredManifest
    from nixery.oci import sha256_digest

    index.put_manifest(StoredManifest(sha256_digest(body), OCI, body))
    index.put_image(ImageRecord("old", sha256_digest(body), sha256_digest(body)))
    index.mark_pulled("old", 1000.0)
    monkeypatch.delenv("NIXERY_GC_RETENTION_DAYS", raising=False)
    args = ["gc", "--storage-path", str(storage_path), "--gc-grace-seconds", "1"]
    assert cli.main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would delete image old (0 bytes)" in out
    assert "would delete 1 image(s), 0 bytes" in out
    assert index.get_image("old") is not None
    assert cli.main([*args, "--json"]) == 0
    totals = json.loads(capsys.readouterr().out)
    assert totals["dry_run"] is False
    assert totals["deleted"]["image"] == {"count": 1, "bytes": 0}
    assert index.get_image("old") is None
    assert list(storage.list_blobs()) == []
    assert cli.main(["gc", "--storage-path", str(tmp_path / "absent")]) == 2
    assert cli.main([*args, "--gc-retention-days", "0.5"]) == 2, "under a day is refused"


def test_the_builder_gc_endpoint() -> None:
    """`POST /gc` on the builder's handler: after the same token check as a build, one
    collection at a time, `dry_run` passed through, JSON totals; absent without a collector."""
    import threading

    from flask import Flask, request

    from nixery.cloud.buildservice import BuildService
    from nixery.cloud.idtoken import InvalidToken
    from nixery.index.gc import GcReport

    def verify(token: str) -> dict[str, str]:
        if token != "good":
            raise InvalidToken("bad token")
        return {}

    calls: list[bool] = []
    release = threading.Event()

    def collect_garbage(dry_run: bool) -> GcReport:
        calls.append(dry_run)
        release.wait(10)
        return GcReport(dry_run, 0.0)

    service = BuildService(object(), verify, collect_garbage)  # type: ignore[arg-type]
    app = Flask("builder")

    def post(path: str, token: str | None = "good") -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with app.test_request_context(path, method="POST", headers=headers):
            response = service.handle(request)
            return response.status_code, json.loads(response.get_data())

    assert post("/gc", token=None)[0] == 401
    assert post("/gc", token="forged")[0] == 403
    release.set()
    status, body = post("/gc?dry_run=true")
    assert status == 200 and body["dry_run"] is True and body["deleted"]["blob"]["count"] == 0
    assert post("/gc/")[1]["dry_run"] is False
    assert calls == [True, False]
    release.clear()
    running = threading.Thread(target=post, args=("/gc",))
    running.start()
    deadline = time.monotonic() + 10
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    status, body = post("/gc")
    assert status == 429 and body["errors"][0]["code"] == "TOOMANYREQUESTS"
    release.set()
    running.join()
    unconfigured = BuildService(object(), verify)  # type: ignore[arg-type]
    with app.test_request_context("/gc", method="POST", headers={"Authorization": "Bearer good"}):
        assert unconfigured.handle(request).status_code == 404


def test_an_index_made_before_gc_gains_its_times_as_of_the_upgrade(tmp_path: Path) -> None:
    """Records of an older SQLite index count as used when it is first opened, so the upgrade
    itself makes nothing collectable."""
    import sqlite3

    from nixery.index.sqlite import SqliteIndex

    path = tmp_path / "index.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE images (key TEXT PRIMARY KEY, oci_digest TEXT NOT NULL,"
            " docker_digest TEXT NOT NULL);"
            "CREATE TABLE blobs (digest TEXT PRIMARY KEY, size INTEGER NOT NULL,"
            " media_type TEXT NOT NULL);"
            "INSERT INTO images VALUES ('k', 'sha256:a', 'sha256:b');"
            f"INSERT INTO blobs VALUES ('sha256:{'c' * 64}', 3, 'x');"
        )
    opened = time.time()
    index = SqliteIndex(path)
    (image,) = index.list_images()
    (blob,) = index.list_blobs()
    assert image.pulled_at >= opened - 1 and blob.used_at >= opened - 1
    SqliteIndex(path)  # a second open changes nothing
    assert next(index.list_images()).pulled_at == image.pulled_at
