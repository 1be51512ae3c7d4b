"""A multi-platform tag through the cloud deployment on emulators: the function asks the Cloud
Run builder for an index build (one request, one lease), and serves the index from Firestore."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import requests

from nixery.cloud.devstack import DevStack, StackError, start_dev_stack
from tests.aarch64 import MULTIARCH_NIX_CONFIG, ensure_aarch64_busybox
from tests.conftest import TEST_PKGS, require_tools, unavailable

pytestmark = pytest.mark.cloud

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    require_tools("nix-build")
    ensure_aarch64_busybox()
    state = tmp_path_factory.mktemp("multiarch-stack")
    settings = {"NIXERY_PKGS_PATH": str(TEST_PKGS), "NIXERY_PLATFORMS": "linux/amd64,linux/arm64"}
    try:
        started = start_dev_stack(
            state,
            settings,
            builder_env={"NIX_CONFIG": MULTIARCH_NIX_CONFIG, "PATH": os.environ["PATH"]},
        )
    except StackError as reason:
        unavailable(f"the dev stack cannot run here: {reason}")
    try:
        yield started
    finally:
        started.stop()


def test_the_function_serves_an_index_the_builder_built(stack: DevStack) -> None:
    url = f"{stack.registry_url}/v2/shell/hello/manifests/latest"
    oci = requests.get(url, headers={"Accept": OCI_INDEX}, timeout=900)
    assert oci.status_code == 200, oci.text
    assert oci.headers["Content-Type"] == OCI_INDEX
    platforms = [entry["platform"] for entry in oci.json()["manifests"]]
    assert platforms == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]
    docker = requests.get(url, headers={"Accept": DOCKER_LIST}, timeout=60)
    assert docker.headers["Content-Type"] == DOCKER_LIST
    refused = requests.get(
        f"{stack.registry_url}/v2/hello/nosuchpackage/manifests/latest",
        headers={"Accept": OCI_INDEX},
        timeout=900,
    )
    assert refused.status_code == 404
    assert refused.json()["errors"][0]["detail"]["platforms"] == {
        "linux/amd64": ["nosuchpackage"],
        "linux/arm64/v8": ["nosuchpackage"],
    }
