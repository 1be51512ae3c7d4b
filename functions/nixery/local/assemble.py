"""The embedded default on one machine: a Config becomes the registry and its builder in one
process, on the filesystem and SQLite."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask

from nixery.auth.access import access_from_config
from nixery.build.assemble import build_coordinator
from nixery.build.contract import parse_platforms
from nixery.build.nix import Nix
from nixery.config import Config, ConfigError, find_nix_dir
from nixery.index.sqlite import SqliteIndex
from nixery.local.ownership import StorageLock
from nixery.registry.api import create_app
from nixery.registry.records import BuildRecorder
from nixery.registry.service import RegistryService
from nixery.registry.sources import PackageSource, package_source
from nixery.storage.filesystem import FilesystemStorage

log = logging.getLogger(__name__)


@dataclass
class EmbeddedRegistry:
    app: Flask
    # Ends the running builds (shutdown); their requests answer 503 + Retry-After.
    stop_builds: Callable[[], None]
    lock: StorageLock | None


def embedded_registry(
    config: Config, source: PackageSource | None = None, own_storage: bool = False
) -> EmbeddedRegistry:
    """`own_storage`: take the storage lock (`nixery serve`; a second one is refused with
    StorageInUse), then clear what a previous owner left: its leases, its temp files."""
    if config.storage_backend != "filesystem":
        raise ConfigError("`nixery serve` runs with NIXERY_STORAGE_BACKEND=filesystem")
    access = access_from_config(config)
    lock = StorageLock(config.storage_path) if own_storage else None
    storage = FilesystemStorage(config.storage_path)
    index = SqliteIndex(config.index_path)
    if lock is not None:
        leases = index.clear_leases()
        temp_files = storage.remove_temp_files()
        if leases or temp_files:
            log.info(
                "recovered the storage: %d build leases and %d temp files of a previous "
                "process cleared",
                leases,
                temp_files,
            )
    nix = Nix(find_nix_dir(), config.gcroots_dir, config.nix_timeout)
    coordinator = build_coordinator(config, storage, index, nix)
    service = RegistryService(
        source or package_source(config),
        index,
        storage,
        coordinator,
        max_packages=config.max_packages,
        client_build_limit=config.client_build_limit,
        records=BuildRecorder(index, config.build_records, config.build_record_days),
        cold_wait_limit=cold_wait_limit(config.threads),
        platforms=parse_platforms(config.platforms),
    )
    return EmbeddedRegistry(create_app(service, access), nix.stop_all, lock)


def cold_wait_limit(threads: int) -> int:
    """Request threads that may wait for cold builds at once: three quarters of the pool, so a
    quarter always serves warm pulls however many builds are waited for."""
    return max(1, threads * 3 // 4)


def embedded_app(config: Config, source: PackageSource | None = None) -> Flask:
    return embedded_registry(config, source).app
