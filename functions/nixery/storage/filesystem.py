"""Content-addressed blobs on the local filesystem: `<root>/blobs/sha256/<hex>`."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from nixery.oci import digest_hex
from nixery.storage import AbortUnlessCommitted, BlobNotFound


class FilesystemBlobWriter(AbortUnlessCommitted):
    def __init__(self, storage: FilesystemStorage) -> None:
        self._storage = storage
        fd, name = tempfile.mkstemp(dir=storage.tmp_dir, prefix="upload-")
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._tmp_path = Path(name)
        self._done = False

    def write(self, data: bytes) -> int:
        return self._file.write(data)

    def commit(self, digest: str, media_type: str) -> None:
        final = self._storage.blob_path(digest)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        # The rename is atomic: a reader sees the whole blob or nothing under its final name.
        os.replace(self._tmp_path, final)
        self._done = True

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp_path.unlink()


class FilesystemStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.blob_dir = self.root / "blobs" / "sha256"
        self.tmp_dir = self.root / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

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

    def redirect_url(self, digest: str) -> str | None:
        return None
