"""builder-image/Dockerfile built with Docker and run as the dev stack's builder.

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
from tests.conftest import OFFLINE_NIX_CONFIG, REPO, TEST_PKGS, require_tools
from tests.daemons import DOCKER_20_10_CLI, Dockerd
from tests.e2e.conftest import pull_and_unpack

pytestmark = pytest.mark.e2e

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
        made = subprocess.run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--include=ca-certificates",
                *(f"--dpkgopt={option}" for option in SLIM_EXCLUDES),
                f"--customize-hook={trust_host_cas}",
                SUITE,
                str(partial),
                str(sources_file),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            start_new_session=True,
        )
        assert made.returncode == 0, made.stderr[-3000:]
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
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    require_tools("dockerd", "mmdebstrap", DOCKER_20_10_CLI)
    with Dockerd(tmp_path_factory.mktemp("dockerd")) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def image(docker: Dockerd) -> BuiltImage:
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
    sources: dict[str, str] = {}
    for kind in ("path", "git"):
        directory = root / kind
        subprocess.run(["cp", "-r", str(TEST_PKGS), str(directory)], check=True)
        (directory / "bootstrap").mkdir()
        subprocess.run(["cp", "/bin/busybox", str(directory / "bootstrap")], check=True)
        # The set takes busybox's location as an argument; this default.nix passes the copy.
        (directory / "default.nix").rename(directory / "set.nix")
        (directory / "default.nix").write_text(
            "args: import ./set.nix (args // { busybox = toString ./bootstrap/busybox; })\n"
        )
        sources[kind] = str(directory)
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
