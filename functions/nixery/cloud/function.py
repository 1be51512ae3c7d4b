"""The registry function's wiring: manifests from Firestore, blobs by redirect to signed GCS
URLs, builds by the Cloud Run builder. Its imports never reach Nix, layering or compression
(tests/test_layout.py)."""

from __future__ import annotations

from datetime import timedelta

from nixery.auth.access import access_from_config
from nixery.build.contract import PackagePolicy, parse_platforms
from nixery.cloud import clients
from nixery.cloud.idtoken import key_file_token_source, metadata_token_source
from nixery.cloud.remote import RemoteBuilder
from nixery.cloud.signing import UrlSigner
from nixery.config import Config, ConfigError
from nixery.registry.api import RegistryApi
from nixery.registry.records import BuildRecorder
from nixery.registry.service import RegistryService
from nixery.registry.sources import package_source


def registry_service(config: Config) -> RegistryService:
    """The Cloud Function: manifests from Firestore, blobs by redirect, builds by the builder."""
    if not config.builder_url:
        raise ConfigError("the registry function needs NIXERY_BUILDER_URL")
    bucket = clients.bucket(config)
    signer = UrlSigner(
        bucket,
        expiry=timedelta(seconds=config.signed_url_expiry),
        credentials=clients.signing_credentials(),
        deadline=config.call_deadline,
    )
    if config.id_token_key_file:
        tokens = key_file_token_source(config.id_token_key_file, config.builder_url)
    else:
        tokens = metadata_token_source(config.builder_url, config.call_deadline)
    builder = RemoteBuilder(config.builder_url, tokens, timeout=config.build_wait)
    index = clients.index(config)
    return RegistryService(
        package_source(config),
        index,
        clients.request_storage(config, bucket, signer),
        builder,
        max_packages=config.max_packages,
        client_build_limit=config.client_build_limit,
        records=BuildRecorder(index, config.build_records, config.build_record_days),
        platforms=parse_platforms(config.platforms),
        policy=PackagePolicy(config.allow_unfree, config.permitted_insecure_packages),
    )


# Google's front end appends the address it saw as the last X-Forwarded-For entry; everything
# left of it is whatever the client sent (docs/security.md).
FRONT_END_HOPS = 1


def registry_api(config: Config) -> RegistryApi:
    """The Cloud Function's request handler: the access check, then the registry service."""
    access = access_from_config(config)
    return RegistryApi(registry_service(config), access, forwarded_hops=FRONT_END_HOPS)
