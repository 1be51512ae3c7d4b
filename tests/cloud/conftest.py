"""The cloud tests run against the emulators (see tests/emulators.py); the builder image
(tests/builder_container.py) is built for those that run the builder as a container."""

from tests.builder_container import builder_docker, builder_image  # noqa: F401 (fixtures)
from tests.daemons import docker, podman  # noqa: F401 (fixtures)
from tests.emulators import (  # noqa: F401 (fixtures)
    firestore_client,
    firestore_emulator,
    gcs_bucket,
    gcs_client,
    gcs_emulator,
)
