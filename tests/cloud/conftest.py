"""The cloud tests run against the emulators (see tests/emulators.py)."""

from tests.emulators import (  # noqa: F401 (fixtures)
    firestore_client,
    firestore_emulator,
    gcs_bucket,
    gcs_client,
    gcs_emulator,
)
