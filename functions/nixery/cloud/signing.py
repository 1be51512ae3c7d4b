"""V4 signed GET URLs for blobs, cached per object for part of their lifetime.

With a service-account key (a key file, as GOOGLE_APPLICATION_CREDENTIALS names) the signature
is computed locally. Cloud Run and Cloud Functions identities hold a token but no key: there
each signature is a call to the IAM Credentials signBlob API, which is why URLs are cached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import google.auth
import google.auth.credentials
import google.auth.iam
import google.auth.transport.requests
from google.cloud.storage import Bucket

from nixery.cloud.deadlines import DeadlineRequest
from nixery.config import Config
from nixery.util.lru import Lru
from nixery.util.singleflight import SingleFlight

SignBlob = Callable[[bytes], bytes]
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_EXPIRY = timedelta(seconds=Config.signed_url_expiry)  # NIXERY_SIGNED_URL_EXPIRY
# Cached URLs at most (about 1 kB each); past this the least recently used go first.
CACHE_MAX_URLS = 10_000
DEFAULT_DEADLINE_SECONDS = Config.call_deadline  # NIXERY_CALL_DEADLINE


class _BlobSigningCredentials(google.auth.credentials.Signing):
    """Presents a sign-blob function where the storage library expects signing credentials."""

    def __init__(self, email: str, sign_blob: SignBlob) -> None:
        self._email = email
        self._sign_blob = sign_blob

    def sign_bytes(self, message: bytes) -> bytes:
        return self._sign_blob(message)

    @property
    def signer_email(self) -> str:
        return self._email

    @property
    def signer(self) -> google.auth.crypt.Signer:
        raise NotImplementedError("only sign_bytes is used for signed URLs")


class UrlSigner:
    """Signs GET URLs for objects of `bucket`, valid for `expiry`.

    `credentials`: signing credentials (with a private key) sign locally; credentials without a
    key (a metadata-server identity) are refreshed when needed and their service account signs
    through `sign_blob`, which defaults to IAM signBlob (`google.auth.iam.Signer`). None means
    the application default credentials. `clock` (seconds, monotonic) only ages the cache.
    """

    def __init__(
        self,
        bucket: Bucket,
        expiry: timedelta = DEFAULT_EXPIRY,
        credentials: google.auth.credentials.Credentials | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        sign_blob: SignBlob | None = None,
        deadline: float = DEFAULT_DEADLINE_SECONDS,
    ) -> None:
        if credentials is None:
            credentials, _project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
        self.bucket = bucket
        self.expiry = expiry
        self.credentials = credentials
        self._clock = clock
        self._sign_blob = sign_blob
        # Credential refreshes and signBlob calls, each within this (google-auth waits 120 s).
        self._request = DeadlineRequest(deadline)
        # A URL is reused while more than half of its lifetime is left.
        self._cache: Lru[str, str] = Lru(CACHE_MAX_URLS, clock=clock)
        self._signing: SingleFlight[str] = SingleFlight()
        self._counts_lock = threading.Lock()
        self._credentials_lock = threading.Lock()
        self.signing_operations = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.credential_refreshes = 0

    @property
    def signs_locally(self) -> bool:
        return isinstance(self.credentials, google.auth.credentials.Signing)

    def signed_url(self, object_name: str) -> str:
        """A GET URL for `object_name` with more than half of `expiry` left."""
        cached = self._cache.get(object_name)
        if cached is not None:
            self._count(hit=True)
            return cached
        # One signature per object even when many requests for it arrive at once: the others
        # wait for it, and count as hits.
        led = False

        def sign() -> str:
            nonlocal led
            led = True
            # A flight that ended between our look and this one signed it already.
            cached = self._cache.get(object_name)
            self._count(hit=cached is not None)
            if cached is not None:
                return cached
            # Read before signing: the URL's own validity window starts no earlier than this.
            started = self._clock()
            url = self.sign_uncached(object_name)
            half_life = self.expiry.total_seconds() / 2
            self._cache.put(object_name, url, expires_at=started + half_life)
            return url

        url = self._signing.run(object_name, sign)
        if not led:
            self._count(hit=True)
        return url

    def _count(self, *, hit: bool) -> None:
        with self._counts_lock:
            if hit:
                self.cache_hits += 1
            else:
                self.cache_misses += 1

    def sign_uncached(self, object_name: str) -> str:
        credentials = self._signing_credentials()
        url = self.bucket.blob(object_name).generate_signed_url(
            version="v4",
            method="GET",
            expiration=self.expiry,
            credentials=credentials,
        )
        with self._counts_lock:
            self.signing_operations += 1
        return str(url)

    def _signing_credentials(self) -> google.auth.credentials.Signing:
        if isinstance(self.credentials, google.auth.credentials.Signing):
            return self.credentials
        with self._credentials_lock:
            # The service account email reads "default" until the first refresh.
            if not self.credentials.valid:
                self.credentials.refresh(self._request)
                self.credential_refreshes += 1
            email = getattr(self.credentials, "service_account_email", None)
            if not email or email == "default":
                raise RuntimeError(
                    "the credentials name no service account: keyless URL signing needs one"
                )
            sign_blob = self._sign_blob
            if sign_blob is None:
                sign_blob = google.auth.iam.Signer(self._request, self.credentials, email).sign
        return _BlobSigningCredentials(email, sign_blob)
