"""Which manifest form each real client gets, from the Accept lists those clients really send.

CAPTURED_ACCEPT was recorded by tests/e2e/test_clients.py, which pulls with each client through
a recording proxy (tests/accept_recorder.py) and checks that the lists still match. crane and
regctl are not in the table: both are Go programs installed with `go install`, and this machine
reaches no Go module proxy. Docker's daemon builds its list from a Go map, so its order varies
between pulls: lists are compared as sets. "docker newer CLI" is the CLI first on PATH
(28.2 when captured); the 28.5 daemon and CLI, containerd 2.1 and podman 5.8 are Debian sid's
(tests/current_engines.py, recorded by tests/e2e/test_current_clients.py).
"""

from __future__ import annotations

import pytest

from nixery.registry.negotiation import manifest_form

# Sent by the containers/image library: skopeo and podman.
CONTAINERS_IMAGE: list[str] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
]

# Sent by containerd's resolver: ctr, and Docker with the containerd image store.
CONTAINERD: list[str] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "*/*",
]

# Sent by the docker CLI's `manifest inspect` since it lists the OCI manifest.
DOCKER_NEW_CLI: list[str] = [
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
]

CAPTURED_ACCEPT: dict[str, tuple[list[str], str]] = {
    "docker 20.10 (daemon) pull": (
        [
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            "application/json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        ],
        "oci",
    ),
    "docker 20.10 CLI manifest inspect": (
        [
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        ],
        "docker",
    ),
    "podman 4.3 pull": (
        CONTAINERS_IMAGE,
        "oci",
    ),
    "containerd 1.6 ctr pull": (
        CONTAINERD,
        "oci",
    ),
    "skopeo 1.9 inspect": (
        CONTAINERS_IMAGE,
        "oci",
    ),
    "docker 28.5 (daemon, overlay2) pull": (
        [
            "application/json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        ],
        "oci",
    ),
    "docker 28.5 (daemon, containerd store) pull": (
        CONTAINERD,
        "oci",
    ),
    "docker 28.5 CLI manifest inspect": (
        DOCKER_NEW_CLI,
        "oci",
    ),
    "containerd 2.1 ctr pull": (
        CONTAINERD,
        "oci",
    ),
    "podman 5.8 pull": (
        CONTAINERS_IMAGE,
        "oci",
    ),
    "docker newer CLI manifest inspect": (
        DOCKER_NEW_CLI,
        "oci",
    ),
}


@pytest.mark.parametrize("client", sorted(CAPTURED_ACCEPT))
def test_each_client_gets_a_form_it_lists(client: str) -> None:
    accept, expected = CAPTURED_ACCEPT[client]
    assert manifest_form(", ".join(accept)) == expected
    if expected == "oci":
        assert "application/vnd.oci.image.manifest.v1+json" in accept or "*/*" in accept


def test_wildcards_and_no_accept_get_oci() -> None:
    assert manifest_form(None) == "oci"
    assert manifest_form("") == "oci"
    assert manifest_form("*/*") == "oci"
    assert manifest_form("application/*;q=0.5") == "oci"


def test_the_oci_index_alone_does_not_mean_oci_manifests() -> None:
    index = "application/vnd.oci.image.index.v1+json"
    docker = "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest_form(index) == "docker"
    assert manifest_form(f"{docker}, {index}") == "docker"
    assert manifest_form(f"{docker};q=0.9, application/vnd.oci.image.manifest.v1+json") == "oci"
    assert manifest_form("application/vnd.docker.distribution.manifest.v1+prettyjws") == "docker"
