"""The embedded default on one machine: a Config becomes the registry and its builder in one
process, on the filesystem and SQLite."""

from __future__ import annotations

from flask import Flask

from nixery.auth.access import access_from_config
from nixery.build.assemble import build_coordinator
from nixery.config import Config, ConfigError
from nixery.index.sqlite import SqliteIndex
from nixery.registry.api import create_app
from nixery.registry.records import BuildRecorder
from nixery.registry.service import RegistryService
from nixery.registry.sources import PackageSource, package_source
from nixery.storage.filesystem import FilesystemStorage


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
        records=BuildRecorder(index, config.build_records, config.build_record_days),
    )
    return create_app(service, access)
