"""Every error is JSON in the registry's format, with the right status and code."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import TEST_PKGS
from tests.e2e.registry_process import RegistryProcess

ABSENT = "sha256:" + "0" * 64


def assert_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["errors"][0]["code"] == code
    assert set(body["errors"][0]) == {"code", "message", "detail"}
    return body["errors"][0]


def test_base_endpoint(registry: RegistryProcess) -> None:
    response = requests.get(f"{registry.url}/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_unknown_packages_lists_every_missing_name(registry: RegistryProcess) -> None:
    calls = len(registry.nix_calls("nix-store"))
    response = requests.get(f"{registry.url}/v2/hello/nosuchthing/notaderivation/manifests/latest")
    error = assert_error(response, 404, "MANIFEST_UNKNOWN")
    assert error["detail"]["packages"] == ["nosuchthing", "notaderivation"]
    assert len(registry.nix_calls("nix-store")) == calls, "nothing was built"
    evaluations = len(registry.nix_calls("nix-instantiate"))
    again = requests.get(f"{registry.url}/v2/hello/nosuchthing/notaderivation/manifests/latest")
    assert assert_error(again, 404, "MANIFEST_UNKNOWN") == error
    assert len(registry.nix_calls("nix-instantiate")) == evaluations, "remembered, not re-evaluated"


def test_nix_build_failure_is_a_400_naming_nix_error_and_the_build_page(
    registry: RegistryProcess,
) -> None:
    """A 4xx, so that docker prints the message; answered from memory on a retry."""
    response = requests.get(f"{registry.url}/v2/broken/manifests/latest")
    error = assert_error(response, 400, "MANIFEST_INVALID")
    assert "frobnicator.c:42" in error["detail"]["log"]
    page = error["detail"]["build"]
    assert page.startswith(f"{registry.url}/builds/")
    assert error["message"].startswith("Nix failed building broken: builder for '/nix/store/")
    assert error["message"].endswith(
        f"-broken-1.0.drv' failed with exit code 1 (build log: {page})"
    )
    calls = len(registry.nix_calls())
    again = requests.get(f"{registry.url}/v2/broken/manifests/latest")
    assert assert_error(again, 400, "MANIFEST_INVALID") == error
    assert len(registry.nix_calls()) == calls, "remembered, not built again"


def test_a_failed_build_is_remembered_for_a_bounded_time(tmp_path: Path) -> None:
    """A build can be flaky: after NIXERY_FAILED_BUILD_MEMORY seconds, a pull tries again."""
    env = {"NIXERY_PKGS_PATH": str(TEST_PKGS), "NIXERY_FAILED_BUILD_MEMORY": "2"}
    with RegistryProcess(tmp_path / "storage", env) as registry:
        url = f"{registry.url}/v2/broken/manifests/latest"
        first = assert_error(requests.get(url, timeout=300), 400, "MANIFEST_INVALID")
        calls = len(registry.nix_calls())
        assert assert_error(requests.get(url, timeout=300), 400, "MANIFEST_INVALID") == first
        assert len(registry.nix_calls()) == calls
        time.sleep(2.5)
        later = assert_error(requests.get(url, timeout=300), 400, "MANIFEST_INVALID")
        assert len(registry.nix_calls()) > calls, "built again once the memory expired"
        assert later["detail"]["build"] != first["detail"]["build"], "a new build, a new record"


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        (f"/v2/hello/manifests/{ABSENT}", 404, "MANIFEST_UNKNOWN"),
        (f"/v2/hello/blobs/{ABSENT}", 404, "BLOB_UNKNOWN"),
        ("/v2/hello/blobs/sha256:..passwd", 400, "DIGEST_INVALID"),
        ("/v2/hello/manifests/sha256:nothex", 400, "DIGEST_INVALID"),
        ("/v2/Hello/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/a..b/manifests/latest", 400, "NAME_INVALID"),
        ("/v2/hello/manifests/-bad-tag", 400, "TAG_INVALID"),
        ("/v2/../../etc/passwd", 404, "NAME_UNKNOWN"),
        ("/nothing/here", 404, "NAME_UNKNOWN"),
    ],
)
def test_bad_requests(registry: RegistryProcess, path: str, status: int, code: str) -> None:
    assert_error(requests.get(registry.url + path), status, code)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/hello/blobs/sha256:..%2F..%2F..%2Fetc%2Fpasswd",
        "/v2/hello/blobs/../../../../etc/passwd",
        "/v2/hello/manifests/..%2F..%2Findex.sqlite",
        "/v2/%2E%2E/%2E%2E/blobs/sha256:" + "0" * 64,
    ],
)
def test_path_traversal_is_refused(registry: RegistryProcess, path: str) -> None:
    # http.client sends the path as written; requests would normalise the dot segments away.
    connection = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=30)
    connection.request("GET", path)
    response = connection.getresponse()
    body = json.loads(response.read())
    assert response.status in (400, 404)
    assert body["errors"][0]["code"] in {
        "DIGEST_INVALID",
        "NAME_INVALID",
        "TAG_INVALID",
        "NAME_UNKNOWN",
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v2/hello/manifests/latest"),
        ("DELETE", "/v2/hello/manifests/latest"),
        ("POST", "/v2/hello/blobs/uploads/"),
        ("PATCH", "/v2/hello/blobs/uploads/some-session"),
        ("DELETE", f"/v2/hello/blobs/{ABSENT}"),
    ],
)
def test_writes_are_unsupported(registry: RegistryProcess, method: str, path: str) -> None:
    calls = len(registry.nix_calls())
    assert_error(requests.request(method, registry.url + path), 405, "UNSUPPORTED")
    assert len(registry.nix_calls()) == calls


def test_random_tag_on_a_git_source_never_builds(git_registry: RegistryProcess) -> None:
    calls = len(git_registry.nix_calls())
    response = requests.get(f"{git_registry.url}/v2/hello/manifests/no-such-branch-x7")
    assert_error(response, 404, "MANIFEST_UNKNOWN")
    assert len(git_registry.nix_calls()) == calls


def test_nix_timeout_gives_a_clear_error(tmp_path: Path) -> None:
    env = {"NIXERY_PKGS_PATH": str(TEST_PKGS), "NIX_TIMEOUT": "3"}
    with RegistryProcess(tmp_path / "storage", env) as registry:
        response = requests.get(f"{registry.url}/v2/testing.slow/manifests/latest", timeout=120)
        # Transient (what Nix finished is kept): a 503 with Retry-After, not remembered.
        error = assert_error(response, 503, "UNAVAILABLE")
        assert int(response.headers["Retry-After"]) > 0
        assert error["message"].startswith("Nix timed out building testing.slow")
        assert error["detail"]["build"] in error["message"]
        # The build's Nix processes were stopped; the registry goes on serving.
        assert not [c for c in registry.nix_calls() if "slow" in c and "nix-store --realise" in c][
            1:
        ]
        assert requests.get(f"{registry.url}/v2/", timeout=10).status_code == 200
