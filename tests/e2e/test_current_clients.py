"""The engines users run now (tests/current_engines.py: Docker 28.5 with its overlay2 store and
with the containerd image store, containerd 2.1's `ctr`, podman 5.8) against `nixery serve`:
pulls by tag and digest, runs, layer reuse seen in the registry's access log, what each prints
for an unknown package and a failed build, and the Accept lists they send."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from nixery.cloud.devstack import ManagedProcess
from nixery.registry.negotiation import prefers_docker
from tests.accept_recorder import captured_accept
from tests.conftest import TEST_PKGS, unavailable
from tests.current_engines import CurrentEngines, engines_available
from tests.daemons import engine_pull_messages
from tests.e2e.conftest import OCI_MANIFEST
from tests.e2e.registry_process import RegistryProcess
from tests.e2e.test_clients import (
    BUILD_FAILURE,
    BUILD_PAGE_RE,
    DOCKER_MANIFEST,
    IMAGE,
    SHARING_IMAGE,
)
from tests.test_negotiation import CAPTURED_ACCEPT

UNKNOWN = "refused packages: no-such-package (not found)"
# The versions the client names below (and CAPTURED_ACCEPT's) stand for.
EXPECTED_VERSIONS = {"docker.io": "28.5", "containerd": "2.1", "podman": "5.8"}


def _engines(containerd_store: bool) -> Iterator[CurrentEngines]:
    if not engines_available():
        unavailable("mmdebstrap is not installed")
    with CurrentEngines(containerd_store=containerd_store) as engines:
        yield engines


@pytest.fixture(scope="module")
def current() -> Iterator[CurrentEngines]:
    """Docker 28.5 with overlay2 (a graph driver: layers keyed by chain ID), ctr and podman."""
    yield from _engines(containerd_store=False)


@pytest.fixture(scope="module")
def current_containerd() -> Iterator[CurrentEngines]:
    """Docker 28.5 with the containerd image store (content-addressed)."""
    yield from _engines(containerd_store=True)


STORES = {"overlay2": "current", "containerd": "current_containerd"}


@pytest.fixture(scope="module")
def per_path_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """One layer per store path: IMAGE and SHARING_IMAGE then share layers past a first
    difference, which tells a chain-ID store from a content-addressed one."""
    storage = tmp_path_factory.mktemp("per-path-registry") / "storage"
    env = {"NIXERY_PKGS_PATH": str(TEST_PKGS), "NIXERY_LAYERING": "per-path"}
    with RegistryProcess(storage, env) as process:
        yield process


def _ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def _manifest(registry: RegistryProcess, image: str, accept: str) -> requests.Response:
    answer = requests.get(
        f"{registry.url}/v2/{image}/manifests/latest", headers={"Accept": accept}, timeout=600
    )
    assert answer.status_code == 200, answer.text
    return answer


def _layers(registry: RegistryProcess, image: str) -> list[str]:
    return [layer["digest"] for layer in _manifest(registry, image, OCI_MANIFEST).json()["layers"]]


@pytest.mark.parametrize("store", sorted(STORES))
def test_docker_28_pulls_by_tag_and_digests_runs_and_lists_history(
    store: str, registry: RegistryProcess, request: pytest.FixtureRequest
) -> None:
    engines: CurrentEngines = request.getfixturevalue(STORES[store])
    reference = f"{registry.host}/{IMAGE}"
    pulled = _ok(engines.run("pull", reference))
    assert f"Status: Downloaded newer image for {reference}:latest" in pulled
    for accept in (OCI_MANIFEST, DOCKER_MANIFEST):
        digest = _manifest(registry, IMAGE, accept).headers["Docker-Content-Digest"]
        assert f"Digest: {digest}" in _ok(engines.run("pull", f"{reference}@{digest}"))
    ran = _ok(engines.run("run", "--rm", "--network", "none", reference, "hello"))
    assert ran == "Hello from nixery!\n"
    history = _ok(engines.run("history", "--no-trunc", "--format", "{{.Size}}", reference))
    assert len(history.splitlines()) == len(_layers(registry, IMAGE))


def test_docker_28_manifest_inspect_gets_the_oci_manifest(
    current: CurrentEngines, registry: RegistryProcess
) -> None:
    inspected = _ok(current.run("manifest", "inspect", "--insecure", f"{registry.host}/{IMAGE}"))
    assert json.loads(inspected)["mediaType"] == OCI_MANIFEST


def _pair(registry: RegistryProcess) -> tuple[list[str], list[str], int]:
    first, second = _layers(registry, IMAGE), _layers(registry, SHARING_IMAGE)
    leading = 0
    while leading < min(len(first), len(second)) and first[leading] == second[leading]:
        leading += 1
    assert leading < len(set(first) & set(second)), "the images no longer tell the stores apart"
    return first, second, leading


def test_docker_28_overlay2_reuses_only_a_leading_run(
    current: CurrentEngines, per_path_registry: RegistryProcess
) -> None:
    """The graph-driver store still keys layers by chain ID, as Docker 20.10's did."""
    registry = per_path_registry
    _, second, leading = _pair(registry)
    _ok(current.run("pull", f"{registry.host}/{IMAGE}"))
    mark = registry.log_mark()
    pulled = engine_pull_messages(current.socket_path, f"{registry.host}/{SHARING_IMAGE}")
    reused = {message["id"] for message in pulled if message.get("status") == "Already exists"}
    assert reused == {digest[7:19] for digest in second[:leading]}, pulled
    assert set(registry.blobs_served(mark)) & set(second) == set(second[leading:])


