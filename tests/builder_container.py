"""The builder image (builder-image/Dockerfile) built with Docker for the tests, as fixtures:
`builder_docker` (a private dockerd) and `builder_image` (the built image, loaded into it).

No public registry is reachable here, so the base is made locally: Debian trixie (the release
the Dockerfile's pinned base is) with `mmdebstrap --variant=minbase` from the host's own apt
mirror, with debian:*-slim's documentation excludes, `docker import`ed and passed to the build
as BASE_IMAGE. The host's extra CA certificates are trusted in that base (HTTPS here goes
through an intercepting proxy, and the build runs `pip install`); the real base never has them.

The base and the built image are kept between runs (a tar each, under NIXERY_TEST_CACHE or
~/.cache/nixery-tests), keyed by what they are made from: a rebuild happens when the Dockerfile,
the build context or the host's sources change. Loading a kept image takes seconds; building
it takes minutes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nixery.cloud.devstack import BuilderContainer, DevStack, start_dev_stack
from tests.conftest import OFFLINE_NIX_CONFIG, REPO, require_tools
from tests.daemons import DOCKER_20_10_CLI, Dockerd

SUITE = "trixie"
DOCKERFILE = REPO / "builder-image" / "Dockerfile"
# What the Dockerfile copies (and .dockerignore lets through): the image's inputs.
CONTEXT = ("pyproject.toml", "README.md", "functions", "nix", "builder-image/nix.conf")
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
# debian:*-slim drops these (debuerreotype's slimming); the test base does the same, so that
# the sizes reported here are those of a build on the real base.
SLIM_EXCLUDES = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/groff/*",
    "path-exclude=/usr/share/lintian/*",
)
MINIMUM_NIX = (2, 18)


def cache_dir() -> Path:
    root = os.environ.get("NIXERY_TEST_CACHE") or Path.home() / ".cache" / "nixery-tests"
    directory = Path(root) / "builder-image"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def host_sources_for(suite: str) -> str:
    """The host's apt sources (deb822 or one-line) with its release replaced by `suite`."""
    codename = ""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            codename = line.partition("=")[2].strip().strip('"')
    assert codename, "/etc/os-release names no VERSION_CODENAME"
    files = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    files += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    if Path("/etc/apt/sources.list").exists():
        files.append(Path("/etc/apt/sources.list"))
    text = "\n".join(path.read_text() for path in files)
    assert codename in text, "the host's apt sources do not name its own release"
    # bookworm, bookworm-updates, bookworm-security: the suite names, nothing else.
    return re.sub(rf"\b{re.escape(codename)}\b", suite, text)


def _digest_of_files(paths: list[Path]) -> str:
    hasher = hashlib.sha256()
    for path in sorted(paths):
        hasher.update(str(path.relative_to(REPO) if path.is_relative_to(REPO) else path).encode())
        hasher.update(b"\0" + path.read_bytes() + b"\0")
    return hasher.hexdigest()[:16]


def _context_files() -> list[Path]:
    files = [DOCKERFILE, REPO / ".dockerignore"]
    for name in CONTEXT:
        path = REPO / name
        candidates = path.rglob("*") if path.is_dir() else [path]
        files += [
            file
            for file in candidates
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc"
        ]
    return files


@dataclass
class Timings:
    base_seconds: float = 0.0
    base_cached: bool = False
    image_seconds: float = 0.0
    image_cached: bool = False


TIMINGS = Timings()


def mmdebstrap(suite: str, output: Path, sources_file: Path, *options: str) -> None:
    """A minbase Debian `suite` at `output` (a directory, or a tar by its suffix)."""
    made = subprocess.run(
        ["mmdebstrap", "--variant=minbase", *options, suite, str(output), str(sources_file)],
        capture_output=True,
        text=True,
        timeout=900,
        start_new_session=True,
    )
    assert made.returncode == 0, made.stderr[-3000:]


def make_base(sources: str, key: str) -> Path:
    """The trixie base as a tar (kept between runs under its key)."""
    tar = cache_dir() / f"base-{SUITE}-{key}.tar"
    if tar.exists():
        TIMINGS.base_cached = True
        return tar
    workdir = cache_dir() / f"making-{key}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    try:
        sources_file = workdir / f"{SUITE}.sources"
        sources_file.write_text(sources)
        trust_host_cas = (
            'mkdir -p "$1/usr/local/share/ca-certificates"'
            f' && cp {EXTRA_CA_DIR}/*.crt "$1/usr/local/share/ca-certificates/"'
            ' && chroot "$1" update-ca-certificates'
        )
        partial = workdir / "base.tar"
        started = time.monotonic()
        mmdebstrap(
            SUITE,
            partial,
            sources_file,
            "--include=ca-certificates",
            *(f"--dpkgopt={option}" for option in SLIM_EXCLUDES),
            f"--customize-hook={trust_host_cas}",
        )
        TIMINGS.base_seconds = time.monotonic() - started
        partial.rename(tar)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return tar


@dataclass(frozen=True)
class BuiltImage:
    docker: Dockerd
    tag: str


