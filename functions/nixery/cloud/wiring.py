"""Wiring of the cloud deployment: the registry function and the builder service.

Both read the same settings as `nixery serve` (nixery.config), plus the cloud ones, from the
environment; docs/cloud.md lists which component reads which.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import google.auth
from google.cloud import firestore
from google.cloud import storage as gcs
from google.cloud.storage.retry import DEFAULT_RETRY
from google.oauth2 import service_account

from nixery.auth.access import access_from_config
from nixery.cloud.buildservice import BuildService
from nixery.cloud.idtoken import (
    IdTokenVerifier,
    key_file_token_source,
    metadata_token_source,
)
from nixery.cloud.remote import RemoteBuilder
from nixery.cloud.signing import UrlSigner
from nixery.config import Config, ConfigError, load_config
from nixery.index.firestore import FirestoreIndex
from nixery.registry.api import RegistryApi
from nixery.registry.service import RegistryService
from nixery.storage.gcs import GcsStorage


def cloud_config() -> Config:
    config = load_config(os.environ, {})
    if not config.gcs_bucket:
        raise ConfigError("the cloud deployment needs GCS_BUCKET")
    return config


def _bucket(config: Config) -> gcs.Bucket:
    return gcs.Client(project=config.gcp_project).bucket(config.gcs_bucket)


def _storage(config: Config, bucket: gcs.Bucket, signer: UrlSigner | None) -> GcsStorage:
    # How long one GCS call keeps retrying transient errors before the build gives up.
    retry = DEFAULT_RETRY.with_timeout(config.gcs_retry_seconds)
    return GcsStorage(bucket, signer, retry=retry)


def _index(config: Config) -> FirestoreIndex:
    client = firestore.Client(project=config.gcp_project, database=config.firestore_database)
    return FirestoreIndex(client, prefix=config.firestore_prefix)


def _signing_credentials() -> google.auth.credentials.Credentials | None:
    """A key file signs locally; otherwise the runtime identity signs through IAM signBlob."""
    key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if key_file and json.loads(Path(key_file).read_text()).get("type") == "service_account":
        return service_account.Credentials.from_service_account_file(key_file)
    return None


def registry_service(config: Config) -> RegistryService:
    """The Cloud Function: manifests from Firestore, blobs by redirect, builds by the builder."""
    from nixery.local.assemble import package_source

    if not config.builder_url:
        raise ConfigError("the registry function needs NIXERY_BUILDER_URL")
    bucket = _bucket(config)
    signer = UrlSigner(
        bucket,
        expiry=timedelta(seconds=config.signed_url_expiry),
        credentials=_signing_credentials(),
    )
    if config.id_token_key_file:
        tokens = key_file_token_source(config.id_token_key_file, config.builder_url)
    else:
        tokens = metadata_token_source(config.builder_url)
    builder = RemoteBuilder(config.builder_url, tokens, timeout=config.build_wait)
    return RegistryService(
        package_source(config),
        _index(config),
        _storage(config, bucket, signer),
        builder,
        max_packages=config.max_packages,
        client_build_limit=config.client_build_limit,
    )


# Google's front end appends the address it saw as the last X-Forwarded-For entry; everything
# left of it is whatever the client sent (docs/security.md).
FRONT_END_HOPS = 1


def registry_api(config: Config) -> RegistryApi:
    """The Cloud Function's request handler: the access check, then the registry service."""
    access = access_from_config(config)
    return RegistryApi(registry_service(config), access, forwarded_hops=FRONT_END_HOPS)


def build_service(config: Config) -> BuildService:
    """The Cloud Run builder: Nix, layers to GCS, records and leases in Firestore."""
    from nixery.cloud.idtoken import public_keys_of
    from nixery.local.assemble import build_coordinator

    index = _index(config)
    coordinator = build_coordinator(config, _storage(config, _bucket(config), None), index)
    verifier = None
    if config.builder_audience:
        certs = None
        if config.id_token_public_keys:
            certs = json.loads(config.id_token_public_keys.read_text())
        elif config.id_token_key_file:
            certs = public_keys_of(config.id_token_key_file)
        verifier = IdTokenVerifier(config.builder_audience, certs)
    return BuildService(coordinator, verifier)
