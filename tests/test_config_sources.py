from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nixery.config import ConfigError, load_config
from nixery.registry.sources import ChannelSource, GitSource, PathSource

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def test_defaults(tmp_path: Path) -> None:
    config = load_config({}, {})
    assert config.port == 8080 and config.source_kind == "channel"
    assert config.effective_channel == "nixos-unstable"
    assert config.storage_backend == "filesystem" and config.nix_timeout == 600


def test_source_precedence_and_overrides(tmp_path: Path) -> None:
    env = {"NIXERY_PKGS_PATH": str(tmp_path), "NIXERY_PKGS_REPO": "file:///repo"}
    assert load_config(env, {}).source_kind == "git"
    assert load_config({**env, "NIXERY_CHANNEL": "nixos-24.05"}, {}).source_kind == "channel"
    assert load_config(env, {"port": "9000"}).port == 9000
    assert load_config({"PORT": "1234"}, {"port": None}).port == 1234


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "http"}, "PORT must be a int"),
        ({"PORT": "70000"}, "TCP port"),
        ({"NIX_TIMEOUT": "-1"}, "NIX_TIMEOUT must be positive"),
        ({"NIXERY_STORAGE_BACKEND": "s3"}, "'filesystem' or 'gcs'"),
        ({"NIXERY_STORAGE_BACKEND": "gcs"}, "GCS_BUCKET"),
        ({"NIXERY_PKGS_PATH": "/definitely/not/here"}, "does not exist"),
        ({"NIXERY_LAYER_BUDGET": "500"}, "125 layers"),
        ({"NIXERY_LAYERING": "fastest"}, "'chunked', 'nixery', 'per-path' or 'prefix'"),
        ({"NIXERY_SIGNED_URL_EXPIRY": "604801"}, "between 60 and 604800"),
    ],
)
def test_bad_values_are_explained(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env, {})


def test_channel_resolution_is_cached_for_its_ttl() -> None:
    calls: list[str] = []
    now = [0.0]
    answers = iter([COMMIT_A, COMMIT_B])

    def resolver(channel: str) -> str:
        calls.append(channel)
        return next(answers)

    source = ChannelSource("nixos-unstable", resolver, ttl=300, clock=lambda: now[0])
    first = source.resolve("latest")
    assert first is not None and first.commit == COMMIT_A
    assert first.nix_source.kind == "tarball" and COMMIT_A in first.nix_source.location
    now[0] = 299
    assert source.resolve("nixos-unstable").commit == COMMIT_A  # type: ignore[union-attr]
    now[0] = 301
    assert source.resolve("latest").commit == COMMIT_B  # type: ignore[union-attr]
    assert calls == ["nixos-unstable", "nixos-unstable"]
    assert source.resolve(COMMIT_A).commit == COMMIT_A  # type: ignore[union-attr]
    assert source.resolve("some-random-tag") is None
    assert source.tags() == ["latest", "nixos-unstable"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_git_tags_resolve_to_commits(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@example.invalid")
    _git(repo, "config", "user.name", "t")
    (repo / "default.nix").write_text("{}\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    first = _git(repo, "rev-parse", "HEAD")
    _git(repo, "tag", "-a", "v1", "-m", "annotated")
    _git(repo, "branch", "stable")
    (repo / "default.nix").write_text("{ }\n")
    _git(repo, "commit", "-qam", "two")
    second = _git(repo, "rev-parse", "HEAD")

    source = GitSource(str(repo), ttl=0)
    assert source.resolve("latest").commit == second  # type: ignore[union-attr]
    assert source.resolve("main").commit == second  # type: ignore[union-attr]
    assert source.resolve("stable").commit == first  # type: ignore[union-attr]
    assert source.resolve("v1").commit == first, "annotated tags are peeled"  # type: ignore[union-attr]
    assert source.resolve(first).commit == first  # type: ignore[union-attr]
    assert source.resolve("no-such-branch") is None
    revision = source.resolve("stable")
    assert revision is not None and revision.nix_source.rev == first
    assert source.tags() == ["latest", "main", "stable", "v1"], "what resolves, commits aside"


def test_path_fingerprint_follows_edits_within_the_recheck_time(tmp_path: Path) -> None:
    (tmp_path / "default.nix").write_text("{ }\n")
    now = [0.0]
    source = PathSource(tmp_path, recheck_seconds=2, clock=lambda: now[0])
    before = source.resolve("latest")
    assert before is not None
    (tmp_path / "default.nix").write_text("{ x = 1; }\n")
    now[0] = 1.5
    again = source.resolve("latest")
    assert again is not None and again.commit == before.commit, "not re-walked yet"
    now[0] = 2.5
    after = source.resolve("latest")
    assert after is not None and after.commit != before.commit
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "more.nix").write_text("{ }\n")
    now[0] = 5.0
    assert source.fingerprint() != before.commit


def test_a_path_source_knows_latest_only(tmp_path: Path) -> None:
    (tmp_path / "default.nix").write_text("{ }\n")
    source = PathSource(tmp_path)
    assert source.resolve("latest") is not None
    referrers_tag = "sha256-" + "ab" * 32  # what regctl asks for before listing referrers
    for tag in ["v1", "main", referrers_tag, "0" * 40]:
        assert source.resolve(tag) is None, tag
    assert source.tags() == ["latest"]


def test_an_expired_entry_is_refreshed_once_for_concurrent_requests() -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    calls: list[str] = []
    release = threading.Event()

    def slow_resolver(channel: str) -> str:
        calls.append(channel)
        release.wait(5)
        return COMMIT_A

    source = ChannelSource("nixos-unstable", slow_resolver, ttl=300)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(source.resolve, "latest") for _ in range(8)]
        threading.Event().wait(0.3)
        release.set()
        commits = {future.result().commit for future in futures}  # type: ignore[union-attr]
    assert commits == {COMMIT_A}
    assert calls == ["nixos-unstable"]
