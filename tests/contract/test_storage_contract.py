from __future__ import annotations

import hashlib
import threading
import time

import pytest

from nixery.oci import InvalidDigest, sha256_digest
from nixery.storage import BlobNotFound, Storage, put_bytes
from nixery.storage.filesystem import FilesystemStorage

MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


def test_absent_blob(storage: Storage) -> None:
    digest = sha256_digest(b"never stored")
    assert storage.size(digest) is None
    with pytest.raises(BlobNotFound):
        storage.open(digest)


def test_streamed_write_then_read(storage: Storage) -> None:
    chunks = [bytes([i]) * 65536 for i in range(40)]
    digest = "sha256:" + hashlib.sha256(b"".join(chunks)).hexdigest()
    with storage.writer() as writer:
        for chunk in chunks:
            writer.write(chunk)
        assert storage.size(digest) is None, "visible before commit"
        writer.commit(digest, MEDIA_TYPE)
    assert storage.size(digest) == 40 * 65536
    with storage.open(digest) as reader:
        reader.seek(65536 * 3)
        assert reader.read(4) == b"\x03" * 4


def test_aborted_write_leaves_nothing(storage: Storage) -> None:
    data = b"partial layer"
    digest = sha256_digest(data)
    with pytest.raises(RuntimeError), storage.writer() as writer:
        writer.write(data)
        raise RuntimeError("upload failed")
    assert storage.size(digest) is None
    put_bytes(storage, digest, data, MEDIA_TYPE)  # a clean retry works
    assert storage.size(digest) == len(data)


def test_commit_existing_blob_is_idempotent(storage: Storage) -> None:
    data = b'{"config": true}'
    digest = sha256_digest(data)
    put_bytes(storage, digest, data, "application/vnd.oci.image.config.v1+json")
    put_bytes(storage, digest, data, "application/vnd.oci.image.config.v1+json")
    with storage.open(digest) as reader:
        assert reader.read() == data


def test_concurrent_writers_of_one_blob(storage: Storage) -> None:
    data = b"shared layer" * 10000
    digest = sha256_digest(data)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            put_bytes(storage, digest, data, MEDIA_TYPE)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with storage.open(digest) as reader:
        assert reader.read() == data


@pytest.mark.parametrize(
    "bad",
    ["sha256:../../etc/passwd", "sha256:" + "A" * 64, "md5:abc", "../blobs", "sha256:" + "0" * 63],
)
def test_malformed_digest_never_names_a_path(storage: Storage, bad: str) -> None:
    with pytest.raises(InvalidDigest):
        storage.size(bad)
    with pytest.raises(InvalidDigest):
        storage.open(bad)


def test_empty_blob(storage: Storage) -> None:
    digest = sha256_digest(b"")
    put_bytes(storage, digest, b"", "application/vnd.oci.empty.v1+json")
    assert storage.size(digest) == 0
    with storage.open(digest) as reader:
        assert reader.read() == b""


def test_reads_across_many_seeks(storage: Storage) -> None:
    data = hashlib.sha256(b"seed").digest() * 40000  # 1.28 MB, not a multiple of any chunk size
    digest = sha256_digest(data)
    put_bytes(storage, digest, data, MEDIA_TYPE)
    with storage.open(digest) as reader:
        for offset in [0, 1, 262143, 262144, 1000000, len(data) - 3]:
            reader.seek(offset)
            assert reader.read(5) == data[offset : offset + 5]
        reader.seek(0)
        assert hashlib.sha256(reader.read()).digest() == hashlib.sha256(data).digest()


def test_blobs_are_listed_and_deleted(storage: Storage) -> None:
    """Garbage collection's view: every blob with its size and age; deleting twice is fine."""
    before = time.time() - 60
    kept, dropped = b"kept blob", b"dropped blob" * 100
    for data in (kept, dropped):
        put_bytes(storage, sha256_digest(data), data, MEDIA_TYPE)
    listed = {stored.name: stored for stored in storage.list_blobs()}
    assert set(listed) == {sha256_digest(kept), sha256_digest(dropped)}
    assert listed[sha256_digest(dropped)].size == len(dropped)
    assert all(stored.modified_at > before for stored in listed.values())
    storage.delete(sha256_digest(dropped))
    storage.delete(sha256_digest(dropped))
    assert storage.size(sha256_digest(dropped)) is None
    assert [stored.name for stored in storage.list_blobs()] == [sha256_digest(kept)]
    assert list(storage.list_uploads()) == [], "a committed upload leaves nothing behind"


def test_an_unfinished_upload_is_listed_until_deleted(storage: Storage) -> None:
    """A writer that never commits or aborts (its process killed) leaves a temp file or
    staging object behind, which garbage collection finds and removes."""
    data = b"x" * (300 * 1024)
    if isinstance(storage, FilesystemStorage):
        writer = storage.writer()
        writer.write(data)
    else:
        from nixery.storage.gcs import STAGING_PREFIX, GcsStorage

        assert isinstance(storage, GcsStorage)
        # A resumable upload creates no object until finalised: what a crash leaves is a
        # finalised staging object whose copy or deletion never happened.
        storage.bucket.blob(STAGING_PREFIX + "leftover").upload_from_string(data)
    (leftover,) = storage.list_uploads()
    assert leftover.modified_at > time.time() - 60
    storage.delete_upload(leftover.name)
    storage.delete_upload(leftover.name)
    assert list(storage.list_uploads()) == []
    with pytest.raises(ValueError):
        storage.delete_upload("../blobs")
