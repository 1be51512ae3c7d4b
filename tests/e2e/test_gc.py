"""`nixery gc` beside a running `nixery serve`: an expired image goes with the blobs only it
used, while a build running all along (a slow derivation) is collected around, never into: its
image is complete and pullable afterwards, before and after another collection."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from nixery.index.gc import referenced_digests
from nixery.index.sqlite import SqliteIndex
from nixery.storage.filesystem import FilesystemStorage
from tests.conftest import TEST_PKGS
from tests.e2e.conftest import pull_and_unpack
from tests.e2e.registry_process import RegistryProcess

GRACE = 3
SLEEP = 6


def _pkgs_with_a_slow_build(directory: Path, nonce: str) -> Path:
    """The test package set plus `sleepy`: seconds of building, new every run, and a runtime
    reference to busybox (a store path the other images have too)."""
    directory.mkdir()
    (directory / "default.nix").write_text(
        f"""args:
let
  pkgs = import {TEST_PKGS} args;
in
pkgs // {{
  sleepy = derivation {{
    name = "sleepy-gc-{nonce[:12]}";
    system = pkgs.busybox.system;
    builder = "${{pkgs.busybox}}/bin/sh";
    PATH = "${{pkgs.busybox}}/bin";
    args = [ "-c" "sleep {SLEEP}; mkdir -p $out/bin $out/share; echo {nonce} > $out/share/nonce; ln -s ${{pkgs.busybox}}/bin/busybox $out/bin/sleepy-sh" ];
  }};
}}
"""
    )
    return directory


def nixery_gc(storage: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nixery", "gc", "--storage-path", str(storage), *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )


def gc_json(storage: Path) -> dict[str, Any]:
    done = nixery_gc(storage, "--gc-grace-seconds", str(GRACE), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def referenced(index: SqliteIndex) -> set[str]:
    """Every blob the index's image records reach."""
    blobs: set[str] = set()
    pending = [
        d for e in index.list_images() for d in (e.record.oci_digest, e.record.docker_digest)
    ]
    while pending:
        manifest = index.get_manifest(pending.pop())
        assert manifest is not None, "an image names a manifest that is gone"
        children, named = referenced_digests(manifest.body)
        pending += children
        blobs.update(named)
    return blobs


def test_gc_beside_a_running_build(tmp_path: Path) -> None:
    nonce = uuid.uuid4().hex
    pkgs = _pkgs_with_a_slow_build(tmp_path / "pkgs", nonce)
    storage_path = tmp_path / "storage"
    for workdir in ("old", "during", "after"):
        (tmp_path / workdir).mkdir()
    with RegistryProcess(storage_path, {"NIXERY_PKGS_PATH": str(pkgs)}) as registry:
        pull_and_unpack(registry.host, "shell/hello", tmp_path / "old")
        index = SqliteIndex(storage_path / "index.sqlite")
        storage = FilesystemStorage(storage_path)
        (old,) = index.list_images()
        old_blobs = referenced(index)
        index.mark_pulled(old.record.key, time.time() - 31 * 86400)  # as if a month unpulled
        time.sleep(GRACE + 0.5)

        dry = nixery_gc(storage_path, "--gc-grace-seconds", str(GRACE), "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"would delete image {old.record.key} (0 bytes)" in dry.stdout
        assert "would delete 1 image(s), 0 bytes" in dry.stdout
        kept = [entry.record for entry in index.list_images()]
        assert kept == [old.record], "a dry run deletes nothing"

        pulled: list[Path] = []
        building = threading.Thread(
            target=lambda: pulled.append(
                pull_and_unpack(registry.host, "shell/sleepy", tmp_path / "during")
            )
        )
        building.start()
        reports = []
        while building.is_alive():
            reports.append(gc_json(storage_path))
        building.join()
        assert pulled, "the image built during collections pulls"
        assert len(reports) >= 2, "collections ran while the image was built"
        assert sum(r["deleted"]["image"]["count"] for r in reports) == 1
        freed = sum(r["deleted"]["blob"]["bytes"] for r in reports)
        assert freed > 0

        rootfs = pulled[0]
        assert (rootfs / "share" / "nonce").read_text().strip() == nonce
        assert (rootfs / "bin" / "sleepy-sh").exists()
        (new,) = index.list_images()
        assert new.record.key != old.record.key
        live = referenced(index)
        assert live <= {stored.name for stored in storage.list_blobs()}, "nothing it uses went"
        assert old_blobs - live, "the old image had blobs of its own"
        assert not (old_blobs - live) & {stored.name for stored in storage.list_blobs()}
        assert list(storage.list_uploads()) == []

        # Once the build is past the grace period, another collection keeps its image whole.
        time.sleep(GRACE + 0.5)
        after = gc_json(storage_path)
        assert after["deleted"]["image"]["count"] == 0 and after["deleted"]["blob"]["count"] == 0
        rootfs = pull_and_unpack(registry.host, "shell/sleepy", tmp_path / "after")
        assert (rootfs / "share" / "nonce").read_text().strip() == nonce
