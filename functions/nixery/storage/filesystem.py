"""Content-addressed blobs on the local filesystem: `<root>/blobs/sha256/<hex>`.

A blob is written to `<root>/tmp/upload-*` and renamed into place, so nothing partial is ever
visible under a blob's name; every way out of a writer that did not commit removes its temp
file, and an OSError (a full disk above all) surfaces as StorageUnavailable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from nixery.oci import DIGEST_RE, digest_hex
from nixery.storage import AbortUnlessCommitted, BlobNotFound, StorageUnavailable, StoredObject

TEMP_PREFIX = "upload-"
_OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def storage_error(error: OSError, doing: str) -> StorageUnavailable:
    full = error.errno in _OUT_OF_SPACE
    state = "full" if full else f"unavailable ({errno.errorcode.get(error.errno or 0, 'error')})"
    return StorageUnavailable(f"blob storage is {state} while {doing}", full=full)


@contextlib.contextmanager
def _as_storage_errors(doing: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise storage_error(error, doing) from error


class FilesystemBlobWriter(AbortUnlessCommitted):
    def __init__(self, storage: FilesystemStorage) -> None:
        self._storage = storage
        with _as_storage_errors("creating a temp file"):
            fd, name = tempfile.mkstemp(dir=storage.tmp_dir, prefix=TEMP_PREFIX)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._tmp_path = Path(name)
        self._done = False

    def write(self, data: bytes) -> int:
        with _as_storage_errors("writing a blob"):
            return self._file.write(data)

    def commit(self, digest: str, media_type: str) -> None:
        final = self._storage.blob_path(digest)
        with _as_storage_errors("writing a blob"):
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            # The rename is atomic: a reader sees the whole blob or nothing under its name.
            os.replace(self._tmp_path, final)
        self._done = True

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            # Closing flushes the buffer, which fails again on a full disk: the unlink must
            # happen all the same.
            with contextlib.suppress(OSError):
                self._file.close()
        finally:
            with contextlib.suppress(OSError):
                self._tmp_path.unlink()


class FilesystemStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.blob_dir = self.root / "blobs" / "sha256"
        self.tmp_dir = self.root / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def remove_temp_files(self) -> int:
        """Removes every temp file: only for the storage's sole owner at start-up (writers of a
        previous process, killed mid-write, never reached their abort)."""
        removed = 0
        for path in self.tmp_dir.glob(TEMP_PREFIX + "*"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        return removed

    def blob_path(self, digest: str) -> Path:
        return self.blob_dir / digest_hex(digest)

    def writer(self) -> FilesystemBlobWriter:
        return FilesystemBlobWriter(self)

    def size(self, digest: str) -> int | None:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def open(self, digest: str) -> BinaryIO:
        try:
            return self.blob_path(digest).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(digest) from None
        except OSError as error:
            raise storage_error(error, "reading a blob") from error

    def redirect_url(self, digest: str) -> str | None:
        return None

    @staticmethod
    def _listed(paths: Iterator[Path], name: Callable[[Path], str]) -> Iterator[StoredObject]:
        for path in paths:
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # renamed into place or removed since the listing
            yield StoredObject(name(path), stat.st_size, stat.st_mtime)

    def list_blobs(self) -> Iterator[StoredObject]:
        blobs = (p for p in self.blob_dir.iterdir() if DIGEST_RE.fullmatch("sha256:" + p.name))
        return self._listed(blobs, lambda path: "sha256:" + path.name)

    def delete(self, digest: str) -> None:
        with _as_storage_errors("deleting a blob"), contextlib.suppress(FileNotFoundError):
            self.blob_path(digest).unlink()

    def list_uploads(self) -> Iterator[StoredObject]:
        return self._listed(self.tmp_dir.glob(TEMP_PREFIX + "*"), lambda path: path.name)

    def delete_upload(self, name: str) -> None:
        if not name.startswith(TEMP_PREFIX) or "/" in name or name in {".", ".."}:
            raise ValueError(f"not an upload's temp file: {name!r}")
        with _as_storage_errors("deleting a temp file"), contextlib.suppress(FileNotFoundError):
            (self.tmp_dir / name).unlink()
