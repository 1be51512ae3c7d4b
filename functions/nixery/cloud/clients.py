"""The cloud deployment's settings and its Google clients (GCS, Firestore, signing credentials),
shared by the registry function and the builder service.

Google's client libraries are imported where a client is made, not with this module: they are
most of the function's start-up (Firestore's gRPC stack alone is about 0.5 s of imports), and the
registry function makes its clients on first use (docs/cloud.md, "Cold start"). Every call they
make has a deadline (NIXERY_CALL_DEADLINE), so a dependency that stops answering is a 503, not a
hang.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from nixery.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    import google.auth.credentials
    from google.cloud import storage as gcs

    from nixery.cloud.signing import UrlSigner
    from nixery.index.firestore import FirestoreIndex
    from nixery.storage.gcs import GcsStorage


def cloud_config() -> Config:
    config = load_config(os.environ, {})
    if not config.gcs_bucket:
        raise ConfigError("the cloud deployment needs GCS_BUCKET")
    return config


def bucket(config: Config) -> gcs.Bucket:
    from google.cloud import storage as gcs

    return gcs.Client(project=config.gcp_project).bucket(config.gcs_bucket)


def storage(config: Config, bucket: gcs.Bucket, signer: UrlSigner | None) -> GcsStorage:
    """The builder's storage: a GCS call keeps retrying transient errors for
    NIXERY_GCS_RETRY_SECONDS (uploads are worth finishing), each attempt within the deadline."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    from nixery.storage.gcs import GcsStorage

    retry = DEFAULT_RETRY.with_timeout(config.gcs_retry_seconds)
    return GcsStorage(bucket, signer, retry=retry, timeout=_attempt_timeout(config.call_deadline))


def request_storage(config: Config, bucket: gcs.Bucket, signer: UrlSigner | None) -> GcsStorage:
    """The function's storage: a client waits, so each call, retries included, ends within
    NIXERY_CALL_DEADLINE (each attempt within a third of it)."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    from nixery.storage.gcs import GcsStorage

    deadline = min(config.call_deadline, config.gcs_retry_seconds)
    retry = DEFAULT_RETRY.with_timeout(deadline)
    return GcsStorage(bucket, signer, retry=retry, timeout=_attempt_timeout(deadline / 3))


def _attempt_timeout(seconds: float) -> tuple[float, float]:
    """(connect, read) seconds for one HTTP attempt."""
    return (min(10.0, seconds), seconds)


def index(config: Config) -> FirestoreIndex:
    from google.cloud import firestore

    from nixery.index.firestore import FirestoreIndex

    client = firestore.Client(project=config.gcp_project, database=config.firestore_database)
    return FirestoreIndex(client, prefix=config.firestore_prefix, deadline=config.call_deadline)


def signing_credentials() -> google.auth.credentials.Credentials | None:
    """A key file signs locally; otherwise the runtime identity signs through IAM signBlob."""
    key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if key_file and json.loads(Path(key_file).read_text()).get("type") == "service_account":
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_file(key_file)
    return None
