"""The registry function's wiring: manifests from Firestore, blobs by redirect to signed GCS
URLs, builds by the Cloud Run builder. Its imports never reach Nix, layering or compression
(tests/test_layout.py).

Its Google clients are made on first use, not at start-up: their imports are most of a cold
start (Firestore's gRPC stack alone about 0.5 s), and a pull's first request, `GET /v2/`, needs
none of them. A warm manifest needs only Firestore; GCS and URL signing wait for the first blob,
ID tokens for the first build (docs/cloud.md, "Cold start").
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, cast

from nixery.auth.access import access_from_config
from nixery.cloud import clients
from nixery.cloud.remote import RemoteBuilder
from nixery.config import Config, ConfigError
from nixery.index import Index
from nixery.registry.api import RegistryApi
from nixery.registry.service import RegistryService
from nixery.registry.sources import package_source
from nixery.storage import Storage
from nixery.util.lazy import OnFirstUse

if TYPE_CHECKING:
    from nixery.storage.gcs import GcsStorage


def blob_storage(config: Config) -> GcsStorage:
    """GCS, serving blobs by redirect to URLs signed for the bucket."""
    from nixery.cloud.signing import UrlSigner

    bucket = clients.bucket(config)
    signer = UrlSigner(
        bucket,
        expiry=timedelta(seconds=config.signed_url_expiry),
        credentials=clients.signing_credentials(),
        deadline=config.call_deadline,
    )
    return clients.request_storage(config, bucket, signer)


def id_token_source(config: Config) -> Callable[[], str]:
    """The ID tokens the function sends the builder, its source made on the first build."""
    audience = config.builder_url
    if not audience:
        raise ConfigError("the registry function needs NIXERY_BUILDER_URL")

    @functools.cache
    def source() -> Callable[[], str]:
        from nixery.cloud.idtoken import key_file_token_source, metadata_token_source

        if config.id_token_key_file:
            return key_file_token_source(config.id_token_key_file, audience)
        return metadata_token_source(audience, config.call_deadline)

    return lambda: source()()


def registry_service(config: Config) -> RegistryService:
    """The Cloud Function: manifests from Firestore, blobs by redirect, builds by the builder."""
    if not config.builder_url:
        raise ConfigError("the registry function needs NIXERY_BUILDER_URL")
    if config.id_token_key_file and not config.id_token_key_file.is_file():
        # Read on the first build; a missing file is still a start-up error.
        raise ConfigError(f"NIXERY_ID_TOKEN_KEY_FILE: no file at {config.id_token_key_file}")
    builder = RemoteBuilder(config.builder_url, id_token_source(config), timeout=config.build_wait)
    index = cast(Index, OnFirstUse(lambda: clients.index(config)))
    storage = cast(Storage, OnFirstUse(lambda: blob_storage(config)))
    return RegistryService.from_config(config, package_source(config), index, storage, builder)


# Google's front end appends the address it saw as the last X-Forwarded-For entry; everything
# left of it is whatever the client sent (docs/security.md).
FRONT_END_HOPS = 1


def registry_api(config: Config) -> RegistryApi:
    """The Cloud Function's request handler: the access check, then the registry service."""
    access = access_from_config(config)
    return RegistryApi(registry_service(config), access, forwarded_hops=FRONT_END_HOPS)
