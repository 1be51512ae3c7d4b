"""The real clients against `nixery serve`: Docker Engine 20.10 (daemon and CLI, and a newer CLI
where one is installed), its containerd through `ctr`, and podman. One dockerd and one podman
store per module (starting them costs seconds; every pull after the first is what is measured).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from nixery.cloud.devstack import ManagedProcess
from nixery.registry.negotiation import prefers_docker
from tests.accept_recorder import captured_accept
from tests.conftest import TEST_PKGS, unavailable
from tests.daemons import (
    DOCKER_20_10_CLI,
    Dockerd,
    Podman,
    engine_pull_messages,
    needs_docker,
    needs_podman,
    podman_available,
)
from tests.e2e.conftest import OCI_MANIFEST
from tests.e2e.registry_process import RegistryProcess
from tests.team import ROBOT, ROBOT_TOKEN, team_env
from tests.test_negotiation import CAPTURED_ACCEPT
from tests.tokeninfo_standin import TokenInfoStandIn

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
IMAGE = "shell/hello"
SHARING_IMAGE = "shell/app"


def _digest(registry: RegistryProcess, image: str, accept: str) -> str:
    answer = requests.get(
        f"{registry.url}/v2/{image}/manifests/latest", headers={"Accept": accept}, timeout=600
    )
    assert answer.status_code == 200, answer.text
    return answer.headers["Docker-Content-Digest"]


def _layers(registry: RegistryProcess, image: str) -> list[str]:
    answer = requests.get(
        f"{registry.url}/v2/{image}/manifests/latest",
        headers={"Accept": DOCKER_MANIFEST},
        timeout=600,
    )
    return [layer["digest"] for layer in answer.json()["layers"]]


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@needs_docker
def test_docker_pull_by_tag_and_both_digests_then_run(
    docker: Dockerd, registry: RegistryProcess
) -> None:
    reference = f"{registry.host}/{IMAGE}"
    pulled = _ok(docker.run("pull", reference))
    assert f"Status: Downloaded newer image for {reference}:latest" in pulled
    for accept in (OCI_MANIFEST, DOCKER_MANIFEST):
        digest = _digest(registry, IMAGE, accept)
        by_digest = _ok(docker.run("pull", f"{reference}@{digest}"))
        assert f"Digest: {digest}" in by_digest, by_digest
    ran = _ok(docker.run("run", "--rm", "--network", "none", reference, "hello"))
    assert ran == "Hello from nixery!\n"


@needs_docker
def test_docker_history_lists_every_layer(docker: Dockerd, registry: RegistryProcess) -> None:
    reference = f"{registry.host}/{IMAGE}"
    _ok(docker.run("pull", reference))
    history = _ok(docker.run("history", "--no-trunc", "--format", "{{.Size}}", reference))
    assert len(history.splitlines()) == len(_layers(registry, IMAGE))


@needs_docker
@pytest.mark.parametrize("cli", ["20.10", "path"])
def test_docker_manifest_inspect(docker: Dockerd, registry: RegistryProcess, cli: str) -> None:
    """The 20.10 CLI lists the OCI index but not the OCI manifest: it must get Docker schema2."""
    program = DOCKER_20_10_CLI if cli == "20.10" else shutil.which("docker")
    if program is None:
        unavailable("no docker CLI on PATH", "apt-get install docker.io")
    inspected = docker.run(
        "manifest", "inspect", "--insecure", f"{registry.host}/{IMAGE}", cli=program
    )
    manifest = json.loads(_ok(inspected))
    assert manifest["mediaType"] in (DOCKER_MANIFEST, OCI_MANIFEST)
    if cli == "20.10":
        assert manifest["mediaType"] == DOCKER_MANIFEST


@needs_docker
def test_docker_reuses_only_a_leading_run_of_shared_layers(
    docker: Dockerd, registry: RegistryProcess
) -> None:
    """Docker's layer store is keyed by chain ID: a layer counts as present only when all the
    layers below it are the same too. Content-addressed clients reuse every shared blob."""
    first, second = _layers(registry, IMAGE), _layers(registry, SHARING_IMAGE)
    _ok(docker.run("pull", f"{registry.host}/{IMAGE}"))
    # The CLI prints per-layer lines only on a terminal; the Engine API stream carries them all.
    pulled = engine_pull_messages(docker.socket_path, f"{registry.host}/{SHARING_IMAGE}")
    reused = {message["id"] for message in pulled if message.get("status") == "Already exists"}
    leading = 0
    while leading < min(len(first), len(second)) and first[leading] == second[leading]:
        leading += 1
    shared = set(first) & set(second)
    assert reused == {digest[7:19] for digest in second[:leading]}, pulled
    print(f"{SHARING_IMAGE} after {IMAGE}: {len(shared)} shared layers, {len(reused)} reused")


@needs_docker
def test_docker_unknown_package_shows_the_registry_message(
    docker: Dockerd, registry: RegistryProcess
) -> None:
    pulled = docker.run("pull", f"{registry.host}/shell/no-such-package")
    assert pulled.returncode != 0
    assert "refused packages: no-such-package (not found)" in pulled.stderr, pulled.stderr


# What a build failure reads like, in each client: the first line of Nix's error and the page
# with the whole log; from the body, or from the status line's reason phrase for the clients
# that print only that (ctr resolves a tag with HEAD; docker 20.10 prints a 5xx's status line).
BUILD_FAILURE = "Nix failed building broken: builder for '/nix/store/"
BUILD_PAGE_RE = re.compile(r"http://127\.0\.0\.1:\d+/builds/[0-9a-f]{24}")


def _pull_failures(
    docker: Dockerd, podman: Podman | None, host: str, image: str
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Each client's failed pull of `image`, docker first."""
    reference = f"{host}/{image}"
    failures = {
        "docker": docker.run("pull", reference),
        "ctr": docker.ctr("images", "pull", "--plain-http", f"{reference}:latest"),
        "skopeo": subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{reference}"],
            capture_output=True,
            text=True,
            timeout=600,
        ),
    }
    if podman is not None:
        failures["podman"] = podman.run("pull", "--tls-verify=false", reference)
    for client, run in failures.items():
        print(f"--- {client} (exit {run.returncode}):\n{run.stdout}{run.stderr}")
    return failures


