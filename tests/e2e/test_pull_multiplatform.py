"""The read-only pull checks of test_pull.py, against a registry whose tags answer image
indexes (NIXERY_PLATFORMS=linux/amd64,linux/arm64): clients that take an index still pull the
amd64 image, and clients that take none still get a plain manifest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.multiarch import multiarch_env
from tests.e2e.registry_process import RegistryProcess
from tests.e2e.test_pull import (
    test_blob_head_get_and_range,
    test_docker_schema2_only_for_clients_without_oci,
    test_image_without_env_provider_has_no_dangling_env,
    test_images_sharing_packages_share_layers,
    test_inspect_and_config,
    test_manifest_headers_and_head_never_rebuild,
    test_pull_unpack_and_run,
    test_tags_list,
)

__all__ = [
    "test_blob_head_get_and_range",
    "test_docker_schema2_only_for_clients_without_oci",
    "test_image_without_env_provider_has_no_dangling_env",
    "test_images_sharing_packages_share_layers",
    "test_inspect_and_config",
    "test_manifest_headers_and_head_never_rebuild",
    "test_pull_unpack_and_run",
    "test_tags_list",
]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    storage = tmp_path_factory.mktemp("multiarch-pull") / "storage"
    with RegistryProcess(storage, multiarch_env()) as process:
        yield process
