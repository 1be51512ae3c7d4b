"""Content-addressed blobs in a GCS bucket: `blobs/sha256/<hex>`, uploaded via `staging/<uuid>`.

A writer does not know its digest until `commit`, so it streams a resumable upload to a staging
object and `commit` copies that server-side to the final name. A resumable upload creates no
object until it is finalised, so an upload that fails midway leaves nothing; a staging object
that outlives a crash between finalising and deleting it is for a bucket lifecycle rule on
`staging/` to remove.

Every call has a deadline: `timeout` bounds each HTTP attempt, `retry` (its own deadline) the
retries. The lookups a request makes (`size`, `open`) raise StorageUnavailable when GCS fails or
does not answer in time, so a frozen GCS is a 503 at the API edge, its text only in the log.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast

import requests
from google.api_core.exceptions import GoogleAPIError, NotFound, PreconditionFailed
from google.auth.exceptions import GoogleAuthError
from google.cloud.storage import Blob, Bucket
from google.cloud.storage.retry import DEFAULT_RETRY, DEFAULT_RETRY_IF_GENERATION_SPECIFIED

from nixery.oci import DIGEST_RE, digest_hex
from nixery.storage import AbortUnlessCommitted, BlobNotFound, StorageUnavailable, StoredObject

if TYPE_CHECKING:
    from google.api_core.retry import Retry
    from google.cloud.storage.fileio import BlobWriter


class UrlSigner(Protocol):
    """What signs a blob's GET URL (nixery.cloud.signing in the deployment)."""

    def signed_url(self, object_name: str) -> str: ...


BLOB_PREFIX = "blobs/sha256/"
STAGING_PREFIX = "staging/"
STAGING_CONTENT_TYPE = "application/octet-stream"
# Each upload buffers one chunk in memory; resumable chunks must be multiples of 256 KiB.
DEFAULT_UPLOAD_CHUNK_SIZE = 8 * 1024 * 1024
DEFAULT_READ_CHUNK_SIZE = 8 * 1024 * 1024
# Seconds one HTTP attempt may take (connect, then each read); the library's default is 60.
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 60.0)

log = logging.getLogger(__name__)


def blob_name(digest: str) -> str:
    return BLOB_PREFIX + digest_hex(digest)


