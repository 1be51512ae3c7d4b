"""The builder's wiring: settings become Nix, layering and layer creation behind the
one-build-per-image coordinator, for `nixery serve` and the Cloud Run builder alike."""

from __future__ import annotations

from nixery.build.builder import ImageBuilder
from nixery.build.contract import BuildFailed
from nixery.build.coordinator import BuildCoordinator
from nixery.build.nix import Nix
from nixery.build.popcount import load_popularity
from nixery.build.substituter import Substituter, parse_substituter_list
from nixery.config import Config, ConfigError, find_nix_dir
from nixery.index import Index
from nixery.storage import Storage


def build_coordinator(
    config: Config, storage: Storage, index: Index, nix: Nix | None = None
) -> BuildCoordinator:
    """Nix, layering and layer creation behind one-build-per-image coordination. `nix`: the
    server's own, when it must stop the builds at shutdown."""
    try:
        popularity = load_popularity(config.popularity_url) if config.popularity_url else {}
    except (OSError, ValueError) as error:
        raise ConfigError(f"NIX_POPULARITY_URL: {error}") from error
    nix = nix or Nix(find_nix_dir(), config.gcroots_dir, config.nix_timeout)
    builder = ImageBuilder(
        nix,
        storage,
        index,
        popularity,
        config.layer_budget,
        config.layer_workers,
        config.build_concurrency,
        layering=config.layering,
        substituter=substituter_from(config, nix),
    )
    # Waiting for another process's build: its Nix step plus time to write its layers.
    wait = config.nix_timeout + 120
    return BuildCoordinator(builder, index, config.lease_seconds, wait_seconds=wait)


def substituter_from(config: Config, nix: Nix) -> Substituter | None:
    """The binary caches layers come from directly; unset settings take Nix's configuration."""
    substituters, keys = config.substituters, config.trusted_public_keys
    if substituters is None or keys is None:
        try:
            nix_config = nix.show_config()
        except (OSError, ValueError, BuildFailed) as error:
            raise ConfigError(f"cannot read Nix's substituters: {error}") from error
        if substituters is None:
            substituters = " ".join(nix_config.get("substituters", []))
        if keys is None:
            keys = " ".join(nix_config.get("trusted-public-keys", []))
    caches = parse_substituter_list(substituters)
    if not caches:
        return None
    try:
        return Substituter(caches, keys.split())
    except ValueError as error:
        raise ConfigError(f"NIXERY_TRUSTED_PUBLIC_KEYS: {error}") from error
