"""V4 signed URLs: each URL is checked here against the GCS V4 signing spec with the public key.

The GCS emulator serves signed URLs without checking their signatures, so the check lives in
this module: it rebuilds the canonical request and string-to-sign independently of the
storage library and verifies the RSA-SHA256 signature.
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import google.auth.credentials
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.cloud import storage as gcs
from google.oauth2 import service_account

from nixery.cloud.signing import UrlSigner
from nixery.oci import sha256_digest
from nixery.storage import put_bytes
from nixery.storage.gcs import GcsStorage, blob_name
from tests.cloud.v4check import SERVICE_ACCOUNT, UrlRejected, verify_v4_url, with_query

pytestmark = pytest.mark.cloud

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def service_account_info(key: rsa.RSAPrivateKey, email: str = SERVICE_ACCOUNT) -> dict[str, str]:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": "nixery-test",
        "private_key_id": hashlib.sha1(pem.encode()).hexdigest(),
        "private_key": pem,
        "client_email": email,
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


@pytest.fixture
def key_credentials(private_key: rsa.RSAPrivateKey) -> service_account.Credentials:
    return service_account.Credentials.from_service_account_info(service_account_info(private_key))


@pytest.fixture
def stored_layer(gcs_bucket: gcs.Bucket) -> tuple[str, bytes]:
    data = bytes(range(256)) * 1024
    digest = sha256_digest(data)
    put_bytes(GcsStorage(gcs_bucket), digest, data, LAYER_MEDIA_TYPE)
    return digest, data


def test_key_signed_url_verifies_and_serves_the_blob(
    gcs_bucket: gcs.Bucket,
    key_credentials: service_account.Credentials,
    private_key: rsa.RSAPrivateKey,
    stored_layer: tuple[str, bytes],
) -> None:
    digest, data = stored_layer
    signer = UrlSigner(gcs_bucket, credentials=key_credentials)
    assert signer.signs_locally
    url = GcsStorage(gcs_bucket, signer).redirect_url(digest)
    assert url is not None
    assert urlsplit(url).path == f"/{gcs_bucket.name}/{blob_name(digest)}"
    verify_v4_url(url, private_key.public_key(), now=datetime.now(UTC))
    assert dict(parse_qsl(urlsplit(url).query))["X-Goog-Expires"] == "900"

    response = requests.get(url, timeout=30)
    assert response.status_code == 200
    assert response.content == data
    ranged = requests.get(url, headers={"Range": "bytes=1000-1999"}, timeout=30)
    assert ranged.status_code == 206
    assert ranged.content == data[1000:2000]


def test_key_file_named_by_the_environment_signs_locally(
    gcs_bucket: gcs.Bucket,
    private_key: rsa.RSAPrivateKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(service_account_info(private_key)))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    signer = UrlSigner(gcs_bucket)
    assert signer.signs_locally
    verify_v4_url(signer.signed_url("blobs/x"), private_key.public_key(), now=datetime.now(UTC))


def test_expired_and_tampered_urls_fail_the_check(
    gcs_bucket: gcs.Bucket,
    key_credentials: service_account.Credentials,
    private_key: rsa.RSAPrivateKey,
) -> None:
    public_key = private_key.public_key()
    signer = UrlSigner(gcs_bucket, expiry=timedelta(minutes=15), credentials=key_credentials)
    digest = sha256_digest(b"layer")
    url = signer.signed_url(blob_name(digest))
    now = datetime.now(UTC)
    verify_v4_url(url, public_key, now=now + timedelta(minutes=14))
    with pytest.raises(UrlRejected, match="expired"):
        verify_v4_url(url, public_key, now=now + timedelta(minutes=15, seconds=2))

    other_object = url.replace(digest.removeprefix("sha256:"), "0" * 64)
    longer_life = with_query(url, **{"X-Goog-Expires": "604800"})
    for tampered in [other_object, longer_life]:
        with pytest.raises(UrlRejected, match="signature"):
            verify_v4_url(tampered, public_key, now=now)
    with pytest.raises(UrlRejected, match="signature"):
        verify_v4_url(url, public_key, now=now, method="HEAD")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(UrlRejected, match="signature"):
        verify_v4_url(url, stranger, now=now)


def test_cached_url_is_reused_for_half_its_lifetime(
    gcs_bucket: gcs.Bucket, key_credentials: service_account.Credentials
) -> None:
    clock = FakeClock()
    signer = UrlSigner(gcs_bucket, timedelta(minutes=10), key_credentials, clock)
    first = signer.signed_url("blobs/sha256/a")
    clock.now += 299
    assert signer.signed_url("blobs/sha256/a") == first
    assert (signer.signing_operations, signer.cache_hits, signer.cache_misses) == (1, 1, 1)
    clock.now += 1  # half of the 10 minutes gone
    signer.signed_url("blobs/sha256/a")
    assert signer.signing_operations == 2


def test_concurrent_requests_for_one_object_sign_once(
    gcs_bucket: gcs.Bucket, key_credentials: service_account.Credentials
) -> None:
    signer = UrlSigner(gcs_bucket, credentials=key_credentials)
    barrier = threading.Barrier(16)
    urls: list[str] = []

    def fetch() -> None:
        barrier.wait()
        urls.append(signer.signed_url("blobs/sha256/shared"))

    threads = [threading.Thread(target=fetch) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(urls)) == 1
    assert signer.signing_operations == 1
    assert signer.cache_hits == 15


class MetadataServerCredentials(google.auth.credentials.Credentials):
    """Like Cloud Run's identity: a token after refresh(), no private key, email "default"."""

    def __init__(self, email: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.service_account_email = "default"
        self._email = email
        self.refreshes = 0

    def refresh(self, request: object) -> None:
        self.refreshes += 1
        self.token = f"token-{self.refreshes}"
        self.expiry = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)
        self.service_account_email = self._email


