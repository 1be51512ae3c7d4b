"""The fuzz suite's registries: real Nix on the test package set, every build request recorded."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import Flask

from nixery.auth.access import access_from_config
from nixery.build.assemble import build_coordinator
from nixery.build.contract import Builder, ImageRequest, IndexRequest, Revision
from nixery.config import Config, load_config
from nixery.index import ImageRecord
from nixery.index.sqlite import SqliteIndex
from nixery.registry.api import create_app
from nixery.registry.service import RegistryService
from nixery.registry.sources import PathSource
from nixery.storage.filesystem import FilesystemStorage
from tests.conftest import TEST_PKGS, require_tools
from tests.e2e.registry_process import counting_nix_shims
from tests.team import team_env
from tests.tokeninfo_standin import TokenInfoStandIn

MAX_PACKAGES = 8


@dataclass
class RecordingBuilder:
    """Passes builds to the real coordinator, remembering what reached it."""

    inner: Builder
    requests: list[ImageRequest] = field(default_factory=list)

    def build_index(self, key: str, request: IndexRequest, revision: Revision) -> ImageRecord:
        raise AssertionError("a single-platform registry builds no index")

    def build(
        self, key: str, request: ImageRequest, revision: Revision, report: object = None
    ) -> ImageRecord:
        self.requests.append(request)
        return self.inner.build(key, request, revision)


@dataclass
class FuzzRegistry:
    app: Flask
    service: RegistryService
    builder: RecordingBuilder
    storage_root: Path
    nix_log: Path

    def nix_calls(self) -> int:
        return len(self.nix_log.read_text().splitlines()) if self.nix_log.exists() else 0


def _registry(config: Config, workdir: Path) -> FuzzRegistry:
    nix_log = workdir / "nix-calls.log"
    shims = counting_nix_shims(workdir / "shims", nix_log)
    saved_path = os.environ["PATH"]
    os.environ["PATH"] = f"{shims}{os.pathsep}{saved_path}"
    try:  # Nix takes its environment, PATH included, when it is made
        storage = FilesystemStorage(config.storage_path)
        index = SqliteIndex(config.index_path)
        builder = RecordingBuilder(build_coordinator(config, storage, index))
    finally:
        os.environ["PATH"] = saved_path
    service = RegistryService(
        PathSource(TEST_PKGS),
        index,
        storage,
        builder,
        max_packages=config.max_packages,
        client_build_limit=config.client_build_limit,
    )
    app = create_app(service, access_from_config(config))
    return FuzzRegistry(app, service, builder, config.storage_path, nix_log)


@pytest.fixture(scope="session")
def public_registry(tmp_path_factory: pytest.TempPathFactory) -> FuzzRegistry:
    require_tools("nix-build")
    workdir = tmp_path_factory.mktemp("fuzz-public")
    env = {
        "NIXERY_PKGS_PATH": str(TEST_PKGS),
        "STORAGE_PATH": str(workdir / "storage"),
        "NIXERY_MAX_PACKAGES": str(MAX_PACKAGES),
    }
    return _registry(load_config(env, {}), workdir)


@pytest.fixture(scope="module")
def team_registry(
    tmp_path_factory: pytest.TempPathFactory, standin: TokenInfoStandIn
) -> FuzzRegistry:
    require_tools("nix-build")
    workdir = tmp_path_factory.mktemp("fuzz-team")
    return _registry(load_config(team_env(standin, workdir / "storage"), {}), workdir)
