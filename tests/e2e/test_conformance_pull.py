"""The read-only pull checks of the OCI distribution conformance suite, against each source type.

The suite itself (opencontainers/distribution-spec/conformance) is Go with modules that need a
Go proxy this machine cannot reach, so its pull workflow is restated here: manifest by tag and
by digest (GET and HEAD), unknown tag and unknown digest as 404 with a JSON error, blob GET and
HEAD, unknown blob, tags/list; plus the catalog. The channel source needs the network to resolve
`latest`, so only the path and git sources run here.
"""

from __future__ import annotations

import hashlib

import pytest
import requests

from tests.e2e.conftest import OCI_MANIFEST
from tests.e2e.registry_process import RegistryProcess

IMAGE = "hello"
ABSENT_DIGEST = "sha256:" + "0" * 64


@pytest.fixture(params=["path", "git"])
def source_registry(request: pytest.FixtureRequest) -> RegistryProcess:
    name = "registry" if request.param == "path" else "git_registry"
    registry: RegistryProcess = request.getfixturevalue(name)
    return registry


def _assert_json_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["errors"][0]["code"] == code


def test_manifest_by_tag_and_by_digest(source_registry: RegistryProcess) -> None:
    url = f"{source_registry.url}/v2/{IMAGE}/manifests"
    by_tag = requests.get(f"{url}/latest", headers={"Accept": OCI_MANIFEST}, timeout=600)
    assert by_tag.status_code == 200
    digest = by_tag.headers["Docker-Content-Digest"]
    assert digest == "sha256:" + hashlib.sha256(by_tag.content).hexdigest()
    assert by_tag.headers["Content-Type"] == OCI_MANIFEST
    head = requests.head(f"{url}/latest", headers={"Accept": OCI_MANIFEST}, timeout=60)
    assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == digest
    assert int(head.headers["Content-Length"]) == len(by_tag.content)
    by_digest = requests.get(f"{url}/{digest}", headers={"Accept": OCI_MANIFEST}, timeout=60)
    assert by_digest.status_code == 200 and by_digest.content == by_tag.content
    head = requests.head(f"{url}/{digest}", timeout=60)
    assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == digest


def test_unknown_tags_and_digests_are_404_with_a_json_error(
    source_registry: RegistryProcess,
) -> None:
    url = f"{source_registry.url}/v2/{IMAGE}/manifests"
    calls_before = len(source_registry.nix_calls())
    # The conformance suite's missing-manifest tag, and regctl's referrers fallback tag.
    for tag in ["nonexistent-tag", "sha256-" + "ab" * 32]:
        _assert_json_error(requests.get(f"{url}/{tag}", timeout=60), 404, "MANIFEST_UNKNOWN")
        assert requests.head(f"{url}/{tag}", timeout=60).status_code == 404
    _assert_json_error(requests.get(f"{url}/{ABSENT_DIGEST}", timeout=60), 404, "MANIFEST_UNKNOWN")
    assert requests.head(f"{url}/{ABSENT_DIGEST}", timeout=60).status_code == 404
    assert len(source_registry.nix_calls()) == calls_before, "an unknown tag never starts Nix"


def test_blobs(source_registry: RegistryProcess) -> None:
    manifest = requests.get(
        f"{source_registry.url}/v2/{IMAGE}/manifests/latest",
        headers={"Accept": OCI_MANIFEST},
        timeout=600,
    ).json()
    for descriptor in [manifest["config"], *manifest["layers"]]:
        url = f"{source_registry.url}/v2/{IMAGE}/blobs/{descriptor['digest']}"
        head = requests.head(url, timeout=60)
        assert head.status_code == 200
        assert int(head.headers["Content-Length"]) == descriptor["size"]
        body = requests.get(url, timeout=60).content
        assert "sha256:" + hashlib.sha256(body).hexdigest() == descriptor["digest"]
    url = f"{source_registry.url}/v2/{IMAGE}/blobs/{ABSENT_DIGEST}"
    _assert_json_error(requests.get(url, timeout=60), 404, "BLOB_UNKNOWN")
    assert requests.head(url, timeout=60).status_code == 404


def test_tags_list_names_only_tags_that_resolve(
    registry: RegistryProcess, git_registry: RegistryProcess
) -> None:
    for typed in ["latest", "no-such-tag"]:
        requests.get(f"{registry.url}/v2/{IMAGE}/manifests/{typed}", timeout=600)
    listed = requests.get(f"{registry.url}/v2/{IMAGE}/tags/list", timeout=60)
    assert listed.json() == {"name": IMAGE, "tags": ["latest"]}
    git_tags = requests.get(f"{git_registry.url}/v2/{IMAGE}/tags/list", timeout=60).json()
    assert git_tags == {"name": IMAGE, "tags": ["latest", "main", "stable", "v1"]}
    for tag in git_tags["tags"]:
        answer = requests.head(f"{git_registry.url}/v2/{IMAGE}/manifests/{tag}", timeout=600)
        assert answer.status_code == 200, tag


def test_catalog_lists_served_names_in_pages(registry: RegistryProcess) -> None:
    served = ["hello", "shell", "shell/hello"]
    for name in served:
        answer = requests.head(f"{registry.url}/v2/{name}/manifests/latest", timeout=600)
        assert answer.status_code == 200, name
    refused = requests.head(f"{registry.url}/v2/no-such-package/manifests/latest", timeout=600)
    assert refused.status_code == 404
    whole = requests.get(f"{registry.url}/v2/_catalog", timeout=60)
    assert whole.status_code == 200 and "Link" not in whole.headers
    names = whole.json()["repositories"]
    assert set(served) <= set(names) and "no-such-package" not in names
    assert names == sorted(names)
    # Page by page with n=1, following the Link header as clients do.
    walked: list[str] = []
    path = "/v2/_catalog?n=1"
    while path:
        page = requests.get(f"{registry.url}{path}", timeout=60)
        assert page.status_code == 200
        walked += page.json()["repositories"]
        link = page.headers.get("Link")
        path = link.split(">")[0].lstrip("<") if link else ""
        if link:
            assert link.endswith('; rel="next"')
    assert walked == names
    after = requests.get(f"{registry.url}/v2/_catalog?last=shell&n=1", timeout=60)
    assert after.json()["repositories"] == [names[names.index("shell") + 1]]
    for bad in ["-1", "x", "1e3"]:
        answer = requests.get(f"{registry.url}/v2/_catalog?n={bad}", timeout=60)
        _assert_json_error(answer, 400, "PAGINATION_NUMBER_INVALID")