@needs_docker
def test_build_failure_reads_the_same_in_every_client(
    docker: Dockerd, registry: RegistryProcess, request: pytest.FixtureRequest
) -> None:
    """A failed build is a 400 whose message docker, podman, skopeo and ctr print: Nix's error
    line and the build page, the same page on every retry, and a retry runs no Nix."""
    podman: Podman | None = request.getfixturevalue("podman") if podman_available() else None
    first = docker.run("pull", f"{registry.host}/broken")
    assert first.returncode != 0
    assert "Error response from daemon: manifest invalid: " + BUILD_FAILURE in first.stderr
    page = BUILD_PAGE_RE.search(first.stderr)
    assert page is not None, first.stderr
    calls = len(registry.nix_calls())
    failures = _pull_failures(docker, podman, registry.host, "broken")
    assert len(registry.nix_calls()) == calls, "the retries ran Nix again"
    for client, run in failures.items():
        assert run.returncode != 0, client
        assert BUILD_FAILURE in run.stderr, (client, run.stderr)
        assert f"(build log: {page.group()})" in run.stderr, (client, run.stderr)
    record = requests.get(page.group(), headers={"Accept": "application/json"}, timeout=30)
    assert record.json()["outcome"] == "failed" and "frobnicator.c:42" in record.json()["log"]


@pytest.fixture(scope="module")
def impatient_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """A registry whose Nix gives up after 3 s: `testing.slow` times out."""
    storage = tmp_path_factory.mktemp("impatient-registry") / "storage"
    env = {"NIXERY_PKGS_PATH": str(TEST_PKGS), "NIX_TIMEOUT": "3"}
    with RegistryProcess(storage, env) as process:
        yield process


@needs_docker
def test_timed_out_build_is_a_503_that_clients_may_retry(
    docker: Dockerd, impatient_registry: RegistryProcess
) -> None:
    """Transient, so a 503 with Retry-After (docker prints its status line, whose reason phrase
    is the message) and not remembered: the next pull runs Nix again."""
    answer = requests.get(f"{impatient_registry.url}/v2/testing.slow/manifests/latest", timeout=120)
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0, answer.text
    assert "timed out" in answer.json()["errors"][0]["message"]
    calls = len(impatient_registry.nix_calls())
    pulled = docker.run("pull", f"{impatient_registry.host}/testing.slow")
    print(pulled.stderr)
    assert pulled.returncode != 0
    assert "received unexpected HTTP status: 503 " in pulled.stderr, pulled.stderr
    assert "timed out" in pulled.stderr and BUILD_PAGE_RE.search(pulled.stderr), pulled.stderr
    assert len(impatient_registry.nix_calls()) > calls, "a timeout is not remembered"


