"""builder-image/: the Dockerfile, nix.conf and cloudbuild.yaml of the Cloud Run builder,
checked offline (no Docker engine here): a pinned base, no secrets, non-root, the same entry
command the dev stack runs the builder with, and a nix.conf that this machine's Nix accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import functions_framework._cli
import pytest
import yaml

from nixery.cloud import devstack
from tests.builder_image import DOCKERFILE, Dockerfile, Instruction
from tests.conftest import REPO, require_tools

BUILDER_IMAGE = REPO / "builder-image"
WORKDIR = "/opt/nixery"


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile.load()


def test_parser_reads_continuations_and_exec_form() -> None:
    parsed = Dockerfile.parse(
        '# comment\nFROM a@sha256:00\nENV A=1 \\\n    B=\'two words\'\nCMD ["x", "--y"]\n'
    )
    assert parsed.env == {"A": "1", "B": "two words"}
    assert parsed.cmd == ["x", "--y"]
    assert parsed.all("FROM") == ["a@sha256:00"]


def test_base_image_is_pinned_by_digest(dockerfile: Dockerfile) -> None:
    bases = dockerfile.base_images()
    assert bases, "no FROM"
    for image in bases:
        assert re.fullmatch(r"[\w./-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}", image), (
            f"{image} is not pinned by digest"
        )
        assert ":latest" not in image
    assert "latest" not in DOCKERFILE.read_text().replace("latest-", "")


def test_base_is_debian_trixie_and_substitutable(dockerfile: Dockerfile) -> None:
    # trixie's nix-bin (2.26) evaluates current nixpkgs, which demands Nix >= 2.18; the tests
    # build on a locally made trixie base passed as BASE_IMAGE (tests/e2e/test_builder_container).
    (base,) = dockerfile.base_images()
    assert base.startswith("debian:trixie-slim@sha256:")
    assert dockerfile.all("FROM") == ["${BASE_IMAGE}"]
    assert dockerfile.instructions[0] == Instruction("ARG", f"BASE_IMAGE={base}")


def test_nix_user_owns_the_store_and_its_state(dockerfile: Dockerfile) -> None:
    # With only /nix its own, Nix silently uses a chroot store under $HOME instead.
    run = " ".join(dockerfile.all("RUN"))
    owned = re.search(r"install -d -o nixery -g nixery ([^&]+)", run)
    assert owned is not None
    assert {"/nix/store", "/nix/var/nix"} <= set(owned[1].split())
    assert _nix_conf(BUILDER_IMAGE / "nix.conf")["store"] == "local"


def test_dockerignore_sends_only_what_the_dockerfile_copies(dockerfile: Dockerfile) -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "everything is left out unless let through"
    kept = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        source.removeprefix("./")
        for arguments in dockerfile.all("COPY")
        for source in arguments.split()[:-1]
    }
    assert copied <= kept
    assert not any(name in kept for name in (".venv", ".git", "var", "tests"))


def test_runs_as_a_non_root_user(dockerfile: Dockerfile) -> None:
    users = dockerfile.all("USER")
    assert users, "no USER: the image would run as root"
    assert users[-1] not in {"root", "0", "0:0"}
    # The user owns /nix: single-user Nix without a daemon or build users.
    run = " ".join(dockerfile.all("RUN"))
    assert re.search(rf"install -d -o {users[-1]} .*/nix\b", run)
    # The user is created before it is used, and nothing runs as root after the switch.
    keywords = [i.keyword for i in dockerfile.instructions]
    assert "RUN" not in keywords[keywords.index("USER") :]


def test_holds_no_secrets() -> None:
    secret_words = re.compile(r"(PASSWORD|SECRET|TOKEN|PRIVATE.KEY|CREDENTIALS)", re.IGNORECASE)
    for path in BUILDER_IMAGE.iterdir():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            assert not secret_words.search(line), f"{path.name}:{number}: {line.strip()}"
    env = Dockerfile.load().env
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env
    assert "NIXERY_ID_TOKEN_KEY_FILE" not in env


def test_nix_conf_is_installed_with_sandbox_substituters_and_features(
    dockerfile: Dockerfile,
) -> None:
    assert "builder-image/nix.conf /etc/nix/nix.conf" in dockerfile.all("COPY")
    settings = _nix_conf(BUILDER_IMAGE / "nix.conf")
    assert settings["sandbox"] == "false"
    assert settings["build-users-group"] == ""
    assert "https://cache.nixos.org" in settings["substituters"].split()
    assert settings["trusted-public-keys"].startswith("cache.nixos.org-1:")
    assert "nix-command" in settings["experimental-features"].split()


def _nix_conf(path: Path) -> dict[str, str]:
    settings = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, value = line.partition("=")
            settings[name.strip()] = value.strip()
    return settings


@pytest.mark.e2e
def test_this_machines_nix_accepts_nix_conf(tmp_path: Path) -> None:
    # The image's Nix is Debian 12's nix-bin, the one the test suite runs: it must know every
    # setting (an unknown one is only a warning, which would leave the builder misconfigured).
    require_tools("nix")
    nix = shutil.which("nix")
    assert nix is not None
    conf_dir = tmp_path / "etc-nix"
    conf_dir.mkdir()
    shutil.copy(BUILDER_IMAGE / "nix.conf", conf_dir / "nix.conf")
    result = subprocess.run(
        [nix, "--extra-experimental-features", "nix-command", "show-config"],
        env={"NIX_CONF_DIR": str(conf_dir), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "unknown setting" not in result.stderr, result.stderr
    shown = dict(
        (name.strip(), value.strip())
        for name, _, value in (line.partition("=") for line in result.stdout.splitlines())
    )
    assert shown["sandbox"] == "false"
    assert shown["substituters"] == "https://cache.nixos.org"
    assert shown["build-users-group"] == ""


def _options(command: list[str]) -> dict[str, str]:
    """`--flag value` pairs of a functions-framework command line."""
    pairs = command[3:]
    assert len(pairs) % 2 == 0 and all(flag.startswith("--") for flag in pairs[::2]), command
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


def test_cmd_is_the_command_the_dev_stack_runs_the_builder_with(
    dockerfile: Dockerfile, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[list[str]] = []

    def record(name: str, command: list[str], *args: object, **kwargs: object) -> None:
        started.append(command)

    # Only the process start is replaced: the command is the dev stack's own.
    monkeypatch.setattr(devstack, "spawn", record)
    devstack.start_function("build", tmp_path / "builder.log", {}, port=8123)
    (local,) = started
    image = dockerfile.cmd
    assert local[:3] == [sys.executable, "-m", "functions_framework"]
    assert image[:3] == ["python", "-m", "functions_framework"]  # the venv's python, on PATH
    local_options, image_options = _options(local), _options(image)
    assert image_options["--target"] == local_options["--target"] == "build"
    # The same file: the dev stack's absolute path, the image's relative to its WORKDIR.
    assert dockerfile.all("WORKDIR") == [WORKDIR]
    assert Path(local_options["--source"]) == REPO / image_options["--source"]
    assert dockerfile.all("COPY").count("functions ./functions") == 1
    # Loopback for the dev stack; every interface in the container, where Cloud Run connects.
    assert local_options["--host"] == "127.0.0.1"
    assert image_options["--host"] == "0.0.0.0"
    # The port: the dev stack passes it, the image leaves it to $PORT (Cloud Run's).
    assert local_options.keys() - image_options.keys() == {"--port"}
    port_option = next(p for p in functions_framework._cli._cli.params if p.name == "port")
    assert port_option.envvar == "PORT"
    assert dockerfile.exposed_ports() == [8080]


def test_package_and_entry_point_are_in_the_image(dockerfile: Dockerfile) -> None:
    copies = dockerfile.all("COPY")
    for needed in ("pyproject.toml README.md ./", "functions ./functions", "nix ./nix"):
        assert needed in copies
    assert any('.[cloud]"' in run for run in dockerfile.all("RUN"))
    main = (REPO / "functions" / "main.py").read_text()
    assert re.search(r"^@functions_framework\.http\ndef build\(", main, re.MULTILINE)
    assert dockerfile.env["PATH"].startswith("/opt/venv/bin:")


def test_cloudbuild_builds_this_dockerfile_and_pushes_to_artifact_registry() -> None:
    config = yaml.safe_load((BUILDER_IMAGE / "cloudbuild.yaml").read_text())
    image = "${_REGION}-docker.pkg.dev/${PROJECT_ID}/${_REPOSITORY}/builder:${_TAG}"
    assert config["images"] == [image]
    (build,) = [step for step in config["steps"] if step.get("id") == "build"]
    assert build["args"][0] == "build"
    assert "--file=builder-image/Dockerfile" in build["args"]
    assert f"--tag={image}" in build["args"]
    assert build["args"][-1] == "."  # the repository root, as the Dockerfile's COPYs expect
    used = set(re.findall(r"\$\{(_\w+)\}", (BUILDER_IMAGE / "cloudbuild.yaml").read_text()))
    assert used == set(config["substitutions"])


def test_gcloudignore_uploads_what_the_dockerfile_copies(dockerfile: Dockerfile) -> None:
    ignore = (BUILDER_IMAGE / "gcloudignore").read_text().splitlines()
    kept = {line[2:].rstrip("/") for line in ignore if line.startswith("!/")}
    copied = {
        source.removeprefix("./")
        for arguments in dockerfile.all("COPY")
        for source in arguments.split()[:-1]
    }
    assert {path.split("/")[0] for path in copied} <= kept
