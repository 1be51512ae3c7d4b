"""Every refusal reason, the package policy and a too-old Nix, through a real `nixery serve` and
skopeo: each refused name is named with its reason on one line, and nothing becomes a 500."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, TEST_PKGS
from tests.e2e.conftest import skopeo_inspect
from tests.e2e.registry_process import RegistryProcess

NEWER_NIX_PKGS = REPO / "tests" / "pkgs-newer-nix"


def skopeo_error(host: str, image: str) -> str:
    """skopeo inspect's failure, as the one line a user reads."""
    result = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--no-tags", f"docker://{host}/{image}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0, result.stdout
    return result.stderr.strip()


# Each reason, the image that meets it, and what the client reads for it.
REASONS = [
    ("not_found", "nosuchpackage", "nosuchpackage (not found)"),
    ("unfree", "terraform", "terraform (unfree licence bsl11; set NIXERY_ALLOW_UNFREE=true)"),
    (
        "insecure",
        "openssl_1_1",
        "openssl_1_1 (insecure: OpenSSL 1.1 is end of life since 2023-09-11; CVE-2023-5678; "
        "permit with NIXERY_PERMITTED_INSECURE=openssl-1.1.1w)",
    ),
    ("broken", "markedbroken", "markedbroken (marked broken)"),
    ("unsupported_platform", "darwinonly", "darwinonly (not available on x86_64-linux)"),
    (
        "removed",
        "oldhello",
        "oldhello (removed: 'oldHello' has been renamed to/replaced by 'hello')",
    ),
    (
        "evaluation_error",
        "failing.aborts",
        "failing.aborts (evaluation error: evaluation aborted with the following error message: "
        "'aborts: this package aborts evaluation on purpose')",
    ),
    (
        "evaluation_error",
        "failing.needsmissing",
        "failing.needsmissing (evaluation error: attribute 'doesNotExist' missing)",
    ),
]


@pytest.mark.parametrize(("reason", "name", "phrase"), REASONS, ids=[r[1] for r in REASONS])
def test_each_reason_reaches_the_client_in_one_line(
    registry: RegistryProcess, reason: str, name: str, phrase: str
) -> None:
    response = requests.get(f"{registry.url}/v2/hello/{name}/manifests/latest", timeout=300)
    assert response.status_code == 404
    (error,) = response.json()["errors"]
    assert error["code"] == "MANIFEST_UNKNOWN"
    # The message, then the way to the build's page (its log), on one line.
    assert error["message"].startswith(f"refused packages: {phrase} (build log: http://")
    assert "\n" not in error["message"]
    (refusal,) = error["detail"]["refusals"]
    assert (refusal["name"], refusal["reason"]) == (name, reason)
    assert f"manifest unknown: refused packages: {phrase}" in skopeo_error(
        registry.host, f"hello/{name}"
    )


def test_one_abort_never_fails_the_others_and_is_remembered(registry: RegistryProcess) -> None:
    image = "app/failing.aborts/hello/mixed.bomb/nosuchthing/terraform/tool"
    response = requests.get(f"{registry.url}/v2/{image}/manifests/latest", timeout=300)
    assert response.status_code == 404, response.text
    error = response.json()["errors"][0]
    reasons = {item["name"]: item["reason"] for item in error["detail"]["refusals"]}
    assert reasons == {
        "failing.aborts": "evaluation_error",
        "mixed.bomb": "evaluation_error",
        "nosuchthing": "not_found",
        "terraform": "unfree",
    }
    evaluations = len(registry.nix_calls("nix-instantiate"))
    again = requests.get(f"{registry.url}/v2/{image}/manifests/latest", timeout=300)
    assert again.json() == response.json()
    assert len(registry.nix_calls("nix-instantiate")) == evaluations, "remembered per image key"


@pytest.fixture(scope="module")
def permissive_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    storage = tmp_path_factory.mktemp("permissive") / "storage"
    env = {
        "NIXERY_PKGS_PATH": str(TEST_PKGS),
        "NIXERY_ALLOW_UNFREE": "true",
        "NIXERY_PERMITTED_INSECURE": "openssl-1.1.1w",
    }
    with RegistryProcess(storage, env) as process:
        yield process


def test_the_allow_settings_let_unfree_and_permitted_insecure_packages_build(
    permissive_registry: RegistryProcess, registry: RegistryProcess
) -> None:
    inspected = skopeo_inspect(permissive_registry.host, "shell/terraform/openssl_1_1")
    assert inspected["Layers"]
    # Still refused: what the settings do not allow.
    assert "markedbroken (marked broken)" in skopeo_error(
        permissive_registry.host, "hello/markedbroken"
    )
    # The default registry beside it still refuses both.
    assert "unfree licence" in skopeo_error(registry.host, "shell/terraform/openssl_1_1")


def test_a_nix_too_old_for_the_source_is_the_registry_misconfigured(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    with RegistryProcess(storage, {"NIXERY_PKGS_PATH": str(NEWER_NIX_PKGS)}) as process:
        logged = process.log_path.read_text()
        assert "needs Nix >= 2.18, but the registry runs Nix 2.8" in logged, logged
        evaluations = len(process.nix_calls("nix-instantiate"))
        for image in ("shell/hello", "hello", "app/tool"):
            response = requests.get(f"{process.url}/v2/{image}/manifests/latest", timeout=300)
            assert response.status_code == 503
            (error,) = response.json()["errors"]
            assert error["code"] == "UNAVAILABLE"
            assert error["message"].startswith("registry misconfigured: ")
            assert "NIXERY_CHANNEL" in error["message"] and "newer Nix" in error["message"]
            assert error["detail"]["required"] == "2.18"
        assert len(process.nix_calls("nix-instantiate")) == evaluations, "checked once, at start"
        assert "503" in skopeo_error(process.host, "shell/hello")
