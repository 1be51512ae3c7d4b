"""Every refusal reason through the cloud deployment (the dev stack: the registry function, the
builder, the emulators), once with the builder on the host's Nix and once with the builder as
the builder image on its own Nix (2.26): the same one-line message and per-package detail on
both Nix versions (tests/e2e/test_refusals.py has them through `nixery serve`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from nixery.cloud.devstack import BuilderContainer, DevStack, StackError, start_dev_stack
from tests.builder_container import BuiltImage, self_contained_package_set
from tests.conftest import OFFLINE_NIX_CONFIG, TEST_PKGS, require_tools, unavailable
from tests.daemons import DOCKER_20_10_CLI
from tests.e2e.test_refusals import REASONS

pytestmark = pytest.mark.cloud


@pytest.fixture(scope="module", params=["process", "container"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevStack]:
    require_tools("nix-build")
    root = tmp_path_factory.mktemp(f"refusals-{request.param}")
    pkgs = self_contained_package_set(TEST_PKGS, root / "pkgs")
    container = None
    if request.param == "container":
        image: BuiltImage = request.getfixturevalue("builder_image")
        container = BuilderContainer(image.tag, DOCKER_20_10_CLI, image.docker.env)
    try:
        started = start_dev_stack(
            root / "stack",
            {"NIXERY_PKGS_PATH": str(pkgs)},
            builder_env={"NIX_CONFIG": OFFLINE_NIX_CONFIG},
            builder_container=container,
        )
    except StackError as reason:
        unavailable(f"the dev stack cannot run here: {reason}")
    try:
        yield started
    finally:
        started.stop()


def refusal_of(stack: DevStack, image: str) -> dict[str, Any]:
    response = requests.get(f"{stack.registry_url}/v2/{image}/manifests/latest", timeout=300)
    assert response.status_code == 404, response.text
    (error,) = response.json()["errors"]
    assert error["code"] == "MANIFEST_UNKNOWN"
    return error


@pytest.mark.parametrize(("reason", "name", "phrase"), REASONS, ids=[r[1] for r in REASONS])
def test_each_reason_reaches_the_client_in_one_line(
    stack: DevStack, reason: str, name: str, phrase: str
) -> None:
    error = refusal_of(stack, f"hello/{name}")
    # The stack keeps build records, so the message ends with the build page's address.
    message, link = re.fullmatch(r"(.*) \(build log: (\S+)\)", error["message"]).groups()  # type: ignore[union-attr]
    assert message == f"refused packages: {phrase}"
    assert link.startswith(f"{stack.registry_url}/builds/")
    (refusal,) = error["detail"]["refusals"]
    assert (refusal["name"], refusal["reason"]) == (name, reason)


def test_one_abort_never_fails_the_others(stack: DevStack) -> None:
    error = refusal_of(stack, "app/failing.aborts/hello/mixed.bomb/nosuchthing/terraform/tool")
    reasons = {item["name"]: item["reason"] for item in error["detail"]["refusals"]}
    assert reasons == {
        "failing.aborts": "evaluation_error",
        "mixed.bomb": "evaluation_error",
        "nosuchthing": "not_found",
        "terraform": "unfree",
    }


def test_what_is_not_refused_builds(stack: DevStack) -> None:
    response = requests.get(
        f"{stack.registry_url}/v2/shell/hello/manifests/latest",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    assert response.json()["layers"]
