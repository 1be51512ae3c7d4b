"""Team access in the cloud deployment: the registry function on the dev stack, with the
tokeninfo stand-in; credentials are checked before any redirect to a signed URL. skopeo, docker
(20.10, and 28.5 with the containerd image store), containerd's ctr and podman log in and pull
through it, following the redirects."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from nixery.cloud.devstack import DevStack, ManagedProcess, StackError
from nixery.cloud.devstack import start_function as start_function_process
from tests.builder_container import start_test_stack
from tests.conftest import TEST_PKGS, require_tools, unavailable
from tests.current_engines import CurrentEngines, engines_available
from tests.daemons import Dockerd, Podman, needs_docker, needs_podman
from tests.e2e.conftest import OCI_MANIFEST, pull_and_unpack
from tests.emulators import FIRESTORE_EMULATOR_INSTALL
from tests.team import ROBOT, ROBOT_TOKEN, basic, google, team_env
from tests.tokeninfo_standin import TokenInfoStandIn

pytestmark = pytest.mark.cloud


@pytest.fixture(scope="module")
def team_function(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    standin: TokenInfoStandIn,
) -> Iterator[ManagedProcess]:
    require_tools("nix-build", "skopeo", "umoci")
    state = tmp_path_factory.mktemp("team-stack")
    try:
        stack: DevStack = start_test_stack(request, state, TEST_PKGS)
    except StackError as reason:
        unavailable(f"the dev stack cannot run here: {reason}", FIRESTORE_EMULATOR_INSTALL)
    team = {
        key: value
        for key, value in team_env(standin, state / "unused").items()
        if key.startswith(("NIXERY_ACCESS", "NIXERY_TEAM", "NIXERY_ROBOT", "NIXERY_TOKENINFO"))
    }
    function = start_function_process(
        "registry", state / "team-registry.log", {**os.environ, **stack.registry_env, **team}
    )
    try:
        yield function
    finally:
        function.stop()
        stack.stop()


def test_function_challenges_and_admits(team_function: ManagedProcess) -> None:
    url = team_function.url
    challenge = requests.get(f"{url}/v2/", timeout=30)
    assert challenge.status_code == 401
    assert challenge.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert requests.get(f"{url}/v2/", headers={"Authorization": google("tok-alice")}).ok
    outsider = requests.get(
        f"{url}/v2/hello/manifests/latest", headers={"Authorization": google("tok-bob")}, timeout=30
    )
    assert outsider.status_code == 403
    assert outsider.json()["errors"][0]["code"] == "DENIED"


def test_no_signed_url_without_credentials(team_function: ManagedProcess) -> None:
    robot = {"Authorization": basic(ROBOT, ROBOT_TOKEN), "Accept": OCI_MANIFEST}
    manifest = requests.get(
        f"{team_function.url}/v2/hello/manifests/latest", headers=robot, timeout=300
    )
    assert manifest.status_code == 200, manifest.text
    blob_url = f"{team_function.url}/v2/hello/blobs/{manifest.json()['layers'][0]['digest']}"
    for headers in ({}, {"Authorization": google("tok-mallory")}, {"Authorization": "Basic x"}):
        refused = requests.get(blob_url, headers=headers, allow_redirects=False, timeout=30)
        assert refused.status_code in (401, 403)
        assert "Location" not in refused.headers
    admitted = requests.get(blob_url, headers=robot, allow_redirects=False, timeout=30)
    assert admitted.status_code == 303 and "X-Goog-Signature" in admitted.headers["Location"]


def test_skopeo_pulls_through_the_team_function(
    team_function: ManagedProcess, standin: TokenInfoStandIn, tmp_path: Path
) -> None:
    host = team_function.url.removeprefix("http://")
    rootfs = pull_and_unpack(host, "hello", tmp_path, "oauth2accesstoken:tok-carol")
    assert (rootfs / "bin" / "hello").exists()
    assert standin.calls["tok-carol"] == 1


# --- The real clients, through the function's 303s to signed URLs on the GCS emulator --------


Run = Callable[[], subprocess.CompletedProcess[str]]


def _blob_redirects(function: ManagedProcess) -> int:
    log = Path(function.log_path).read_text()
    return len(re.findall(r"GET /v2/[^ ]+/blobs/sha256:[0-9a-f]{64} 303", log))


def _pulls_through_redirects_and_runs(function: ManagedProcess, pull: Run, run: Run) -> None:
    """`pull` succeeds, its blobs came through the function's 303s, and the image runs."""
    redirects = _blob_redirects(function)
    pulled = pull()
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert _blob_redirects(function) > redirects, "the blobs were fetched elsewhere"
    ran = run()
    assert ran.stdout == "Hello from nixery!\n", ran.stderr


@needs_docker
def test_docker_logs_in_pulls_through_signed_urls_and_runs(
    team_function: ManagedProcess, docker: Dockerd
) -> None:
    host = team_function.url.removeprefix("http://")
    reference = f"{host}/shell/hello"
    refused = docker.run("pull", reference)
    assert refused.returncode != 0 and "no basic auth credentials" in refused.stderr, refused.stderr
    login = docker.run("login", "--username", ROBOT, "--password-stdin", host, input=ROBOT_TOKEN)
    assert "Login Succeeded" in login.stdout, login.stderr
    _pulls_through_redirects_and_runs(
        team_function,
        lambda: docker.run("pull", reference),
        lambda: docker.run("run", "--rm", "--network", "none", reference, "hello"),
    )


@needs_docker
def test_ctr_pulls_through_signed_urls_and_runs(
    team_function: ManagedProcess, docker: Dockerd
) -> None:
    reference = f"{team_function.url.removeprefix('http://')}/shell/hello:latest"
    user = f"{ROBOT}:{ROBOT_TOKEN}"
    _pulls_through_redirects_and_runs(
        team_function,
        lambda: docker.ctr("images", "pull", "--plain-http", "--user", user, reference),
        lambda: docker.ctr("run", "--rm", reference, "nixery-ctr-stack-test", "hello"),
    )


@needs_podman
def test_podman_pulls_through_signed_urls_and_runs(
    team_function: ManagedProcess, podman: Podman
) -> None:
    reference = f"{team_function.url.removeprefix('http://')}/shell/hello"
    limits = Podman.RUN_LIMITS
    _pulls_through_redirects_and_runs(
        team_function,
        lambda: podman.run(
            "pull", "--tls-verify=false", f"--creds={ROBOT}:{ROBOT_TOKEN}", reference
        ),
        lambda: podman.run("run", "--rm", "--network", "none", *limits, reference, "hello"),
    )


def test_docker_28_containerd_store_logs_in_and_pulls_through_signed_urls(
    team_function: ManagedProcess,
) -> None:
    """containerd's resolver (Docker's containerd image store) follows the 303s as well."""
    if not engines_available():
        unavailable("mmdebstrap is not installed")
    host = team_function.url.removeprefix("http://")
    reference = f"{host}/shell/hello"
    with CurrentEngines(containerd_store=True) as engines:
        login = engines.run(
            "login", "--username", ROBOT, "--password-stdin", host, input=ROBOT_TOKEN
        )
        assert "Login Succeeded" in login.stdout, login.stderr
        _pulls_through_redirects_and_runs(
            team_function,
            lambda: engines.run("pull", reference),
            lambda: engines.run("run", "--rm", "--network", "none", reference, "hello"),
        )
