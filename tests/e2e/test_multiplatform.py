"""Multi-platform tags (NIXERY_PLATFORMS=linux/amd64,linux/arm64) with real clients: the OCI
index and Docker manifest list, docker pull of both platforms, podman, skopeo, and a real
aarch64 busybox in the arm64 image."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.aarch64 import EM_AARCH64, EM_X86_64, elf_machine
from tests.current_engines import CurrentEngines, engines_available
from tests.daemons import Dockerd, Podman, docker_available, podman_available
from tests.e2e.conftest import OCI_MANIFEST
from tests.e2e.multiarch import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, multi_registry
from tests.e2e.registry_process import RegistryProcess

__all__ = ["multi_registry"]


def _get(registry: RegistryProcess, name: str, accept: str) -> requests.Response:
    return requests.get(
        f"{registry.url}/v2/{name}/manifests/latest", headers={"Accept": accept}, timeout=900
    )


def _config(registry: RegistryProcess, name: str, manifest: dict[str, Any]) -> dict[str, Any]:
    digest = manifest["config"]["digest"]
    return requests.get(f"{registry.url}/v2/{name}/blobs/{digest}", timeout=60).json()


def test_a_tag_answers_an_oci_index_of_both_platforms(multi_registry: RegistryProcess) -> None:
    response = _get(multi_registry, "shell", f"{OCI_INDEX}, {OCI_MANIFEST}")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == OCI_INDEX
    index = response.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    platforms = [entry["platform"] for entry in index["manifests"]]
    assert platforms == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]
    for entry in index["manifests"]:
        assert entry["mediaType"] == OCI_MANIFEST
        manifest = requests.get(
            f"{multi_registry.url}/v2/shell/manifests/{entry['digest']}", timeout=60
        )
        assert manifest.headers["Docker-Content-Digest"] == entry["digest"]
        assert len(manifest.content) == entry["size"]
        config = _config(multi_registry, "shell", manifest.json())
        assert config["architecture"] == entry["platform"]["architecture"]
        assert config["os"] == "linux"
        assert config.get("variant") == entry["platform"].get("variant")


def test_docker_only_clients_get_a_manifest_list(multi_registry: RegistryProcess) -> None:
    response = _get(multi_registry, "shell", f"{DOCKER_LIST}, {DOCKER_MANIFEST}")
    assert response.headers["Content-Type"] == DOCKER_LIST
    assert {entry["mediaType"] for entry in response.json()["manifests"]} == {DOCKER_MANIFEST}
    # A client that takes neither list form gets the first platform's plain manifest.
    plain = _get(multi_registry, "shell", OCI_MANIFEST)
    assert plain.headers["Content-Type"] == OCI_MANIFEST
    assert _config(multi_registry, "shell", plain.json())["architecture"] == "amd64"


def test_arm64_names_still_ask_for_one_platform(multi_registry: RegistryProcess) -> None:
    response = _get(multi_registry, "arm64/shell", f"{OCI_INDEX}, {OCI_MANIFEST}")
    assert response.headers["Content-Type"] == OCI_MANIFEST
    config = _config(multi_registry, "arm64/shell", response.json())
    assert (config["architecture"], config["variant"]) == ("arm64", "v8")
    # The index's arm64 entry is the same image: one build, shared.
    index = _get(multi_registry, "shell", OCI_INDEX).json()
    arm64 = next(e for e in index["manifests"] if e["platform"]["architecture"] == "arm64")
    assert arm64["digest"] == response.headers["Docker-Content-Digest"]


def test_a_platform_that_refuses_a_package_is_left_out(multi_registry: RegistryProcess) -> None:
    response = _get(multi_registry, "x86only", OCI_INDEX)
    assert response.status_code == 200, response.text
    index = response.json()
    assert [e["platform"]["architecture"] for e in index["manifests"]] == ["amd64"]
    assert index["annotations"] == {"org.nixery.platforms.refused": "linux/arm64/v8: x86only"}
    refused = _get(multi_registry, "arm64/x86only", OCI_MANIFEST)
    assert refused.status_code == 404
    assert refused.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_a_package_no_platform_has_names_each_refusal(multi_registry: RegistryProcess) -> None:
    response = _get(multi_registry, "hello/nosuchpackage", OCI_INDEX)
    assert response.status_code == 404, response.text
    error = response.json()["errors"][0]
    assert error["code"] == "MANIFEST_UNKNOWN"
    assert error["detail"]["packages"] == ["nosuchpackage"]
    assert error["detail"]["refusals"] == [{"name": "nosuchpackage", "reason": "not_found"}]
    assert error["detail"]["platforms"] == {
        "linux/amd64": ["nosuchpackage"],
        "linux/arm64/v8": ["nosuchpackage"],
    }


def test_skopeo_override_arch_gets_a_real_aarch64_busybox(
    multi_registry: RegistryProcess, tmp_path: Path
) -> None:
    rootfs = {}
    for arch in ("amd64", "arm64"):
        layout, bundle = tmp_path / f"layout-{arch}", tmp_path / f"bundle-{arch}"
        copied = subprocess.run(
            ["skopeo", "--override-arch", arch, "copy", "--src-tls-verify=false",
             f"docker://{multi_registry.host}/shell", f"oci:{layout}:img"],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert copied.returncode == 0, copied.stderr
        unpacked = subprocess.run(
            ["umoci", "unpack", "--image", f"{layout}:img", str(bundle)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert unpacked.returncode == 0, unpacked.stderr
        rootfs[arch] = bundle / "rootfs"
    arm_busybox = (rootfs["arm64"] / "bin/sh").resolve()
    # /bin/sh points into /nix/store inside the image: resolve it within the rootfs.
    arm_busybox = rootfs["arm64"] / _in_image(rootfs["arm64"], "bin/sh")
    assert elf_machine(arm_busybox) == EM_AARCH64
    assert elf_machine(rootfs["amd64"] / _in_image(rootfs["amd64"], "bin/sh")) == EM_X86_64
    ran = subprocess.run(
        ["qemu-aarch64-static", str(arm_busybox), "echo", "ok"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ran.stdout.strip() == "ok", ran.stderr
    inspected = subprocess.run(
        ["skopeo", "--override-arch", "arm64", "inspect", "--tls-verify=false",
         f"docker://{multi_registry.host}/shell"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert json.loads(inspected.stdout)["Architecture"] == "arm64"


def _in_image(rootfs: Path, path: str) -> str:
    """`path` inside the image with every symlink followed inside the image (absolute links
    point at the image's root, not the host's)."""
    current = path.strip("/")
    for _ in range(40):
        full = rootfs / current
        if not full.is_symlink():
            parent = Path(current).parent
            if parent != Path(".") and (rootfs / parent).resolve() != rootfs / parent:
                current = _in_image(rootfs, str(parent)) + "/" + Path(current).name
            return current
        target = full.readlink()
        current = (
            str(target).lstrip("/") if target.is_absolute() else str(Path(current).parent / target)
        )
    raise AssertionError(f"symlink loop at {path}")


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    if not docker_available():
        pytest.fail("dockerd is missing: run scripts/setup-system --test")
    with Dockerd(tmp_path_factory.mktemp("dockerd")) as daemon:
        yield daemon


def test_docker_pulls_both_platforms_of_one_name(
    multi_registry: RegistryProcess, dockerd: Dockerd
) -> None:
    reference = f"{multi_registry.host}/shell/hello"
    for platform, arch in (("linux/arm64", "arm64"), ("linux/amd64", "amd64")):
        pulled = dockerd.run("pull", "--platform", platform, reference)
        assert pulled.returncode == 0, pulled.stderr
        inspected = dockerd.run("image", "inspect", reference)
        assert inspected.returncode == 0, inspected.stderr
        image = json.loads(inspected.stdout)[0]
        assert image["Architecture"] == arch and image["Os"] == "linux"
    ran = dockerd.run("run", "--rm", "--network", "none", reference, "hello")
    assert ran.stdout.strip() == "Hello from nixery!", ran.stderr


def test_podman_pulls_arm64(multi_registry: RegistryProcess, tmp_path: Path) -> None:
    if not podman_available():
        pytest.fail("podman is missing: run scripts/setup-system --test")
    reference = f"{multi_registry.host}/shell/hello"
    with Podman(tmp_path) as podman:
        pulled = podman.run("pull", "--tls-verify=false", "--arch", "arm64", reference)
        assert pulled.returncode == 0, pulled.stderr
        inspected = podman.run("image", "inspect", reference)
        image = json.loads(inspected.stdout)[0]
        assert image["Architecture"] == "arm64"


def test_a_single_platform_setting_still_serves_a_plain_manifest(
    registry: RegistryProcess,
) -> None:
    response = _get(registry, "shell", f"{OCI_INDEX}, {DOCKER_LIST}, {OCI_MANIFEST}")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == OCI_MANIFEST
    assert response.json()["mediaType"] == OCI_MANIFEST


def test_docker_28_containerd_store_pulls_both_platforms(
    multi_registry: RegistryProcess,
) -> None:
    """Docker's containerd image store keeps each platform's image under the one name."""
    if not engines_available():
        pytest.fail("mmdebstrap is missing: run scripts/setup-system --test")
    reference = f"{multi_registry.host}/shell/hello"
    with CurrentEngines(containerd_store=True) as engines:
        for platform, arch in (("linux/arm64", "arm64"), ("linux/amd64", "amd64")):
            pulled = engines.run("pull", "--platform", platform, reference)
            assert pulled.returncode == 0, pulled.stderr
            inspected = engines.run("image", "inspect", "--platform", platform, reference)
            assert inspected.returncode == 0, inspected.stderr
            assert json.loads(inspected.stdout)[0]["Architecture"] == arch
        ran = engines.run("run", "--rm", "--network", "none", reference, "hello")
        assert ran.stdout.strip() == "Hello from nixery!", ran.stderr
