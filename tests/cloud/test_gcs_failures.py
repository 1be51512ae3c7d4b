"""GCS storage under failure: uploads broken midway leave nothing behind, and a retry succeeds.

Network failures are real: the storage client talks to the emulator through a TCP proxy that
cuts chosen connections, so the client library sees what a dropped connection looks like.
"""

from __future__ import annotations

import gc
import hashlib
import json
import tracemalloc
from collections.abc import Iterator

import pytest
import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs
from google.cloud.storage.retry import DEFAULT_RETRY

from nixery.oci import sha256_digest
from nixery.storage import put_bytes
from nixery.storage.gcs import BLOB_PREFIX, STAGING_PREFIX, GcsStorage, blob_name
from tests.cloud.faultproxy import FaultyProxy, nth_request
from tests.emulators import TEST_PROJECT, Emulator

pytestmark = pytest.mark.cloud

CHUNK = 256 * 1024
MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


def chunk_stream(count: int, size: int = CHUNK) -> Iterator[bytes]:
    """Deterministic, distinct chunks, made one at a time."""
    for index in range(count):
        seed = hashlib.sha256(index.to_bytes(8, "big")).digest()
        yield seed * (size // len(seed))


def digest_of(chunks: Iterator[bytes]) -> str:
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


@pytest.fixture
def proxy(gcs_emulator: Emulator) -> Iterator[FaultyProxy]:
    faulty = FaultyProxy(int(gcs_emulator.host_port.rsplit(":", 1)[1]))
    yield faulty
    faulty.close()


def through(proxy: FaultyProxy, bucket: gcs.Bucket) -> gcs.Bucket:
    client = gcs.Client(
        project=TEST_PROJECT,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": proxy.url},
    )
    return client.bucket(bucket.name)


def object_names(bucket: gcs.Bucket) -> list[str]:
    return sorted(blob.name for blob in bucket.client.list_blobs(bucket.name))


def test_producer_failure_after_several_chunks_leaves_nothing(gcs_bucket: gcs.Bucket) -> None:
    storage = GcsStorage(gcs_bucket, upload_chunk_size=CHUNK)
    digest = digest_of(chunk_stream(8))
    with pytest.raises(RuntimeError, match="tar failed"), storage.writer() as writer:
        for sent, chunk in enumerate(chunk_stream(8)):
            if sent == 5:
                raise RuntimeError("tar failed")
            writer.write(chunk)
    assert object_names(gcs_bucket) == []

    with storage.writer() as writer:
        for chunk in chunk_stream(8):
            writer.write(chunk)
        writer.commit(digest, MEDIA_TYPE)
    assert object_names(gcs_bucket) == [blob_name(digest)]
    assert storage.size(digest) == 8 * CHUNK


@pytest.mark.parametrize("chunks_sent", [0, 5])
def test_an_aborted_writer_stays_aborted_when_collected(
    gcs_bucket: gcs.Bucket, chunks_sent: int
) -> None:
    # The client library's writer finalises its upload when garbage-collected unless told not to.
    storage = GcsStorage(gcs_bucket, upload_chunk_size=CHUNK)
    writer = storage.writer()
    for chunk in chunk_stream(chunks_sent + 1):
        writer.write(chunk)
    writer.abort()
    del writer
    gc.collect()
    assert object_names(gcs_bucket) == []


def test_connection_dropped_mid_upload_leaves_nothing_and_a_retry_succeeds(
    gcs_bucket: gcs.Bucket, proxy: FaultyProxy
) -> None:
    # Without retries, so that the dropped connection surfaces instead of being recovered.
    storage = GcsStorage(through(proxy, gcs_bucket), upload_chunk_size=CHUNK, retry=None)
    digest = digest_of(chunk_stream(8))
    proxy.cut = nth_request("PUT /upload/", 3)
    with pytest.raises(Exception) as failure, storage.writer() as writer:
        for chunk in chunk_stream(8):
            writer.write(chunk)
        writer.commit(digest, MEDIA_TYPE)
    assert "Connection" in type(failure.value).__name__ + str(failure.value)
    assert len(proxy.dropped) == 1
    assert object_names(gcs_bucket) == []
    cancels = [line for line in proxy.requests if line.startswith("DELETE /upload/")]
    assert len(cancels) == 1 and "upload_id=" in cancels[0], "the upload session is cancelled"

    proxy.cut = lambda request_line: False
    with storage.writer() as writer:
        for chunk in chunk_stream(8):
            writer.write(chunk)
        writer.commit(digest, MEDIA_TYPE)
    assert object_names(gcs_bucket) == [blob_name(digest)]
    with storage.open(digest) as reader:
        assert "sha256:" + hashlib.sha256(reader.read()).hexdigest() == digest


def test_dropped_connection_is_recovered_by_the_default_retry(
    gcs_bucket: gcs.Bucket, proxy: FaultyProxy
) -> None:
    storage = GcsStorage(through(proxy, gcs_bucket), upload_chunk_size=CHUNK, retry=DEFAULT_RETRY)
    digest = digest_of(chunk_stream(6))
    proxy.cut = nth_request("PUT /upload/", 2)
    with storage.writer() as writer:
        for chunk in chunk_stream(6):
            writer.write(chunk)
        writer.commit(digest, MEDIA_TYPE)
    assert len(proxy.dropped) == 1
    assert object_names(gcs_bucket) == [blob_name(digest)]
    with storage.open(digest) as reader:
        assert "sha256:" + hashlib.sha256(reader.read()).hexdigest() == digest


def test_failed_copy_to_the_final_name_removes_staging(
    gcs_bucket: gcs.Bucket, proxy: FaultyProxy
) -> None:
    storage = GcsStorage(through(proxy, gcs_bucket), upload_chunk_size=CHUNK, retry=None)
    data = b"config" * 1000
    digest = sha256_digest(data)
    proxy.cut = lambda request_line: "/rewriteTo/" in request_line
    with pytest.raises(Exception):  # noqa: B017
        put_bytes(storage, digest, data, MEDIA_TYPE)
    assert proxy.dropped and object_names(gcs_bucket) == []

    proxy.cut = lambda request_line: False
    put_bytes(storage, digest, data, MEDIA_TYPE)
    assert object_names(gcs_bucket) == [blob_name(digest)]


def test_unreachable_cleanup_does_not_undo_a_published_blob(
    gcs_bucket: gcs.Bucket, proxy: FaultyProxy
) -> None:
    storage = GcsStorage(through(proxy, gcs_bucket), upload_chunk_size=CHUNK, retry=None)
    data = b"layer" * 1000
    digest = sha256_digest(data)
    proxy.cut = lambda request_line: request_line.startswith(
        f"DELETE /storage/v1/b/{gcs_bucket.name}/o/staging"
    )
    put_bytes(storage, digest, data, MEDIA_TYPE)  # published: no error although cleanup failed
    names = object_names(gcs_bucket)
    assert blob_name(digest) in names
    leftovers = [name for name in names if name.startswith(STAGING_PREFIX)]
    assert len(leftovers) == 1, "left for the bucket's staging/ lifecycle rule"


def test_multi_megabyte_blob_is_copied_whole(gcs_bucket: gcs.Bucket) -> None:
    storage = GcsStorage(gcs_bucket, upload_chunk_size=4 * 1024 * 1024)
    count = 12 * 4  # 12 MiB in 256 KiB writes
    digest = digest_of(chunk_stream(count))
    with storage.writer() as writer:
        for chunk in chunk_stream(count):
            writer.write(chunk)
        writer.commit(digest, MEDIA_TYPE)
    assert object_names(gcs_bucket) == [blob_name(digest)]
    final = gcs_bucket.get_blob(blob_name(digest))
    assert final is not None
    assert final.size == count * CHUNK
    assert final.content_type == MEDIA_TYPE
    hasher = hashlib.sha256()
    with storage.open(digest) as reader:
        while block := reader.read(1024 * 1024):
            hasher.update(block)
    assert "sha256:" + hasher.hexdigest() == digest


def test_upload_memory_stays_bounded_by_the_chunk_size(gcs_bucket: gcs.Bucket) -> None:
    chunk_size = 1024 * 1024
    storage = GcsStorage(gcs_bucket, upload_chunk_size=chunk_size)
    count = 4 * 40  # 40 MiB
    digest = digest_of(chunk_stream(count))
    tracemalloc.start()
    try:
        with storage.writer() as writer:
            for chunk in chunk_stream(count):
                writer.write(chunk)
            writer.commit(digest, MEDIA_TYPE)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert storage.size(digest) == count * CHUNK
    assert peak < 8 * chunk_size, f"peak {peak} bytes while uploading 40 MiB"
    assert all(name.startswith(BLOB_PREFIX) for name in object_names(gcs_bucket))


def _refused_creation(emulator: Emulator, bucket: gcs.Bucket, name: str) -> bytes:
    """The emulator's own answer to creating `name` again under `if_generation_match=0`, as
    raw HTTP for the proxy to replay. fake-gcs-server honours the precondition on multipart
    uploads (the client library's simple uploads) only: not on media or resumable uploads, and
    not on rewrites."""
    boundary = "nixery-test-boundary"
    body = (
        f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
        f"{json.dumps({'name': name})}\r\n"
        f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
        f"second writer\r\n--{boundary}--\r\n"
    ).encode()
    refused = requests.post(
        f"{emulator.url}/upload/storage/v1/b/{bucket.name}/o",
        params={"uploadType": "multipart", "ifGenerationMatch": "0"},
        data=body,
        headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
        timeout=30,
    )
    assert refused.status_code == 412, refused.text
    answer = refused.content
    return (
        b"HTTP/1.1 412 Precondition Failed\r\n"
        b"Content-Type: " + refused.headers["Content-Type"].encode() + b"\r\n"
        b"Content-Length: " + str(len(answer)).encode() + b"\r\n\r\n" + answer
    )


def test_publish_race_lost_between_check_and_copy_keeps_the_winners_object(
    gcs_emulator: Emulator, gcs_bucket: gcs.Bucket, proxy: FaultyProxy
) -> None:
    """Two builders publish one digest; the other one's copy lands after this one found the
    final name free. On GCS the copy's `if_generation_match=0` then fails with 412, which
    publish() takes as "someone else won". fake-gcs-server honours that precondition on multipart
    uploads but not on rewrites, so the proxy answers this rewrite with the emulator's own 412
    for the same precondition on the same object."""
    storage = GcsStorage(through(proxy, gcs_bucket), upload_chunk_size=CHUNK, retry=None)
    competitor = GcsStorage(gcs_bucket, upload_chunk_size=CHUNK, retry=None)
    data = b"layer both built" * 1000
    digest = sha256_digest(data)
    raced: list[str] = []

    def competitor_wins_first(request_line: str) -> bytes | None:
        if "/rewriteTo/" not in request_line or raced:
            return None
        raced.append(request_line)
        assert "ifGenerationMatch=0" in request_line, "the copy must carry the precondition"
        put_bytes(competitor, digest, data, MEDIA_TYPE)  # straight to the emulator
        return _refused_creation(gcs_emulator, gcs_bucket, blob_name(digest))

    proxy.answer = competitor_wins_first
    put_bytes(storage, digest, data, MEDIA_TYPE)  # no error: losing the race is success
    assert raced, "the race happened: the final name was free when this writer checked"
    final = gcs_bucket.get_blob(blob_name(digest))
    assert final is not None
    winner_generation = final.generation
    assert final.download_as_bytes() == data and final.content_type == MEDIA_TYPE
    assert object_names(gcs_bucket) == [blob_name(digest)], "both staging objects are gone"
    # The winner's object was not replaced afterwards (no fallback copy, no metadata patch).
    again = gcs_bucket.get_blob(blob_name(digest))
    assert again is not None and again.generation == winner_generation
    assert again.metageneration == 1


def test_publish_race_on_an_emulator_that_ignores_the_copy_precondition(
    gcs_bucket: gcs.Bucket, proxy: FaultyProxy
) -> None:
    """The same race without the replayed 412: fake-gcs-server lets the late copy overwrite the
    winner's object. Blobs are content-addressed, so the object stays what it must be."""
    storage = GcsStorage(through(proxy, gcs_bucket), upload_chunk_size=CHUNK, retry=None)
    competitor = GcsStorage(gcs_bucket, upload_chunk_size=CHUNK, retry=None)
    data = b"layer both built, again" * 1000
    digest = sha256_digest(data)
    raced: list[str] = []

    def competitor_publishes(request_line: str) -> bool:
        if "/rewriteTo/" in request_line and not raced:
            raced.append(request_line)
            put_bytes(competitor, digest, data, MEDIA_TYPE)
        return False

    proxy.cut = competitor_publishes
    put_bytes(storage, digest, data, MEDIA_TYPE)
    assert raced
    final = gcs_bucket.get_blob(blob_name(digest))
    assert final is not None
    assert final.download_as_bytes() == data and final.content_type == MEDIA_TYPE
    assert object_names(gcs_bucket) == [blob_name(digest)]
