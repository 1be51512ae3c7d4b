"""Fixtures for the Google Cloud emulators that the cloud tests run against.

The emulators are started as the dev stack starts them (nixery.cloud.devstack): each in its own
session on 127.0.0.1, stopped by process group, since `gcloud` starts a shell that starts java.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from google.cloud import storage as gcs

from nixery.cloud.devstack import (
    ManagedProcess,
    StackError,
    start_firestore_emulator,
    start_gcs_emulator,
)
from tests.conftest import SETUP, unavailable

Emulator = ManagedProcess
FIRESTORE_EMULATOR_INSTALL = (
    f"{SETUP}: Java 17 from apt; gcloud and its cloud-firestore-emulator from Google's apt"
    " repository (google-cloud-cli-firestore-emulator)"
)


def _log_path(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{name}-emulator-")) / "emulator.log"


def wipe_firestore(emulator: Emulator, project: str) -> None:
    request = urllib.request.Request(
        f"{emulator.url}/emulator/v1/projects/{project}/databases/(default)/documents",
        method="DELETE",
    )
    with urllib.request.urlopen(request, timeout=30):
        pass


# Fixtures for the modules that use the emulators (import them into a conftest or test module).
# Each importing module gets its own session-wide emulator process.

TEST_PROJECT = "nixery-test"


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[Emulator]:
    emulator = start_gcs_emulator(_log_path("gcs"))
    try:
        # The storage client reads the emulator's address from the environment.
        with _environment("STORAGE_EMULATOR_HOST", emulator.url):
            yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[Emulator]:
    try:
        emulator = start_firestore_emulator(_log_path("firestore"))
    except StackError as reason:
        unavailable(f"Firestore emulator unavailable: {reason}", FIRESTORE_EMULATOR_INSTALL)
    try:
        with _environment("FIRESTORE_EMULATOR_HOST", emulator.host_port):
            yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def gcs_client(gcs_emulator: Emulator) -> gcs.Client:
    return gcs.Client(project=TEST_PROJECT, credentials=AnonymousCredentials())


@pytest.fixture
def gcs_bucket(gcs_client: gcs.Client) -> gcs.Bucket:
    """A new, empty bucket for each test."""
    return gcs_client.create_bucket(f"test-{uuid.uuid4().hex}")


@pytest.fixture
def firestore_client(firestore_emulator: Emulator) -> firestore.Client:
    return firestore.Client(project=TEST_PROJECT, credentials=AnonymousCredentials())
