"""A team registry through real clients: skopeo with credentials, docker's login flow over HTTP."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import pull_and_unpack
from tests.e2e.registry_process import RegistryProcess
from tests.team import ROBOT, ROBOT_TOKEN, basic, google, team_env
from tests.tokeninfo_standin import TokenInfoStandIn, token_answer


@pytest.fixture(scope="module")
def team_registry(
    tmp_path_factory: pytest.TempPathFactory, standin: TokenInfoStandIn
) -> Iterator[RegistryProcess]:
    storage = tmp_path_factory.mktemp("team-registry") / "storage"
    with RegistryProcess(storage, team_env(standin, storage)) as process:
        yield process


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=600)


def test_login_flow_over_http(team_registry: RegistryProcess) -> None:
    challenge = requests.get(f"{team_registry.url}/v2/", timeout=30)
    assert challenge.status_code == 401
    assert challenge.headers["WWW-Authenticate"].startswith('Basic realm="nixery"')
    assert challenge.json()["errors"][0]["code"] == "UNAUTHORIZED"
    for authorization in (google("tok-alice"), basic(ROBOT, ROBOT_TOKEN)):
        answer = requests.get(
            f"{team_registry.url}/v2/", headers={"Authorization": authorization}, timeout=30
        )
        assert answer.status_code == 200
    denied = requests.get(
        f"{team_registry.url}/v2/hello/manifests/latest",
        headers={"Authorization": google("tok-bob")},
        timeout=30,
    )
    assert denied.status_code == 403 and denied.json()["errors"][0]["code"] == "DENIED"


def test_skopeo_without_credentials_is_refused(team_registry: RegistryProcess) -> None:
    calls = len(team_registry.nix_calls())
    out = skopeo("inspect", "--tls-verify=false", f"docker://{team_registry.host}/hello")
    assert out.returncode != 0
    assert "401" in out.stderr or "unauthorized" in out.stderr.lower(), out.stderr
    wrong = skopeo(
        "inspect", "--tls-verify=false", "--creds", f"{ROBOT}:not-the-token",
        f"docker://{team_registry.host}/hello",
    )  # fmt: skip
    assert wrong.returncode != 0
    outsider = skopeo(
        "inspect", "--tls-verify=false", "--creds", "oauth2accesstoken:tok-mallory",
        f"docker://{team_registry.host}/hello",
    )  # fmt: skip
    assert outsider.returncode != 0
    assert "denied" in outsider.stderr.lower(), outsider.stderr
    assert len(team_registry.nix_calls()) == calls, "nothing was built for outsiders"


def test_robot_pulls_with_skopeo_creds(team_registry: RegistryProcess, tmp_path: Path) -> None:
    rootfs = pull_and_unpack(team_registry.host, "hello", tmp_path, f"{ROBOT}:{ROBOT_TOKEN}")
    assert (rootfs / "bin" / "hello").exists()


def test_google_identity_pull_costs_one_verification(
    team_registry: RegistryProcess, standin: TokenInfoStandIn, tmp_path: Path
) -> None:
    standin.answers["tok-e2e-pull"] = token_answer("alice@example.com")
    rootfs = pull_and_unpack(
        team_registry.host, "shell/hello", tmp_path, "oauth2accesstoken:tok-e2e-pull"
    )
    assert (rootfs / "bin" / "hello").exists()
    # skopeo fetched the manifest, the config and every layer: one tokeninfo call for all.
    assert standin.calls["tok-e2e-pull"] == 1


def test_pages_need_credentials_too(team_registry: RegistryProcess) -> None:
    for path in ("/", "/?format=json", "/builds/" + "0" * 24):
        refused = requests.get(team_registry.url + path, timeout=30)
        assert refused.status_code == 401, path
        assert refused.headers["WWW-Authenticate"].startswith('Basic realm="nixery"')
        assert "text/html" not in refused.headers["Content-Type"]
    page = requests.get(
        f"{team_registry.url}/", headers={"Authorization": basic(ROBOT, ROBOT_TOKEN)}, timeout=30
    )
    assert page.status_code == 200 and "docker login" in page.text
