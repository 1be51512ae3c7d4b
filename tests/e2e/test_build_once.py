"""Concurrency and determinism: one build per image, the same digests everywhere."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.conftest import TEST_PKGS
from tests.e2e.conftest import OCI_MANIFEST
from tests.e2e.registry_process import RegistryProcess

IMAGE = "shell/app/emptydir/multi/synthetic.p010/synthetic.p200"


def _resolutions(registry: RegistryProcess) -> int:
    """Evaluations of image names (not the start-up check of the source's Nix)."""
    return len([call for call in registry.nix_calls("nix-instantiate") if "resolve.nix" in call])


# What a registry asks Nix at start-up, once per process, before any build: the source's
# minimum Nix version and the configured substituters.
START_UP_CALLS = ("source-info.nix", "show-config")


def _build_calls(registry: RegistryProcess) -> int:
    calls = registry.nix_calls()
    return len([call for call in calls if not any(part in call for part in START_UP_CALLS)])


def _get(registry: RegistryProcess, image: str) -> requests.Response:
    return requests.get(
        f"{registry.url}/v2/{image}/manifests/latest",
        headers={"Accept": OCI_MANIFEST},
        timeout=600,
    )


def test_identical_concurrent_requests_build_once(tmp_path: Path) -> None:
    with RegistryProcess(tmp_path / "storage", {"NIXERY_PKGS_PATH": str(TEST_PKGS)}) as registry:
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda _: _get(registry, IMAGE), range(8)))
        assert {r.status_code for r in responses} == {200}
        digests = {r.headers["Docker-Content-Digest"] for r in responses}
        assert len(digests) == 1
        assert _resolutions(registry) == 1, registry.nix_calls()
        realisations = [c for c in registry.nix_calls("nix-store") if ".drv!" in c]
        assert len(realisations) == 1, registry.nix_calls()

        manifest = responses[0].json()
        blob_files = list((tmp_path / "storage" / "blobs" / "sha256").iterdir())
        # Each layer was written once: exactly the manifest's layers and config are stored,
        # and no upload was left behind.
        assert len(blob_files) == len(manifest["layers"]) + 1
        assert list((tmp_path / "storage" / "tmp").iterdir()) == []


def test_concurrent_requests_for_different_images_each_build(tmp_path: Path) -> None:
    images = ["synthetic.p001", "synthetic.p002", "synthetic.p003", "synthetic.p004"]
    # One client asks for all four: allow it that many cold builds (the default is 2).
    env = {"NIXERY_PKGS_PATH": str(TEST_PKGS), "NIXERY_CLIENT_BUILD_LIMIT": "4"}
    with RegistryProcess(tmp_path / "storage", env) as registry:
        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda image: _get(registry, image), images))
        assert [r.status_code for r in responses] == [200] * 4
        assert len({r.headers["Docker-Content-Digest"] for r in responses}) == 4
        assert _resolutions(registry) == 4


def test_same_digest_after_restart_and_on_new_storage(tmp_path: Path) -> None:
    env = {"NIXERY_PKGS_PATH": str(TEST_PKGS)}
    with RegistryProcess(tmp_path / "one", env) as registry:
        first = _get(registry, IMAGE)
        calls = _build_calls(registry)
    with RegistryProcess(tmp_path / "one", env) as restarted:
        again = _get(restarted, IMAGE)
        assert _build_calls(restarted) == calls, "the index survived the restart"
    with RegistryProcess(tmp_path / "two", env) as fresh:
        elsewhere = _get(fresh, IMAGE)
    assert first.status_code == again.status_code == elsewhere.status_code == 200
    assert first.content == again.content == elsewhere.content
    assert (
        first.headers["Docker-Content-Digest"]
        == again.headers["Docker-Content-Digest"]
        == elsewhere.headers["Docker-Content-Digest"]
    )
