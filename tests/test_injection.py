"""Injection and escape, as explicit regression cases: a package name reaches Nix only as data,
a tag never reaches git's command line, and symlinks never lead the layer writer out of a store
path."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from nixery.build.contract import NixSource
from nixery.build.layers import write_store_layer, write_symlink_layer
from nixery.build.nix import Nix
from nixery.registry.sources import GitSource
from nixery.storage.filesystem import FilesystemStorage
from tests.conftest import OFFLINE_NIX_CONFIG, REPO, TEST_PKGS, require_tools
from tests.e2e.registry_process import counting_nix_shims

HOSTILE_NAMES = [
    '" + builtins.abort "injected" + "',
    '${builtins.abort "injected"}',
    'hello; builtins.abort "injected"',
    'hello.${builtins.readFile "/etc/passwd"}',
    "hello.outPath",
    "../../etc/passwd",
    "__functor",
    "hello --expr builtins.abort",
]


@pytest.mark.e2e
def test_package_names_reach_nix_only_as_data(tmp_path: Path) -> None:
    require_tools("nix-instantiate")
    log = tmp_path / "nix-calls.log"
    shims = counting_nix_shims(tmp_path / "shims", log)
    env = {"NIX_CONFIG": OFFLINE_NIX_CONFIG, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}"}
    nix = Nix(REPO / "nix", tmp_path / "gcroots", timeout=300, extra_env=env)
    system = "x86_64-linux"
    # Straight to Nix, past the name grammar that would reject all of these: had any been spliced
    # into an expression, the abort would fail the evaluation.
    resolution = nix.resolve(
        NixSource("path", str(TEST_PKGS)), HOSTILE_NAMES, system, time.monotonic() + 300
    )
    assert sorted(resolution.not_found) == sorted(HOSTILE_NAMES)
    (call,) = log.read_text().splitlines()
    command, names_argument, names = call.partition(" --argstr names ")
    assert names_argument and names == json.dumps(HOSTILE_NAMES)
    assert " -E " not in command and " --expr " not in command


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    require_tools("git")
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (
        ["init", "-q", "-b", "main"],
        ["-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-q",
         "--allow-empty", "-m", "one"],
    ):  # fmt: skip
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    return repo


def test_tags_never_reach_git(
    git_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    log = tmp_path / "git-calls.log"
    real_git = subprocess.run(
        ["sh", "-c", "command -v git"], capture_output=True, text=True, check=True
    ).stdout.strip()
    shims = tmp_path / "git-shim"
    shims.mkdir()
    (shims / "git").write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real_git}" "$@"\n')
    (shims / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
    source = GitSource(f"file://{git_repo}")
    hostile = [
        f"--upload-pack=touch {marker}",
        f"main;touch {marker}",
        f"$(touch {marker})",
        f"`touch {marker}`",
        "main\n--upload-pack=sh",
        "../../HEAD",
    ]
    for tag in hostile:
        assert source.resolve(tag) is None, tag
    assert source.resolve("main") is not None
    assert not marker.exists()
    calls = log.read_text().splitlines()
    assert calls and all(call == f"ls-remote -- file://{git_repo}" for call in calls)


def _layer_members(storage: FilesystemStorage, digest: str) -> tuple[list[tarfile.TarInfo], bytes]:
    with storage.open(digest) as blob:
        raw = gzip.decompress(blob.read())
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as archive:
        return archive.getmembers(), raw


def _store_path(store: Path, name: str) -> Path:
    return store / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}-{name}"


def test_symlinks_never_lead_the_layer_writer_out_of_the_store(tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "secret"
    secret.parent.mkdir()
    secret.write_text("the host's secret\n")
    (secret.parent / "host-only-name").write_text("x\n")
    store = tmp_path / "store"
    evil = _store_path(store, "evil")
    (evil / "bin").mkdir(parents=True)
    (evil / "bin" / "tool").write_text("#!/bin/sh\n")
    (evil / "secret").symlink_to(secret)
    (evil / "outside").symlink_to(secret.parent, target_is_directory=True)
    (evil / "bin" / "up").symlink_to("../..")
    linked = _store_path(store, "linked")
    linked.symlink_to(secret.parent, target_is_directory=True)
    storage = FilesystemStorage(tmp_path / "storage")

    blob = write_store_layer([str(evil), str(linked)], storage)
    members, raw = _layer_members(storage, blob.digest)
    by_name = {member.name: member for member in members}
    evil_name, linked_name = str(evil).lstrip("/"), str(linked).lstrip("/")
    assert by_name[f"{evil_name}/secret"].issym()
    assert by_name[f"{evil_name}/secret"].linkname == str(secret)
    assert by_name[f"{evil_name}/outside"].issym()
    assert by_name[linked_name].issym()
    assert not [
        name for name in by_name if name.startswith((f"{evil_name}/outside/", f"{linked_name}/"))
    ]
    assert b"the host's secret" not in raw

    root = write_symlink_layer([str(evil), str(linked)], storage)
    root_members, raw_root = _layer_members(storage, root.digest)
    names = {member.name for member in root_members}
    assert "bin/tool" in names
    # A top-level store path that is itself a symlink is not merged into the image root: its
    # target's directory listing is outside the store.
    assert "host-only-name" not in names and b"host-only-name" not in raw_root
