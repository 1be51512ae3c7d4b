"""builder-image/Dockerfile built with Docker (tests/builder_container.py) and run as the dev
stack's builder: its Nix (2.26, Debian trixie) evaluates a package set that demands Nix 2.18,
which the host's Nix 2.8 refuses (tests/e2e/test_refusals.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from nixery.cloud.devstack import BuilderContainer, DevStack, start_dev_stack
from tests.builder_container import (
    MINIMUM_NIX,
    TIMINGS,
    BuiltImage,
    in_image,
    self_contained_package_set,
)
from tests.conftest import OFFLINE_NIX_CONFIG, REPO, TEST_PKGS
from tests.daemons import DOCKER_20_10_CLI
from tests.e2e.conftest import pull_and_unpack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def image(builder_image: BuiltImage) -> BuiltImage:
    return builder_image


def test_build_report_sizes_per_layer(image: BuiltImage) -> None:
    history = image.docker.run(
        "history", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}", image.tag
    )
    assert history.returncode == 0, history.stderr
    inspected = image.docker.run("image", "inspect", "--format", "{{.Size}}", image.tag)
    total = int(inspected.stdout.strip())
    print(
        f"\nbase: {'kept' if TIMINGS.base_cached else f'{TIMINGS.base_seconds:.0f} s'}, "
        f"image: {'loaded in' if TIMINGS.image_cached else 'built in'} "
        f"{TIMINGS.image_seconds:.0f} s, total {total / 1e6:.0f} MB"
    )
    for line in history.stdout.splitlines():
        size, _, created_by = line.partition("\t")
        if size != "0B":
            print(f"  {size:>8}  {created_by[:110]}")
    # Nix, git, Python and the Google client libraries; a regression to recommends, a kept pip
    # cache or documentation would show here.
    assert total < 450e6, f"the image grew to {total / 1e6:.0f} MB"


def test_nix_is_new_enough_for_nixpkgs_and_uses_the_real_store(image: BuiltImage) -> None:
    result = in_image(
        image,
        "nix --version && python --version && id -u"
        " && echo probe > /tmp/probe && nix-store --add /tmp/probe"
        " && nix --extra-experimental-features nix-command show-config | grep -E '^(sandbox|store) '",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    version = re.fullmatch(r"nix \(Nix\) (\d+)\.(\d+)\.\d+", lines[0])
    assert version, lines[0]
    assert (int(version[1]), int(version[2])) >= MINIMUM_NIX
    assert lines[1].startswith("Python 3.13")
    assert lines[2] == "10001"
    # In /nix/store itself, not a chroot store under $HOME.
    assert re.fullmatch(r"/nix/store/[a-z0-9]{32}-probe", lines[3]), lines[3]
    assert "sandbox = false" in lines and "store = local" in lines


def test_without_settings_the_builder_stops_at_start_up(image: BuiltImage) -> None:
    started = time.monotonic()
    result = image.docker.run("run", "--rm", "--network", "none", image.tag, timeout=120)
    assert result.returncode != 0
    assert "bad settings: the cloud deployment needs GCS_BUCKET" in result.stderr
    assert time.monotonic() - started < 60


@pytest.fixture(scope="module")
def package_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The test package set, as a path and as a git repository, with its own busybox inside: the
    container sees these directories (at the same absolute paths) and nothing else of the host.
    Both are root's, as a deployment's files would be; the image's user only reads them."""
    root = tmp_path_factory.mktemp("container-pkgs")
    sources = {
        kind: str(self_contained_package_set(TEST_PKGS, root / kind)) for kind in ("path", "git")
    }
    git_repo = Path(sources["git"])
    for command in (
        ["init", "-q", "-b", "main"],
        ["add", "."],
        ["-c", "user.email=tests@example.invalid", "-c", "user.name=tests", "commit", "-qm", "set"],
    ):
        subprocess.run(["git", "-C", str(git_repo), *command], check=True, capture_output=True)
    return sources