@pytest.fixture(scope="module")
def builder_docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    require_tools("dockerd", "mmdebstrap", DOCKER_20_10_CLI)
    with Dockerd(tmp_path_factory.mktemp("dockerd")) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def builder_image(builder_docker: Dockerd) -> BuiltImage:
    docker = builder_docker
    extra_cas = sorted(EXTRA_CA_DIR.glob("*.crt"))
    sources = host_sources_for(SUITE)
    base_key = hashlib.sha256(
        (sources + "\n".join(SLIM_EXCLUDES)).encode() + _digest_of_files(extra_cas).encode()
    ).hexdigest()[:16]
    image_key = f"{base_key}-{_digest_of_files(_context_files())}"
    tag = f"nixery-test/builder:{image_key}"
    saved = cache_dir() / f"builder-{image_key}.tar"
    if saved.exists():
        started = time.monotonic()
        loaded = docker.run("load", "--input", str(saved))
        assert loaded.returncode == 0, loaded.stderr
        TIMINGS.image_seconds, TIMINGS.image_cached = time.monotonic() - started, True
        return BuiltImage(docker, tag)

    base_tar = make_base(sources, base_key)
    base_tag = f"nixery-test/{SUITE}-base:{base_key}"
    # pip inside the build reads the system bundle, which holds the host's extra CAs.
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    imported = docker.run(
        "import",
        "--change",
        f"ENV PIP_CERT={bundle}",
        "--change",
        f"ENV REQUESTS_CA_BUNDLE={bundle}",
        str(base_tar),
        base_tag,
    )
    assert imported.returncode == 0, imported.stderr
    started = time.monotonic()
    built = docker.run(
        "build",
        "--network",
        "host",
        "--build-arg",
        f"BASE_IMAGE={base_tag}",
        "--file",
        str(DOCKERFILE),
        "--tag",
        tag,
        str(REPO),
        timeout=1800,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    TIMINGS.image_seconds = time.monotonic() - started
    for old in cache_dir().glob("builder-*.tar"):
        old.unlink()  # one kept image: it is large
    saving = saved.with_suffix(".partial")
    kept = docker.run("save", "--output", str(saving), tag)
    assert kept.returncode == 0, kept.stderr
    saving.rename(saved)
    return BuiltImage(docker, tag)


def in_image(image: BuiltImage, script: str) -> subprocess.CompletedProcess[str]:
    return image.docker.run("run", "--rm", "--network", "none", image.tag, "sh", "-c", script)


def self_contained_package_set(source: Path, directory: Path) -> Path:
    """A copy of the package set at `source` in `directory`, with its own busybox inside: a
    container sees that directory (at the same absolute path) and nothing else of the host."""
    subprocess.run(["cp", "-r", str(source), str(directory)], check=True)
    (directory / "bootstrap").mkdir()
    subprocess.run(["cp", "/bin/busybox", str(directory / "bootstrap")], check=True)
    # The set takes busybox's location as an argument; this default.nix passes the copy.
    (directory / "default.nix").rename(directory / "set.nix")
    (directory / "default.nix").write_text(
        "args: import ./set.nix (args // { busybox = toString ./bootstrap/busybox; })\n"
    )
    return directory


# `TEST_BUILDER=container` runs the dev-stack tests that honour it (tests/cloud/
# test_stack.py) with the builder as this image, on its Nix, instead of a process on the host's.
BUILDER_SWITCH = "TEST_BUILDER"


def builder_in_container() -> bool:
    kind = os.environ.get(BUILDER_SWITCH, "process")
    assert kind in ("process", "container"), f"{BUILDER_SWITCH}={kind!r}: process or container"
    return kind == "container"


def image_path(image: BuiltImage) -> str:
    """The PATH the image sets (the builder's Nix and Python are found on it)."""
    inspected = image.docker.run(
        "image", "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", image.tag
    )
    assert inspected.returncode == 0, inspected.stderr
    for line in inspected.stdout.splitlines():
        if line.startswith("PATH="):
            return line.removeprefix("PATH=")
    raise AssertionError(f"{image.tag} sets no PATH")


def container_nix_shims(directory: Path, log: Path, commands: tuple[str, ...]) -> Path:
    """Wrappers that log each Nix command line, then run the command found on PATH after
    them: they work inside the container (whose Nix is elsewhere than the host's) as on the host.
    The log is writable by the image's non-root user."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o777)
    log.touch()
    log.chmod(0o666)
    for command in commands:
        shim = directory / command
        shim.write_text(
            f'#!/bin/sh\necho "{command} $*" >> "{log}"\n'
            f'PATH="${{PATH#{directory}:}}" exec {command} "$@"\n'
        )
        shim.chmod(0o755)
    return directory


def start_test_stack(
    request: pytest.FixtureRequest, state: Path, pkgs: Path, settings: dict[str, str] | None = None
) -> DevStack:
    """The dev stack on the package set at `pkgs`: its builder a process on the host, or with
    TEST_BUILDER=container the builder image (the `builder_image` fixture), given a
    self-contained copy of the set it can read."""
    if not builder_in_container():
        return start_dev_stack(state, {"NIXERY_PKGS_PATH": str(pkgs), **(settings or {})})
    image: BuiltImage = request.getfixturevalue("builder_image")
    state.mkdir(parents=True, exist_ok=True)
    copy = self_contained_package_set(pkgs, state / "pkgs")
    return start_dev_stack(
        state,
        {"NIXERY_PKGS_PATH": str(copy), **(settings or {})},
        builder_env={"NIX_CONFIG": os.environ.get("NIX_CONFIG", OFFLINE_NIX_CONFIG)},
        builder_container=BuilderContainer(image.tag, DOCKER_20_10_CLI, image.docker.env),
    )