def test_keyless_identity_signs_through_sign_blob_and_the_cache_saves_calls(
    gcs_bucket: gcs.Bucket, private_key: rsa.RSAPrivateKey
) -> None:
    credentials = MetadataServerCredentials(SERVICE_ACCOUNT)
    sign_blob_calls = 0

    def sign_blob(message: bytes) -> bytes:
        # Stands in for IAM signBlob, which signs with the service account's Google-held key.
        nonlocal sign_blob_calls
        sign_blob_calls += 1
        return private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())

    signer = UrlSigner(gcs_bucket, credentials=credentials, sign_blob=sign_blob)
    assert not signer.signs_locally
    digests = [sha256_digest(str(layer).encode()) for layer in range(100)]
    storage = GcsStorage(gcs_bucket, signer)
    # A client pull of 100 layers, each blob fetched twice (retries, parallel pulls).
    urls = [storage.redirect_url(digest) for digest in digests + digests]

    assert sign_blob_calls == signer.signing_operations == 100
    assert (signer.cache_hits, signer.cache_misses) == (100, 100)
    assert credentials.refreshes == signer.credential_refreshes == 1
    now = datetime.now(UTC)
    for url in urls:
        assert url is not None
        verify_v4_url(url, private_key.public_key(), now=now, email=SERVICE_ACCOUNT)

    # Without the cache, every fetch is one signBlob call.
    for digest in digests + digests:
        signer.sign_uncached(blob_name(digest))
    assert sign_blob_calls == 100 + 200

    credentials.expiry = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)
    signer.signed_url("blobs/sha256/new")
    assert credentials.refreshes == 2, "an expired token is refreshed before signing"


def test_keyless_identity_without_a_service_account_is_refused(gcs_bucket: gcs.Bucket) -> None:
    credentials = MetadataServerCredentials("default")
    signer = UrlSigner(gcs_bucket, credentials=credentials, sign_blob=lambda message: b"")
    with pytest.raises(RuntimeError, match="service account"):
        signer.signed_url("blobs/sha256/a")
