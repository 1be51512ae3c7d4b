"""The embedded default on one machine: a Config becomes the registry and its builder in one
process, on the filesystem and SQLite."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask

from nixery.auth.access import access_from_config
from nixery.build.assemble import build_coordinator
from nixery.build.builder import ImageBuilder
from nixery.build.contract import BuildError, NixTooOld
from nixery.build.nix import Nix
from nixery.config import Config, ConfigError, find_nix_dir
from nixery.index.sqlite import SqliteIndex
from nixery.local.ownership import StorageLock
from nixery.registry.api import create_app
from nixery.registry.errormap import nix_too_old_message
from nixery.registry.service import RegistryService
from nixery.registry.sources import PackageSource, SourceError, package_source
from nixery.storage.filesystem import FilesystemStorage

log = logging.getLogger(__name__)


@dataclass
class EmbeddedRegistry:
    app: Flask
    # Ends the running builds (shutdown); their requests answer 503 + Retry-After.
    stop_builds: Callable[[], None]
    lock: StorageLock | None
    # Checks the configured source's Nix in the background (`nixery serve` starts it).
    start_source_check: Callable[[], None]


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
    source = source or package_source(config)
    service = RegistryService.from_config(
        config, source, index, storage, coordinator, cold_wait_limit(config.threads)
    )
    builder = coordinator.builder

    def start_source_check() -> None:
        if isinstance(builder, ImageBuilder):
            # In the background: a channel must be resolved and fetched first, which can be slow.
            threading.Thread(
                target=check_source_at_start,
                args=(source, builder),
                name="source-check",
                daemon=True,
            ).start()

    return EmbeddedRegistry(create_app(service, access), nix.stop_all, lock, start_source_check)


def cold_wait_limit(threads: int) -> int:
    """Request threads that may wait for cold builds at once: three quarters of the pool, so a
    quarter always serves warm pulls however many builds are waited for."""
    return max(1, threads * 3 // 4)


def embedded_app(config: Config, source: PackageSource | None = None) -> Flask:
    return embedded_registry(config, source).app


def check_source_at_start(source: PackageSource, builder: ImageBuilder) -> None:
    """Checks the configured source's `latest` against this Nix once, at start-up, so that a Nix
    too old for it is in the log before the first pull (which then answers from memory)."""
    try:
        revision = source.resolve("latest")
        if revision is None:
            return
        info = builder.check_source(revision)
    except NixTooOld as error:
        log.error("%s", nix_too_old_message(error))
    except (SourceError, BuildError) as error:
        log.warning(
            "cannot check the package source at start-up: %s",
            error.message if isinstance(error, BuildError) else error,
        )
    else:
        needs = f"needs Nix >= {info.min_version}" if info.min_version else "names no minimum Nix"
        log.info("package source %s %s; this is Nix %s", source.source_id, needs, info.nix_version)
