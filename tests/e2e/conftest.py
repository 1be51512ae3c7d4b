from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nixery.cloud.devstack import ManagedProcess, free_port, spawn
from tests.builder_container import builder_docker, builder_image  # noqa: F401 (fixtures)
from tests.conftest import TEST_PKGS, require_tools, unavailable
from tests.daemons import docker, podman  # noqa: F401 (fixtures)
from tests.e2e.registry_process import RegistryProcess

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="session", autouse=True)
def _tools() -> None:
    require_tools("nix-build", "skopeo", "umoci", "chroot", "git")
    if os.geteuid() != 0:
        unavailable("chroot and the single-user Nix store need root", "run the tests as root")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    storage = tmp_path_factory.mktemp("registry") / "storage"
    with RegistryProcess(storage, {"NIXERY_PKGS_PATH": str(TEST_PKGS)}) as process:
        yield process


def skopeo_inspect(host: str, image: str) -> dict[str, Any]:
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{host}/{image}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def pull_and_unpack(host: str, image: str, workdir: Path, creds: str | None = None) -> Path:
    """skopeo copy to an OCI layout, then umoci unpack: the image's root filesystem.
    `creds` (`user:password`) go to the registry as HTTP Basic after its 401."""
    layout = workdir / "layout"
    bundle = workdir / "bundle"
    login = ["--src-creds", creds] if creds is not None else []
    copied = subprocess.run(
        [
            "skopeo",
            "copy",
            "--src-tls-verify=false",
            *login,
            f"docker://{host}/{image}",
            f"oci:{layout}:img",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert copied.returncode == 0, copied.stderr
    unpacked = subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:img", str(bundle)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert unpacked.returncode == 0, unpacked.stderr
    return bundle / "rootfs"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def pkgs_git_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository of the test package set: a branch, an annotated tag and two commits."""
    import shutil

    repo = tmp_path_factory.mktemp("pkgs-git") / "repo"
    shutil.copytree(TEST_PKGS, repo)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "tests@example.invalid")
    _git(repo, "config", "user.name", "tests")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "test package set")
    _git(repo, "tag", "-a", "v1", "-m", "first release")
    _git(repo, "branch", "stable")
    (repo / "NOTES").write_text("a second commit that changes nothing Nix sees\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "notes")
    return repo


@pytest.fixture(scope="module")
def git_registry(
    tmp_path_factory: pytest.TempPathFactory, pkgs_git_repo: Path
) -> Iterator[RegistryProcess]:
    storage = tmp_path_factory.mktemp("git-registry") / "storage"
    with RegistryProcess(storage, {"NIXERY_PKGS_REPO": f"file://{pkgs_git_repo}"}) as process:
        yield process


@pytest.fixture(scope="module")
def recorder(
    registry: RegistryProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ManagedProcess, Path]]:
    """tests/accept_recorder.py in front of `registry`: the proxy, and its log."""
    workdir = tmp_path_factory.mktemp("recorder")
    log = workdir / "requests.jsonl"
    port = free_port()
    command = [sys.executable, "-m", "tests.accept_recorder", str(port), registry.url, str(log)]
    process = spawn("accept recorder", command, port, workdir / "recorder.log")
    try:
        yield process, log
    finally:
        process.stop()