class GcsBlobWriter(AbortUnlessCommitted):
    def __init__(self, storage: GcsStorage) -> None:
        self._storage = storage
        self.staging = storage.bucket.blob(STAGING_PREFIX + uuid.uuid4().hex)
        self._upload = cast(
            "BlobWriter",
            self.staging.open(
                "wb",
                chunk_size=storage.upload_chunk_size,
                content_type=STAGING_CONTENT_TYPE,
                retry=storage.retry,
                ignore_flush=True,
                timeout=storage.timeout,
            ),
        )
        self._finished = False

    def write(self, data: bytes) -> int:
        self._upload.write(data)
        return len(data)

    def commit(self, digest: str, media_type: str) -> None:
        if self._finished:
            raise RuntimeError("this blob writer has already committed or aborted")
        # Validate before finalising anything: a malformed digest must not reach the bucket.
        final = self._storage.bucket.blob(blob_name(digest))
        self._finished = True
        try:
            self._upload.close()
        except BaseException:
            self._cancel_upload()
            self._delete_staging()
            raise
        try:
            self._storage.publish(self.staging, final, media_type)
        finally:
            self._delete_staging()

    def abort(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._cancel_upload()
        # Nothing was finalised, but a failure inside close() may have raced the last chunk.
        self._delete_staging()

    def _cancel_upload(self) -> None:
        # Frees the resumable session on the server; it would otherwise linger for a week. Not
        # BlobWriter.terminate(): it sends the DELETE to the initiation URL, not the session's.
        session = getattr(self._upload, "_upload_and_transport", None)
        if session is not None:
            upload, transport = session
            with contextlib.suppress(Exception):
                if upload.resumable_url:
                    transport.delete(upload.resumable_url, timeout=self._storage.timeout)
        # BlobWriter is an IOBase: when collected it calls close(), which would send the
        # buffered rest and finalise the aborted upload as a staging object. Discard the buffer.
        buffer = getattr(self._upload, "_buffer", None)
        if buffer is not None:
            buffer.close()

    def _delete_staging(self) -> None:
        try:
            self.staging.delete(retry=self._storage.retry, timeout=self._storage.timeout)
        except NotFound:
            pass
        except Exception as error:
            # The upload's outcome stands either way; the staging lifecycle rule sweeps up.
            log.warning("could not delete %s: %s", self.staging.name, error)


class GcsStorage:
    def __init__(
        self,
        bucket: Bucket,
        signer: UrlSigner | None = None,
        *,
        upload_chunk_size: int = DEFAULT_UPLOAD_CHUNK_SIZE,
        read_chunk_size: int = DEFAULT_READ_CHUNK_SIZE,
        retry: Retry | None = DEFAULT_RETRY,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        self.bucket = bucket
        self.signer = signer
        self.upload_chunk_size = upload_chunk_size
        self.read_chunk_size = read_chunk_size
        self.retry = retry
        self.timeout = timeout

    def writer(self) -> GcsBlobWriter:
        return GcsBlobWriter(self)

    def publish(self, staging: Blob, final: Blob, media_type: str) -> None:
        """Copy `staging` to `final` unless `final` exists; the first writer of a digest wins."""
        # Checked first as well because not every GCS implementation honours
        # if_generation_match on a rewrite (fake-gcs-server does not: there a late copy
        # overwrites the same bytes); on GCS the precondition closes the race between check and
        # copy (tests/cloud/test_gcs_failures.py, the publish race tests).
        if final.exists(retry=self.retry, timeout=self.timeout):
            return
        final.content_type = media_type
        rewrite_retry = DEFAULT_RETRY_IF_GENERATION_SPECIFIED if self.retry else None
        token: str | None = None
        try:
            while True:
                # Large or cross-location copies take several calls, each resuming the token.
                token, _written, _total = final.rewrite(
                    staging,
                    token=token,
                    if_generation_match=0,
                    retry=rewrite_retry,
                    timeout=self.timeout,
                )
                if token is None:
                    break
        except PreconditionFailed:
            return
        if final.content_type != media_type:
            # GCS (and fake-gcs-server) apply the destination metadata sent with the rewrite;
            # gcp-storage-emulator did not.
            final.content_type = media_type
            final.patch(
                if_metageneration_match=final.metageneration,
                retry=self.retry,
                timeout=self.timeout,
            )

    def _metadata(self, digest: str) -> Blob | None:
        # Object metadata, not an HTTP HEAD of the media.
        try:
            return self.bucket.get_blob(blob_name(digest), retry=self.retry, timeout=self.timeout)
        except (GoogleAPIError, requests.RequestException) as error:
            log.warning("GCS lookup of %s failed: %s", digest, error)
            raise StorageUnavailable(f"GCS lookup of {digest}: {error}") from error

    def size(self, digest: str) -> int | None:
        blob = self._metadata(digest)
        return None if blob is None else blob.size

    def open(self, digest: str) -> BinaryIO:
        blob = self._metadata(digest)
        if blob is None:
            raise BlobNotFound(digest)
        # The reader asks for this blob's generation, so every range comes from one object.
        reader = blob.open(
            "rb", chunk_size=self.read_chunk_size, retry=self.retry, timeout=self.timeout
        )
        return cast(BinaryIO, reader)

    def redirect_url(self, digest: str) -> str | None:
        name = blob_name(digest)
        if self.signer is None:
            return None
        try:
            return self.signer.signed_url(name)
        except (GoogleAuthError, GoogleAPIError, requests.RequestException) as error:
            # Keyless signing asks IAM signBlob (and refreshes a token) within the deadline.
            log.warning("signing a URL for %s failed: %s", digest, error)
            raise StorageUnavailable(f"signing {name}: {error}") from error

    def _listed(self, prefix: str) -> Iterator[tuple[str, StoredObject]]:
        # Pages of 1000 objects, the listing's maximum: one Class A operation per page.
        for blob in self.bucket.list_blobs(prefix=prefix, retry=self.retry):
            updated = blob.updated.timestamp() if blob.updated is not None else 0.0
            rest = blob.name[len(prefix) :]
            yield rest, StoredObject(rest, int(blob.size or 0), updated)

    def list_blobs(self) -> Iterator[StoredObject]:
        for rest, stored in self._listed(BLOB_PREFIX):
            digest = "sha256:" + rest
            if DIGEST_RE.fullmatch(digest):
                yield StoredObject(digest, stored.size, stored.modified_at)

    def _delete_object(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            self.bucket.blob(name).delete(retry=self.retry)

    def delete(self, digest: str) -> None:
        self._delete_object(blob_name(digest))

    def list_uploads(self) -> Iterator[StoredObject]:
        for _rest, stored in self._listed(STAGING_PREFIX):
            yield stored

    def delete_upload(self, name: str) -> None:
        if not name or "/" in name:
            raise ValueError(f"not a staging object: {name!r}")
        self._delete_object(STAGING_PREFIX + name)
