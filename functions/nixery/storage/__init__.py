"""Blob storage: content-addressed, written once, never visible half-written.

Two implementations share one contract (tests/contract): the filesystem (the embedded default)
and GCS (the cloud deployment).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Protocol, Self


class BlobNotFound(KeyError):
    pass


class StorageUnavailable(Exception):
    """The storage cannot take or give bytes now (disk full, I/O error, the service down).
    Nothing partial was published; a retry may succeed once an operator frees space.
    `full`: out of space (ENOSPC, EDQUOT) rather than otherwise failing."""

    def __init__(self, message: str, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


@dataclass(frozen=True)
class StoredObject:
    """A blob (`name` is its digest) or an upload's leftover (`name` as `delete_upload` takes
    it), for garbage collection (nixery.index.gc)."""

    name: str
    size: int
    modified_at: float  # Unix time


class BlobWriter(Protocol):
    """A blob under construction. Nothing is visible under the final name before `commit`."""

    def write(self, data: bytes) -> int: ...

    def commit(self, digest: str, media_type: str) -> None:
        """Publish the written bytes as `digest` (a no-op if that blob already exists)."""
        ...

    def abort(self) -> None: ...

    def __enter__(self) -> BlobWriter: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Abort unless committed."""
        ...


class Storage(Protocol):
    def writer(self) -> BlobWriter: ...

    def size(self, digest: str) -> int | None:
        """The stored size of `digest`, or None when absent."""
        ...

    def open(self, digest: str) -> BinaryIO:
        """A seekable reader of the blob; raises BlobNotFound."""
        ...

    def redirect_url(self, digest: str) -> str | None:
        """A URL that serves the blob to a client (GCS signed URL), or None to serve it here."""
        ...

    def list_blobs(self) -> Iterator[StoredObject]:
        """Every published blob, named by digest."""
        ...

    def delete(self, digest: str) -> None:
        """Remove a blob; an absent one is no error."""
        ...

    def list_uploads(self) -> Iterator[StoredObject]:
        """What uploads in progress or killed mid-way left (temp files, staging objects)."""
        ...

    def delete_upload(self, name: str) -> None:
        """Remove an upload's leftover named by `list_uploads`; an absent one is no error."""
        ...


class AbortUnlessCommitted:
    """The context-manager half of a BlobWriter: leaving the block aborts an uncommitted blob."""

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


def put_bytes(storage: Storage, digest: str, data: bytes, media_type: str) -> None:
    """Store a small blob (config, manifest) whose digest is already known."""
    with storage.writer() as writer:
        writer.write(data)
        writer.commit(digest, media_type)
