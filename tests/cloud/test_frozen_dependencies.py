"""A frozen dependency on the dev stack (issue 13, item 7): with the GCS or Firestore emulator
stopped (SIGSTOP to its process group, so it accepts connections and never answers), the
registry function answers within its call deadline or its build wait, never hangs: a 503 with
Retry-After and a request id, and no internal address or exception text in what the client
sees. The emulator is continued (SIGCONT) in teardown, whatever the test did."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from nixery.cloud.devstack import DevStack, ManagedProcess, StackError, start_dev_stack
from tests.conftest import TEST_PKGS, require_tools, unavailable
from tests.e2e.conftest import OCI_MANIFEST

pytestmark = pytest.mark.cloud

NONCE = uuid.uuid4().hex
# Short on purpose, so a frozen dependency shows within a test's patience.
CALL_DEADLINE = 4.0
GCS_RETRY_SECONDS = 6.0
BUILD_WAIT = 60.0
# How long a Firestore call may take past its deadline: the attempt under way when the deadline
# passes (a third of it), the function's own work, a loaded machine.
CALL_SLACK = 10.0
# Internal text a client must never see: the emulators' and builder's addresses, Python's and
# the libraries' error text.
LEAKS = ("Traceback", "Error(", "HTTPConnectionPool", "grpc", "localhost")


def internal_addresses(stack: DevStack) -> list[str]:
    """Where the emulators and the builder listen: never in an answer (the registry's own
    address is, in links to build pages)."""
    return [stack.processes[name].host_port for name in ("gcs-emulator", "firestore-emulator")] + [
        stack.builder_url.removesuffix("/")
    ]


@pytest.fixture(scope="module")
def pkgs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test package set plus `fresh0`..`fresh3`: quick builds that are new every run."""
    directory = tmp_path_factory.mktemp("frozen-pkgs")
    fresh = "\n".join(
        f"""  fresh{index} = derivation {{
    name = "fresh{index}-1.0";
    system = pkgs.busybox.system;
    builder = "${{pkgs.busybox}}/bin/sh";
    PATH = "${{pkgs.busybox}}/bin";
    args = [ "-c" "mkdir -p $out/share; echo {NONCE} {index} > $out/share/nonce" ];
  }};"""
        for index in range(4)
    )
    (directory / "default.nix").write_text(
        f"args:\nlet\n  pkgs = import {TEST_PKGS} args;\nin\npkgs // {{\n{fresh}\n}}\n"
    )
    return directory


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pkgs_dir: Path) -> Iterator[DevStack]:
    require_tools("nix-build")
    settings = {
        "NIXERY_PKGS_PATH": str(pkgs_dir),
        "NIXERY_LEASE_SECONDS": "3",
        "NIXERY_CALL_DEADLINE": str(CALL_DEADLINE),
        "NIXERY_GCS_RETRY_SECONDS": str(GCS_RETRY_SECONDS),
        "NIXERY_BUILD_WAIT": str(BUILD_WAIT),
    }
    try:
        stack = start_dev_stack(tmp_path_factory.mktemp("frozen-stack"), settings)
    except StackError as reason:
        unavailable(f"the dev stack cannot run here: {reason}")
    try:
        yield stack
    finally:
        stack.stop()


@contextlib.contextmanager
def frozen(process: ManagedProcess) -> Iterator[None]:
    """The process group stopped for the body of the `with`, continued afterwards."""
    os.killpg(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(process.pid, signal.SIGCONT)


def timed_get(url: str, **kwargs: object) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.get(url, timeout=BUILD_WAIT + 60, **kwargs)  # type: ignore[arg-type]
    return response, time.monotonic() - started


def manifest_url(stack: DevStack, image: str) -> str:
    return f"{stack.registry_url}/v2/{image}/manifests/latest"


def assert_unavailable_without_leaks(stack: DevStack, response: requests.Response) -> None:
    """A 503 with Retry-After whose error names the request id and nothing internal."""
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE"
    request_id = response.headers["X-Request-Id"]
    assert error["detail"]["request_id"] == request_id
    assert request_id in error["message"]
    for leak in [*LEAKS, *internal_addresses(stack)]:
        assert leak not in response.text, f"{leak!r} reached the client: {response.text}"


def warm(stack: DevStack, image: str) -> dict[str, Any]:
    response = requests.get(
        manifest_url(stack, image), headers={"Accept": OCI_MANIFEST}, timeout=600
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_frozen_gcs_during_a_warm_pull_leaves_the_function_answering(stack: DevStack) -> None:
    body = warm(stack, "shell/hello")
    layer = body["layers"][0]["digest"]
    with frozen(stack.processes["gcs-emulator"]):
        # Manifests and blob metadata are in Firestore, URLs are signed locally: nothing waits
        # for GCS, and the client is sent to it (where it would wait, not the function).
        again, seconds = timed_get(manifest_url(stack, "shell/hello"))
        assert again.status_code == 200 and seconds < CALL_SLACK
        blob_url = f"{stack.registry_url}/v2/shell/hello/blobs/{layer}"
        redirect, seconds = timed_get(blob_url, allow_redirects=False)
        assert redirect.status_code == 303 and seconds < CALL_SLACK
        head = requests.head(blob_url, timeout=60)
        assert head.status_code == 200


def test_frozen_gcs_during_a_cold_build_is_a_503_within_the_build_wait(stack: DevStack) -> None:
    with frozen(stack.processes["gcs-emulator"]):
        response, seconds = timed_get(manifest_url(stack, "shell/fresh1"))
    assert seconds < BUILD_WAIT + CALL_SLACK, f"took {seconds:.1f}s"
    assert_unavailable_without_leaks(stack, response)
    # Nothing partial was published: continued, the image builds and is served whole.
    body = warm(stack, "shell/fresh1")
    for blob in [body["config"], *body["layers"]]:
        fetched = requests.get(
            f"{stack.registry_url}/v2/shell/fresh1/blobs/{blob['digest']}", timeout=60
        )
        assert fetched.status_code == 200 and len(fetched.content) == blob["size"]


def test_frozen_firestore_during_a_warm_pull_is_a_503_within_the_deadline(
    stack: DevStack,
) -> None:
    body = warm(stack, "hello")
    layer = body["layers"][0]["digest"]
    # Built, but not in this instance's memory (its hot manifests would answer without
    # Firestore): a new instance, as after a scale-out.
    stack.restart("registry")
    with frozen(stack.processes["firestore-emulator"]):
        for url in (
            manifest_url(stack, "hello"),
            f"{stack.registry_url}/v2/hello/blobs/{layer}",
        ):
            response, seconds = timed_get(url, allow_redirects=False)
            assert seconds < CALL_DEADLINE + CALL_SLACK, f"{url} took {seconds:.1f}s"
            assert_unavailable_without_leaks(stack, response)
    # Continued, the same pull works again.
    assert warm(stack, "hello")["layers"][0]["digest"] == layer


def test_frozen_firestore_during_a_cold_build_is_a_503_within_the_deadline(
    stack: DevStack,
) -> None:
    with frozen(stack.processes["firestore-emulator"]):
        response, seconds = timed_get(manifest_url(stack, "shell/fresh0"))
    assert seconds < CALL_DEADLINE + CALL_SLACK, f"took {seconds:.1f}s"
    assert_unavailable_without_leaks(stack, response)
    # Continued, Firestore answers again (an image built earlier, not in this instance's
    # memory; no build, so the test does not depend on the builder's recovery too).
    warm(stack, "shell/hello")
