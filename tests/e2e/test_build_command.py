"""`nixery build` for CI and air-gapped use, with real consumers: umoci + chroot for the OCI
layout, `docker load` + `docker run` for the docker archive, and a local distribution registry
(`docker-registry`) for the push, which docker then pulls. Digests equal the registry's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import require_tools
from tests.daemons import Dockerd, docker_available
from tests.e2e.conftest import OCI_MANIFEST
from tests.e2e.multiarch import OCI_INDEX, multi_registry, multiarch_env
from tests.e2e.registry_process import RegistryProcess

__all__ = ["multi_registry"]


def nixery_build(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **multiarch_env()}
    env.pop("NIXERY_PLATFORMS")  # the command's default: one platform, linux/amd64
    return subprocess.run(
        [sys.executable, "-m", "nixery", "build", "--cache-dir", str(cache), *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )


def served_digest(registry: RegistryProcess, name: str, accept: str) -> str:
    response = requests.get(
        f"{registry.url}/v2/{name}/manifests/latest", headers={"Accept": accept}, timeout=900
    )
    assert response.status_code == 200, response.text
    return response.headers["Docker-Content-Digest"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nixery-build-cache")


def test_oci_layout_unpacks_and_runs(
    cache: Path, tmp_path: Path, registry: RegistryProcess
) -> None:
    layout = tmp_path / "layout"
    built = nixery_build(cache, "shell/hello", "--output", f"oci:{layout}:v1")
    assert built.returncode == 0, built.stderr
    digest = built.stdout.strip()
    assert digest == served_digest(registry, "shell/hello", OCI_MANIFEST)
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    assert index["manifests"][0]["annotations"] == {"org.opencontainers.image.ref.name": "v1"}
    bundle = tmp_path / "bundle"
    unpacked = subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:v1", str(bundle)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert unpacked.returncode == 0, unpacked.stderr
    ran = subprocess.run(
        ["chroot", str(bundle / "rootfs"), "/bin/hello"], capture_output=True, text=True
    )
    assert ran.stdout.strip() == "Hello from nixery!", ran.stderr


def test_two_platforms_make_the_registrys_index(
    cache: Path, tmp_path: Path, multi_registry: RegistryProcess
) -> None:
    layout = tmp_path / "layout"
    built = nixery_build(
        cache, "shell/hello", "--platform", "linux/amd64", "--platform", "linux/arm64",
        "--output", f"oci:{layout}",
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    digest = built.stdout.strip()
    assert digest == served_digest(multi_registry, "shell/hello", OCI_INDEX)
    top = json.loads((layout / "blobs/sha256" / digest.removeprefix("sha256:")).read_text())
    assert top["mediaType"] == OCI_INDEX
    assert [m["platform"]["architecture"] for m in top["manifests"]] == ["amd64", "arm64"]
    inspected = subprocess.run(
        ["skopeo", "--override-arch", "arm64", "inspect", f"oci:{layout}:latest"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert json.loads(inspected.stdout)["Architecture"] == "arm64", inspected.stderr


def test_unknown_packages_fail_with_the_registrys_reasons(cache: Path, tmp_path: Path) -> None:
    built = nixery_build(cache, "hello/nosuchpackage", "--output", f"oci:{tmp_path / 'x'}")
    assert built.returncode == 1
    assert built.stdout == ""
    assert "refused packages: nosuchpackage (not found)" in built.stderr
    assert '"packages": ["nosuchpackage"]' in built.stderr


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    if not docker_available():
        pytest.fail("dockerd is missing: run scripts/setup-system --test")
    with Dockerd(tmp_path_factory.mktemp("dockerd")) as daemon:
        yield daemon


def test_docker_archive_loads_and_runs(
    cache: Path, tmp_path: Path, registry: RegistryProcess, dockerd: Dockerd
) -> None:
    archive = tmp_path / "hello.tar"
    built = nixery_build(
        cache, "shell/hello", "--output", f"docker-archive:{archive}:nixery-test/hello:v1"
    )
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip() == served_digest(registry, "shell/hello", OCI_MANIFEST)
    loaded = dockerd.run("load", "--input", str(archive))
    assert loaded.returncode == 0, loaded.stderr
    assert "nixery-test/hello:v1" in loaded.stdout
    manifest = requests.get(
        f"{registry.url}/v2/shell/hello/manifests/latest", headers={"Accept": OCI_MANIFEST}
    ).json()
    image_id = dockerd.run("image", "inspect", "--format", "{{.Id}}", "nixery-test/hello:v1")
    assert image_id.stdout.strip() == manifest["config"]["digest"]
    ran = dockerd.run("run", "--rm", "--network", "none", "nixery-test/hello:v1", "hello")
    assert ran.stdout.strip() == "Hello from nixery!", ran.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private `docker-registry` (distribution) on 127.0.0.1: its host:port."""
    require_tools("docker-registry")
    workdir = tmp_path_factory.mktemp("distribution")
    port = _free_port()
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    with open(workdir / "registry.log", "wb") as log:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None, (workdir / "registry.log").read_text()
            assert time.monotonic() < deadline, "docker-registry did not start"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def test_push_to_a_registry_that_docker_then_pulls(
    cache: Path, multi_registry: RegistryProcess, distribution: str, dockerd: Dockerd
) -> None:
    target = f"{distribution}/team/hello:v1"
    built = nixery_build(
        cache, "shell/hello", "--platform", "linux/amd64", "--platform", "linux/arm64",
        "--output", f"docker://{target}",
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    digest = built.stdout.strip()
    assert digest == served_digest(multi_registry, "shell/hello", OCI_INDEX)
    head = requests.head(
        f"http://{distribution}/v2/team/hello/manifests/v1", headers={"Accept": OCI_INDEX}
    )
    assert head.headers["Docker-Content-Digest"] == digest
    # A second push finds every blob there already.
    again = nixery_build(
        cache, "shell/hello", "--platform", "linux/amd64", "--platform", "linux/arm64",
        "--output", f"docker://{target}",
    )  # fmt: skip
    assert again.returncode == 0 and again.stdout.strip() == digest, again.stderr
    for platform, arch in (("linux/arm64", "arm64"), ("linux/amd64", "amd64")):
        pulled = dockerd.run("pull", "--platform", platform, target)
        assert pulled.returncode == 0, pulled.stderr
        inspected = json.loads(dockerd.run("image", "inspect", target).stdout)[0]
        assert inspected["Architecture"] == arch
    ran = dockerd.run("run", "--rm", "--network", "none", target, "hello")
    assert ran.stdout.strip() == "Hello from nixery!", ran.stderr
