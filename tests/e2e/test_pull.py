"""Real clients against a real `nixery serve` building the bundled test package set."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import requests

from tests.e2e.conftest import OCI_MANIFEST, pull_and_unpack, skopeo_inspect
from tests.e2e.registry_process import RegistryProcess


def test_pull_unpack_and_run(registry: RegistryProcess, tmp_path: Path) -> None:
    rootfs = pull_and_unpack(registry.host, "shell/hello:latest", tmp_path)
    ran = subprocess.run(
        ["chroot", str(rootfs), "/bin/hello"], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "Hello from nixery!"

    tmp_mode = (rootfs / "tmp").lstat().st_mode
    assert stat.S_ISDIR(tmp_mode) and stat.S_IMODE(tmp_mode) == 0o1777
    bundle = rootfs / "etc/ssl/certs/ca-bundle.crt"
    assert bundle.is_symlink()
    assert (rootfs / os.readlink(bundle).lstrip("/")).is_file(), (
        "the CA bundle resolves in the image"
    )
    env = rootfs / "usr/bin/env"
    assert (rootfs / os.readlink(env).lstrip("/")).is_file(), "/usr/bin/env resolves in the image"
    ran_env = subprocess.run(
        ["chroot", str(rootfs), "/usr/bin/env"], capture_output=True, text=True, timeout=60
    )
    assert ran_env.returncode == 0, ran_env.stderr
    shell = subprocess.run(
        ["chroot", str(rootfs), "/bin/sh", "-c", "echo via sh"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.stdout.strip() == "via sh"


def test_image_without_env_provider_has_no_dangling_env(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    rootfs = pull_and_unpack(registry.host, "hello", tmp_path)
    assert not (rootfs / "usr/bin/env").is_symlink()
    for link in rootfs.rglob("*"):
        if link.is_symlink() and not str(link.relative_to(rootfs)).startswith("nix/"):
            target = os.readlink(link)
            assert (rootfs / target.lstrip("/")).exists(), f"{link} dangles"


def test_inspect_and_config(registry: RegistryProcess) -> None:
    info = skopeo_inspect(registry.host, "shell/hello")
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert "latest" in info["RepoTags"]
    manifest = requests.get(
        f"{registry.url}/v2/shell/hello/manifests/latest", headers={"Accept": OCI_MANIFEST}
    ).json()
    config_digest = manifest["config"]["digest"]
    config = requests.get(f"{registry.url}/v2/shell/hello/blobs/{config_digest}").json()
    assert "PATH=/bin:/usr/bin" in config["config"]["Env"]
    assert "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt" in config["config"]["Env"]
    assert config["config"]["Cmd"] == ["bash"]
    assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"]) == len(config["history"])
    assert any("hello" in entry["created_by"] for entry in config["history"])


def test_images_sharing_packages_share_layers(registry: RegistryProcess) -> None:
    def layers(image: str) -> set[str]:
        response = requests.get(
            f"{registry.url}/v2/{image}/manifests/latest", headers={"Accept": OCI_MANIFEST}
        )
        assert response.status_code == 200, response.text
        return {layer["digest"] for layer in response.json()["layers"]}

    hello, app = layers("shell/hello"), layers("shell/app")
    shared = hello & app
    assert shared, "the busybox, shell and cacert layers are common"
    assert hello != app


def test_manifest_headers_and_head_never_rebuild(registry: RegistryProcess) -> None:
    url = f"{registry.url}/v2/hello/manifests/latest"
    first = requests.get(url, headers={"Accept": OCI_MANIFEST})
    assert first.status_code == 200
    assert first.headers["Content-Type"] == OCI_MANIFEST
    assert first.headers["Docker-Content-Digest"].startswith("sha256:")
    assert int(first.headers["Content-Length"]) == len(first.content)
    calls = len(registry.nix_calls())
    head = requests.head(url, headers={"Accept": OCI_MANIFEST})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Docker-Content-Digest"] == first.headers["Docker-Content-Digest"]
    assert head.headers["Content-Length"] == first.headers["Content-Length"]
    digest = first.headers["Docker-Content-Digest"]
    by_digest = requests.get(f"{registry.url}/v2/hello/manifests/{digest}")
    assert by_digest.content == first.content
    assert by_digest.headers["Content-Type"] == OCI_MANIFEST
    assert len(registry.nix_calls()) == calls, "a warm image never runs Nix"


def test_docker_schema2_only_for_clients_without_oci(registry: RegistryProcess) -> None:
    url = f"{registry.url}/v2/hello/manifests/latest"
    docker_type = "application/vnd.docker.distribution.manifest.v2+json"
    oci = requests.get(url, headers={"Accept": f"{OCI_MANIFEST}, {docker_type}"})
    docker = requests.get(url, headers={"Accept": docker_type})
    assert oci.headers["Content-Type"] == OCI_MANIFEST
    assert docker.headers["Content-Type"] == docker_type
    assert docker.headers["Docker-Content-Digest"] != oci.headers["Docker-Content-Digest"]
    again = requests.get(
        f"{registry.url}/v2/hello/manifests/{docker.headers['Docker-Content-Digest']}"
    )
    assert again.content == docker.content and again.headers["Content-Type"] == docker_type
    assert [layer["digest"] for layer in json.loads(oci.content)["layers"]] == [
        layer["digest"] for layer in json.loads(docker.content)["layers"]
    ]


def test_blob_head_get_and_range(registry: RegistryProcess) -> None:
    manifest = requests.get(
        f"{registry.url}/v2/hello/manifests/latest", headers={"Accept": OCI_MANIFEST}
    ).json()
    layer = manifest["layers"][0]
    url = f"{registry.url}/v2/hello/blobs/{layer['digest']}"
    head = requests.head(url)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == layer["size"]
    assert head.headers["Docker-Content-Digest"] == layer["digest"]
    whole = requests.get(url)
    assert len(whole.content) == layer["size"]
    part = requests.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == whole.content[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{layer['size']}"


def test_tags_list(registry: RegistryProcess) -> None:
    requests.get(f"{registry.url}/v2/hello/manifests/latest")
    response = requests.get(f"{registry.url}/v2/hello/tags/list")
    assert response.status_code == 200
    assert response.json() == {"name": "hello", "tags": ["latest"]}
