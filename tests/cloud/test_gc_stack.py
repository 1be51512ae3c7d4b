"""Garbage collection in the cloud deployment: the builder's `/gc` on the dev stack (Firestore and
GCS emulators), authenticated like builds, then a pull of the collected image builds it again."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from nixery.cloud.devstack import DevStack, StackError, start_dev_stack
from nixery.cloud.devstack import start_function as start_function_process
from nixery.cloud.idtoken import key_file_token_source
from nixery.index.firestore import FirestoreIndex
from nixery.storage.gcs import GcsStorage
from tests.conftest import TEST_PKGS, require_tools, unavailable
from tests.e2e.conftest import pull_and_unpack

pytestmark = pytest.mark.cloud

GRACE_SECONDS = 2


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    require_tools("nix-build", "skopeo", "umoci", "chroot")
    state = tmp_path_factory.mktemp("gc-stack")
    settings = {"NIXERY_PKGS_PATH": str(TEST_PKGS)}
    try:
        stack = start_dev_stack(
            state, settings, builder_env={"NIXERY_GC_GRACE_SECONDS": str(GRACE_SECONDS)}
        )
    except StackError as reason:
        unavailable(f"the dev stack cannot run here: {reason}")
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def backends(stack: DevStack, monkeypatch: pytest.MonkeyPatch) -> tuple[FirestoreIndex, GcsStorage]:
    """The stack's own index and bucket, as the builder sees them."""
    for name, value in stack.builder_env.items():
        monkeypatch.setenv(name, value)
    from nixery.cloud import clients

    config = clients.cloud_config()
    return clients.index(config), clients.storage(config, clients.bucket(config), None)


def gc(stack: DevStack, token: str | None, dry_run: bool = False) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    query = "?dry_run=true" if dry_run else ""
    return requests.post(f"{stack.builder_url.rstrip('/')}/gc{query}", headers=headers, timeout=120)


def test_gc_endpoint_collects_an_expired_image_and_a_pull_builds_it_again(
    stack: DevStack, backends: tuple[FirestoreIndex, GcsStorage], tmp_path: Path
) -> None:
    index, storage = backends
    host = urlsplit(stack.registry_url).netloc
    for workdir in ("first", "again"):
        (tmp_path / workdir).mkdir()
    pull_and_unpack(host, "shell/hello", tmp_path / "first")
    assert gc(stack, None).status_code == 401, "unauthenticated like a build"
    wrong = key_file_token_source(stack.key_file, "https://elsewhere.example")()
    assert gc(stack, wrong).status_code == 403
    token = key_file_token_source(stack.key_file, stack.builder_env["NIXERY_BUILDER_AUDIENCE"])()

    fresh = gc(stack, token)
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["deleted"]["image"]["count"] == 0, "a fresh image stays"
    (image,) = index.list_images()
    blobs = {stored.name for stored in storage.list_blobs()}
    assert blobs, "the pull's blobs are in the bucket"
    index.mark_pulled(image.record.key, time.time() - 31 * 86400)
    time.sleep(GRACE_SECONDS + 0.5)

    dry = gc(stack, token, dry_run=True)
    assert dry.status_code == 200, dry.text
    would = dry.json()
    assert would["dry_run"] is True
    assert would["deleted"]["image"]["count"] == 1
    assert would["deleted"]["manifest"]["count"] == 2
    assert would["deleted"]["blob"]["count"] == len(blobs)
    assert {stored.name for stored in storage.list_blobs()} == blobs, "a dry run deletes nothing"

    done = gc(stack, token)
    assert done.status_code == 200, done.text
    assert done.json()["deleted"] == {**would["deleted"]}
    assert done.json()["deleted_bytes"] == would["deleted_bytes"] > 0
    assert list(index.list_images()) == [] and list(index.list_manifests()) == []
    assert list(storage.list_blobs()) == [] and list(index.list_blobs()) == []

    # The running function still holds the image in memory (its record re-checked daily); a
    # new instance, as Cloud Functions starts them, finds it gone and builds it again.
    fresh_instance = start_function_process(
        "registry", tmp_path / "registry2.log", {**os.environ, **stack.registry_env}
    )
    try:
        rootfs = pull_and_unpack(
            urlsplit(fresh_instance.url).netloc, "shell/hello", tmp_path / "again"
        )
    finally:
        fresh_instance.stop()
    assert (rootfs / "bin" / "hello").exists()
    assert {stored.name for stored in storage.list_blobs()} == blobs, "the same bytes again"
