"""Shared set-up of the multi-platform e2e tests: a `nixery serve` building every tag for
linux/amd64 and linux/arm64 from the test package set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.aarch64 import MULTIARCH_NIX_CONFIG, ensure_aarch64_busybox
from tests.conftest import TEST_PKGS
from tests.e2e.registry_process import RegistryProcess

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
TWO_PLATFORMS = "linux/amd64,linux/arm64"


def multiarch_env() -> dict[str, str]:
    ensure_aarch64_busybox()
    return {
        "NIXERY_PKGS_PATH": str(TEST_PKGS),
        "NIXERY_PLATFORMS": TWO_PLATFORMS,
        "NIX_CONFIG": MULTIARCH_NIX_CONFIG,
    }


@pytest.fixture(scope="module")
def multi_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    storage: Path = tmp_path_factory.mktemp("multiarch") / "storage"
    with RegistryProcess(storage, multiarch_env()) as process:
        yield process