@needs_docker
def test_ctr_pull_and_run(docker: Dockerd, registry: RegistryProcess) -> None:
    reference = f"{registry.host}/{IMAGE}:latest"
    _ok(docker.ctr("images", "pull", "--plain-http", reference))
    ran = docker.ctr("run", "--rm", reference, "nixery-ctr-test", "hello")
    assert _ok(ran) == "Hello from nixery!\n"


@needs_podman
def test_podman_pull_and_run(podman: Podman, registry: RegistryProcess) -> None:
    reference = f"{registry.host}/{IMAGE}"
    _ok(podman.run("pull", "--tls-verify=false", reference))
    ran = podman.run("run", "--rm", "--network", "none", *Podman.RUN_LIMITS, reference, "hello")
    assert _ok(ran) == "Hello from nixery!\n"
    unknown = podman.run("pull", "--tls-verify=false", f"{registry.host}/shell/no-such-package")
    assert unknown.returncode != 0 and "no-such-package" in unknown.stderr, unknown.stderr


@pytest.fixture(scope="module")
def team_registry(
    tmp_path_factory: pytest.TempPathFactory, standin: TokenInfoStandIn
) -> Iterator[RegistryProcess]:
    storage = tmp_path_factory.mktemp("team-registry") / "storage"
    with RegistryProcess(storage, team_env(standin, storage)) as process:
        yield process


@needs_docker
def test_docker_login_to_a_team_registry(docker: Dockerd, team_registry: RegistryProcess) -> None:
    reference = f"{team_registry.host}/hello"
    refused = docker.run("pull", reference)
    assert refused.returncode != 0
    assert "no basic auth credentials" in refused.stderr or "401" in refused.stderr, refused.stderr
    login = docker.run(
        "login", "--username", ROBOT, "--password-stdin", team_registry.host, input=ROBOT_TOKEN
    )
    assert "Login Succeeded" in _ok(login)
    _ok(docker.run("pull", reference))
    _ok(docker.run("logout", team_registry.host))
    _ok(docker.run("rmi", reference))
    assert docker.run("pull", reference).returncode != 0


# --- Accept lists, captured through a recording proxy --------------------------------------


def test_clients_send_the_accept_lists_the_table_pins(
    recorder: tuple[ManagedProcess, Path],
    docker: Dockerd,
    podman: Podman,
    tmp_path: Path,
) -> None:
    process, log = recorder
    host = process.host_port
    newer_cli = shutil.which("docker")
    clients: dict[str, list[str]] = {
        "docker 20.10 (daemon) pull": [DOCKER_20_10_CLI, "pull", f"{host}/hello"],
        "docker 20.10 CLI manifest inspect": [
            DOCKER_20_10_CLI, "manifest", "inspect", "--insecure", f"{host}/hello",
        ],
        "podman 4.3 pull": ["podman", *podman.global_options, "pull", "--tls-verify=false",
                            f"{host}/hello"],
        "containerd 1.6 ctr pull": [
            "ctr", "--address", docker.containerd_address, "--namespace", "nixery-tests",
            "images", "pull", "--plain-http", f"{host}/hello:latest",
        ],
        "skopeo 1.9 inspect": ["skopeo", "inspect", "--tls-verify=false", "--no-tags",
                               f"docker://{host}/hello"],
    }  # fmt: skip
    if newer_cli and Path(newer_cli).resolve() != Path(DOCKER_20_10_CLI).resolve():
        clients["docker newer CLI manifest inspect"] = [
            newer_cli, "manifest", "inspect", "--insecure", f"{host}/hello",
        ]  # fmt: skip
    captured: dict[str, list[str]] = {}
    for client, command in clients.items():
        log.write_text("")
        # Docker's CLIs get the daemon and its private config; podman would read that config too.
        env = docker.env if "docker" in client else None
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
        captured[client] = captured_accept(log)
    print(json.dumps(captured, indent=2))
    for client, accept in captured.items():
        assert sorted(accept) == sorted(CAPTURED_ACCEPT[client][0]), client
        assert prefers_docker(", ".join(accept)) == (CAPTURED_ACCEPT[client][1] == "docker")
