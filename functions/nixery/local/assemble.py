"""Wiring: a Config becomes a running registry's parts (the embedded, one-machine default)."""

from __future__ import annotations

from flask import Flask

from nixery.auth.access import access_from_config
from nixery.build.builder import ImageBuilder
from nixery.build.coordinator import BuildCoordinator
from nixery.build.nix import Nix
from nixery.build.popcount import load_popularity
from nixery.config import Config, ConfigError, find_nix_dir
from nixery.index import Index
from nixery.index.sqlite import SqliteIndex
from nixery.registry.api import create_app
from nixery.registry.service import RegistryService
from nixery.registry.sources import ChannelSource, GitSource, PackageSource, PathSource
from nixery.storage import Storage
from nixery.storage.filesystem import FilesystemStorage


def package_source(config: Config) -> PackageSource:
    if config.source_kind == "git":
        assert config.pkgs_repo
        return GitSource(config.pkgs_repo)
    if config.source_kind == "path":
        assert config.pkgs_path
        return PathSource(config.pkgs_path)
    return ChannelSource(config.effective_channel)


def build_coordinator(config: Config, storage: Storage, index: Index) -> BuildCoordinator:
    """Nix, layering and layer creation behind one-build-per-image coordination."""
    try:
        popularity = load_popularity(config.popularity_url) if config.popularity_url else {}
    except (OSError, ValueError) as error:
        raise ConfigError(f"NIX_POPULARITY_URL: {error}") from error
    nix = Nix(find_nix_dir(), config.gcroots_dir, config.nix_timeout)
    builder = ImageBuilder(
        nix,
        storage,
        index,
        popularity,
        config.layer_budget,
        config.layer_workers,
        config.build_concurrency,
        layering=config.layering,
    )
    # Waiting for another process's build: its Nix step plus time to write its layers.
    wait = config.nix_timeout + 120
    return BuildCoordinator(builder, index, config.lease_seconds, wait_seconds=wait)


def embedded_app(config: Config, source: PackageSource | None = None) -> Flask:
    if config.storage_backend != "filesystem":
        raise ConfigError("`nixery serve` runs with NIXERY_STORAGE_BACKEND=filesystem")
    access = access_from_config(config)
    storage = FilesystemStorage(config.storage_path)
    index = SqliteIndex(config.index_path)
    coordinator = build_coordinator(config, storage, index)
    service = RegistryService(
        source or package_source(config),
        index,
        storage,
        coordinator,
        max_packages=config.max_packages,
        client_build_limit=config.client_build_limit,
    )
    return create_app(service, access)
