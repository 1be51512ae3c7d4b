from __future__ import annotations

import hashlib
import threading

import pytest

from nixery.oci import InvalidDigest, sha256_digest
from nixery.storage import BlobNotFound, Storage, put_bytes

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