def _start_stack(
    state: Path, settings: dict[str, str], image: BuiltImage
) -> tuple[DevStack, BuilderContainer]:
    container = BuilderContainer(image.tag, DOCKER_20_10_CLI, image.docker.env)
    # No binary cache offline: without this every Nix call inside retries cache.nixos.org.
    stack = start_dev_stack(
        state, settings, builder_env={"NIX_CONFIG": OFFLINE_NIX_CONFIG}, builder_container=container
    )
    return stack, container


def _host(url: str) -> str:
    return url.removeprefix("http://")


@pytest.mark.parametrize("kind", ["path", "git"])
def test_dev_stack_serves_images_built_by_the_builder_container(
    image: BuiltImage,
    package_sets: dict[str, str],
    tmp_path: Path,
    kind: str,
) -> None:
    location = package_sets[kind]
    setting = (
        {"NIXERY_PKGS_PATH": location}
        if kind == "path"
        else {"NIXERY_PKGS_REPO": f"file://{location}"}
    )
    stack, container = _start_stack(tmp_path / "stack", setting, image)
    try:
        (tmp_path / "pull").mkdir()
        rootfs = pull_and_unpack(_host(stack.registry_url), "shell/hello", tmp_path / "pull")
        ran = subprocess.run(
            ["chroot", str(rootfs), "/bin/hello"], capture_output=True, text=True, timeout=60
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == "Hello from nixery!"
        # Built by the container's Nix, as its user, into its own store.
        inside = image.docker.run(
            "exec",
            container.name,
            "sh",
            "-c",
            "nix --version && id -u && nix-store --verify --check-contents 2>&1"
            " && ls /nix/store | grep -c -- '-hello'",
        )
        assert inside.returncode == 0, inside.stdout + inside.stderr
        lines = inside.stdout.splitlines()
        assert lines[0].startswith("nix (Nix) 2.") and lines[1] == "10001"
        assert int(lines[-1]) >= 1
    except BaseException:
        for name in ("build", "registry"):
            print(f"--- {name} log ---\n{stack.processes[name].log_tail(60)}")
        raise
    finally:
        stack.stop()
    names = image.docker.run("ps", "--all", "--format", "{{.Names}}").stdout.split()
    assert container.name not in names, "the stack's stop removes the container"


NEWER_NIX_PKGS = REPO / "tests" / "pkgs-newer-nix"


def test_the_container_nix_builds_from_a_source_that_demands_nix_2_18(
    image: BuiltImage, tmp_path: Path
) -> None:
    """The package set whose lib/minver.nix demands Nix 2.18, which the host's Nix 2.8 refuses
    with the registry's version error (tests/e2e/test_refusals.py), evaluates in the container
    and its image builds and pulls."""
    sources = tmp_path / "sources"
    sources.mkdir()
    # pkgs-newer-nix imports ../pkgs: both, side by side, shared with the container.
    self_contained_package_set(TEST_PKGS, sources / "pkgs")
    shutil.copytree(NEWER_NIX_PKGS, sources / "pkgs-newer-nix")
    container = BuilderContainer(
        image.tag, DOCKER_20_10_CLI, image.docker.env, shared_paths=(str(sources),)
    )
    stack = start_dev_stack(
        tmp_path / "stack",
        {"NIXERY_PKGS_PATH": str(sources / "pkgs-newer-nix")},
        builder_env={"NIX_CONFIG": OFFLINE_NIX_CONFIG},
        builder_container=container,
    )
    try:
        (tmp_path / "pull").mkdir()
        rootfs = pull_and_unpack(_host(stack.registry_url), "shell/hello", tmp_path / "pull")
        ran = subprocess.run(
            ["chroot", str(rootfs), "/bin/hello"], capture_output=True, text=True, timeout=60
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == "Hello from nixery!"
        builder_log = Path(stack.processes["build"].log_path).read_text()
        assert "needs Nix" not in builder_log, builder_log[-3000:]
    except BaseException:
        for name in ("build", "registry"):
            print(f"--- {name} log ---\n{stack.processes[name].log_tail(60)}")
        raise
    finally:
        stack.stop()
