"""A git package source: every kind of tag resolves to a commit before anything is cached."""

from __future__ import annotations

import subprocess
from pathlib import Path

import requests

from tests.e2e.conftest import OCI_MANIFEST
from tests.e2e.registry_process import RegistryProcess


def _digest(registry: RegistryProcess, tag: str) -> str:
    response = requests.get(
        f"{registry.url}/v2/hello/manifests/{tag}", headers={"Accept": OCI_MANIFEST}
    )
    assert response.status_code == 200, response.text
    return response.headers["Docker-Content-Digest"]


def test_branch_tag_commit_and_latest(git_registry: RegistryProcess, pkgs_git_repo: Path) -> None:
    first = subprocess.run(
        ["git", "-C", str(pkgs_git_repo), "rev-parse", "stable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    latest = _digest(git_registry, "latest")
    # Both commits hold the same package set, so every tag gives the same image...
    assert _digest(git_registry, "main") == latest
    assert _digest(git_registry, "stable") == latest
    assert _digest(git_registry, "v1") == latest
    assert _digest(git_registry, first) == latest
    # ...but each commit is evaluated once and then cached: 2 commits, 2 evaluations.
    evaluations = [
        call for call in git_registry.nix_calls("nix-instantiate") if "resolve.nix" in call
    ]
    assert len(evaluations) == 2, evaluations
    tags = requests.get(f"{git_registry.url}/v2/hello/tags/list").json()["tags"]
    assert tags == ["latest", "main", "stable", "v1"], "what resolves, not the commits typed"


def test_a_commit_the_repository_lacks_is_manifest_unknown(git_registry: RegistryProcess) -> None:
    absent = "0123456789abcdef0123456789abcdef01234567"
    for _attempt in range(2):
        response = requests.get(
            f"{git_registry.url}/v2/shell/hello/manifests/{absent}",
            headers={"Accept": OCI_MANIFEST},
        )
        assert response.status_code == 404, response.text
        error = response.json()["errors"][0]
        assert error["code"] == "MANIFEST_UNKNOWN"
        assert error["detail"]["tag"] == absent
        assert "no such commit" in error["detail"]["reason"]
    # The fetch failed before any name was resolved.
    resolutions = [call for call in git_registry.nix_calls() if "resolve.nix" in call]
    assert not any(absent in call for call in resolutions), resolutions
