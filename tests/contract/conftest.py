"""Backends under the shared contract: every test here runs against each implementation.

The cloud backends run against emulators started once per session; each test gets a new
bucket or a new collection prefix, so tests never see each other's data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nixery.index import Index
from nixery.index.sqlite import SqliteIndex
from nixery.storage import Storage
from nixery.storage.filesystem import FilesystemStorage
from tests.emulators import (  # noqa: F401 (fixtures)
    firestore_client,
    firestore_emulator,
    gcs_bucket,
    gcs_client,
    gcs_emulator,
)


@pytest.fixture(params=["filesystem", pytest.param("gcs", marks=pytest.mark.cloud)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "filesystem":
        yield FilesystemStorage(tmp_path / "storage")
    elif request.param == "gcs":
        from nixery.storage.gcs import GcsStorage

        # Small chunks, so that the contract's streamed writes span several upload requests.
        yield GcsStorage(request.getfixturevalue("gcs_bucket"), upload_chunk_size=256 * 1024)


@pytest.fixture(params=["sqlite", pytest.param("firestore", marks=pytest.mark.cloud)])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Index]:
    if request.param == "sqlite":
        yield SqliteIndex(tmp_path / "index.sqlite")
    elif request.param == "firestore":
        from nixery.index.firestore import FirestoreIndex

        client = request.getfixturevalue("firestore_client")
        yield FirestoreIndex(client, prefix=f"t{uuid.uuid4().hex[:12]}_")
