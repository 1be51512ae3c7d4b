"""The embedded default on one machine: a Config becomes the registry and its builder in one
process, on the filesystem and SQLite."""

from __future__ import annotations

import logging
import threading

from flask import Flask

from nixery.auth.access import access_from_config
from nixery.build.assemble import build_coordinator
from nixery.build.builder import ImageBuilder
from nixery.build.contract import BuildError, NixTooOld, PackagePolicy
from nixery.config import Config, ConfigError
from nixery.index.sqlite import SqliteIndex
from nixery.registry.api import create_app
from nixery.registry.errormap import nix_too_old_message
from nixery.registry.service import RegistryService
from nixery.registry.sources import PackageSource, SourceError, package_source
from nixery.storage.filesystem import FilesystemStorage


def embedded_app(config: Config, source: PackageSource | None = None) -> Flask:
    """The app; `start_source_check(app)` in the serving process checks its source's Nix."""
    if config.storage_backend != "filesystem":
        raise ConfigError("`nixery serve` runs with NIXERY_STORAGE_BACKEND=filesystem")
    access = access_from_config(config)
    storage = FilesystemStorage(config.storage_path)
    index = SqliteIndex(config.index_path)
    coordinator = build_coordinator(config, storage, index)
    source = source or package_source(config)
    service = RegistryService(
        source,
        index,
        storage,
        coordinator,
        max_packages=config.max_packages,
        client_build_limit=config.client_build_limit,
        policy=PackagePolicy(config.allow_unfree, config.permitted_insecure_packages),
    )
    app = create_app(service, access)
    app.extensions["nixery.source_check"] = (source, coordinator.builder)
    return app


def start_source_check(app: Flask) -> None:
    """Checks the configured source in the background of the process that serves (a thread
    started before gunicorn forks would leave the worker waiting on a check it never sees)."""
    source, builder = app.extensions["nixery.source_check"]
    if isinstance(builder, ImageBuilder):
        # In the background: a channel must be resolved and fetched first, which can be slow.
        threading.Thread(
            target=check_source_at_start, args=(source, builder), name="source-check", daemon=True
        ).start()


log = logging.getLogger(__name__)


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