def test_docker_28_containerd_store_reuses_every_shared_layer(
    current_containerd: CurrentEngines, per_path_registry: RegistryProcess
) -> None:
    """Docker's containerd image store is content-addressed, as ctr and podman are: B fetches
    only the layers A lacks, wherever they sit (the incremental benchmark's content-addressed
    count)."""
    registry = per_path_registry
    first, second, _ = _pair(registry)
    _ok(current_containerd.run("pull", f"{registry.host}/{IMAGE}"))
    mark = registry.log_mark()
    _ok(current_containerd.run("pull", f"{registry.host}/{SHARING_IMAGE}"))
    assert set(registry.blobs_served(mark)) & set(second) == set(second) - set(first)
    # The image assembled from reused and fetched layers runs.
    reference = f"{registry.host}/{SHARING_IMAGE}"
    ran = current_containerd.run("run", "--rm", "--network", "none", reference, "app")
    assert _ok(ran).startswith("app uses /nix/store/")


def test_ctr_2_and_podman_5_pull_and_run(
    current: CurrentEngines, registry: RegistryProcess
) -> None:
    reference = f"{registry.host}/{IMAGE}"
    _ok(current.ctr("images", "pull", "--plain-http", f"{reference}:latest"))
    ran = current.ctr("run", "--rm", f"{reference}:latest", "nixery-ctr-current", "hello")
    assert _ok(ran) == "Hello from nixery!\n"
    _ok(current.podman("pull", "--tls-verify=false", reference))
    limits = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
    ran = current.podman("run", "--rm", "--network", "none", *limits, reference, "hello")
    assert _ok(ran) == "Hello from nixery!\n"


def _failed_pulls(
    current: CurrentEngines, current_containerd: CurrentEngines, reference: str
) -> dict[str, str]:
    runs = {
        "docker 28.5 (overlay2)": current.run("pull", reference),
        "docker 28.5 (containerd store)": current_containerd.run("pull", reference),
        "ctr 2.1": current.ctr("images", "pull", "--plain-http", f"{reference}:latest"),
        "podman 5.8": current.podman("pull", "--tls-verify=false", reference),
    }
    for client, run in runs.items():
        print(f"--- {client} pull {reference} (exit {run.returncode}):\n{run.stdout}{run.stderr}")
        assert run.returncode != 0, client
    return {client: run.stderr for client, run in runs.items()}


# containerd's resolver (ctr, docker's containerd store) asks for a tag with HEAD: no body.
RESOLVED_WITH_HEAD = ("docker 28.5 (containerd store)", "ctr 2.1")


def test_unknown_package_and_build_failure_read_the_registry_message(
    current: CurrentEngines, current_containerd: CurrentEngines, registry: RegistryProcess
) -> None:
    """Every client prints Nix's error line and the build page: from the body, or (containerd's
    resolver, which asks with HEAD) from the status line's reason phrase. An unknown package is
    a 404, which containerd's resolver reports as "not found" without the status line."""
    unknown = _failed_pulls(current, current_containerd, f"{registry.host}/shell/no-such-package")
    failed = _failed_pulls(current, current_containerd, f"{registry.host}/broken")
    for client, stderr in unknown.items():
        expected = "no-such-package:latest: not found" if client in RESOLVED_WITH_HEAD else UNKNOWN
        assert expected in stderr, (client, stderr)
    for client, stderr in failed.items():
        assert BUILD_FAILURE in stderr and BUILD_PAGE_RE.search(stderr), (client, stderr)
        if client in RESOLVED_WITH_HEAD:
            assert "unexpected status from HEAD request to http://" in stderr, stderr


def test_current_clients_send_the_accept_lists_the_table_pins(
    recorder: tuple[ManagedProcess, Path],
    current: CurrentEngines,
    current_containerd: CurrentEngines,
) -> None:
    versions = current.versions()
    assert all(
        versions[name].startswith(f"{prefix}.") for name, prefix in EXPECTED_VERSIONS.items()
    ), f"Debian sid's engines are now {versions}: re-capture their Accept lists"
    process, log = recorder
    reference = f"{process.host_port}/hello"
    clients: dict[str, Callable[[], subprocess.CompletedProcess[str]]] = {
        "docker 28.5 (daemon, overlay2) pull": lambda: current.run("pull", reference),
        "docker 28.5 (daemon, containerd store) pull": lambda: current_containerd.run(
            "pull", reference
        ),
        "docker 28.5 CLI manifest inspect": lambda: current.run(
            "manifest", "inspect", "--insecure", reference
        ),
        "containerd 2.1 ctr pull": lambda: current.ctr(
            "images", "pull", "--plain-http", f"{reference}:latest"
        ),
        "podman 5.8 pull": lambda: current.podman("pull", "--tls-verify=false", reference),
    }
    captured: dict[str, list[str]] = {}
    for client, pull in clients.items():
        log.write_text("")
        _ok(pull())
        captured[client] = captured_accept(log)
    print(json.dumps(captured, indent=2))
    for client, accept in captured.items():
        assert client in CAPTURED_ACCEPT, f"{client} sent {accept}: add it to the table"
        assert sorted(accept) == sorted(CAPTURED_ACCEPT[client][0]), client
        assert prefers_docker(", ".join(accept)) == (CAPTURED_ACCEPT[client][1] == "docker")
