"""Storage faults are answers (issue 13): a full disk or a failing write surfaces as
StorageUnavailable, every writer removes its temp file on every path, nothing partial is
visible. On a real 5 MB tmpfs (root), and with faults injected into a writer's file."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nixery.oci import sha256_digest
from nixery.storage import StorageUnavailable
from nixery.storage.filesystem import FilesystemStorage
from tests.conftest import unavailable

# Smaller than the writer's buffer, as a layer's gzip stream writes: the disk fills while bytes
# wait in the buffer, so abort's close() fails again on its flush (the old leak).
CHUNK = b"".join(sha256_digest(str(index).encode()).encode() for index in range(50))


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs needs root", "run the tests as root, as scripts/test does")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _temp_files(storage: FilesystemStorage) -> list[Path]:
    return list(storage.tmp_dir.iterdir())


def test_a_full_disk_is_storage_full_and_leaves_no_temp_file(tiny_disk: Path) -> None:
    storage = FilesystemStorage(tiny_disk / "storage")
    for _ in range(20):
        with pytest.raises(StorageUnavailable) as raised, storage.writer() as writer:
            while True:
                writer.write(CHUNK)
        assert raised.value.full
        assert "full" in str(raised.value)
        assert _temp_files(storage) == []
    assert list(storage.blob_dir.iterdir()) == []
    # The disk is usable again: what failed took no space with it.
    with storage.writer() as writer:
        writer.write(b"small")
        writer.commit(sha256_digest(b"small"), "application/octet-stream")
    assert storage.open(sha256_digest(b"small")).read() == b"small"


def test_a_flush_that_fails_at_commit_removes_the_temp_file(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path / "storage")
    digest = sha256_digest(b"data")
    with pytest.raises(StorageUnavailable) as raised, storage.writer() as writer:
        writer.write(b"data")
        # Injected: the bytes go to /dev/full, a real device that answers every write ENOSPC.
        writer._file.close()
        writer._file = open("/dev/full", "wb")  # noqa: SIM115
        writer._file.write(b"buffered, so the failure comes at the flush")
        writer.commit(digest, "application/octet-stream")
    assert raised.value.full
    assert _temp_files(storage) == []
    assert storage.size(digest) is None


def test_an_abort_whose_close_fails_still_removes_the_temp_file(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path / "storage")
    writer = storage.writer()
    writer.write(b"data")
    writer._file.close()
    writer._file = open("/dev/full", "wb")  # noqa: SIM115
    writer._file.write(b"pending bytes that close() cannot flush")
    writer.abort()
    assert _temp_files(storage) == []


def test_a_failed_rename_is_storage_unavailable_and_publishes_nothing(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path / "storage")
    digest = sha256_digest(b"data")
    # Injected: the final name is taken by a directory, so the rename fails (EISDIR).
    storage.blob_path(digest).mkdir()
    with pytest.raises(StorageUnavailable) as raised, storage.writer() as writer:
        writer.write(b"data")
        writer.commit(digest, "application/octet-stream")
    assert not raised.value.full
    assert "unavailable" in str(raised.value)
    assert _temp_files(storage) == []


def test_start_up_removes_stale_temp_files(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path / "storage")
    (storage.tmp_dir / "upload-left-by-a-killed-server").write_bytes(b"x" * 1000)
    assert storage.remove_temp_files() == 1
    assert _temp_files(storage) == []
