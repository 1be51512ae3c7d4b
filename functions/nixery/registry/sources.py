"""Package sources, and tags resolved to commits so every cache is keyed by what was evaluated."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from nixery.build.contract import COMMIT_RE, NixSource, Revision
from nixery.config import Config
from nixery.registry.names import TAG_RE
from nixery.util.lru import Lru
from nixery.util.singleflight import SingleFlight

NIXPKGS_ARCHIVE = "https://github.com/NixOS/nixpkgs/archive/{commit}.tar.gz"
CHANNEL_REVISION = "https://channels.nixos.org/{channel}/git-revision"


class SourceError(Exception):
    """The source itself could not be consulted (network, git); not the client's fault."""


class PackageSource(Protocol):
    source_id: str

    def resolve(self, tag: str) -> Revision | None:
        """The revision `tag` names, or None when the tag names nothing in this source."""
        ...

    def tags(self) -> list[str]:
        """The names `resolve` knows, sorted (a 40-hex commit also resolves, but is not listed:
        there is no end to them)."""
        ...


V = TypeVar("V")


# A source caches a handful of keys ("refs", "tree", its channel): the bound is never reached.
_RESOLVED_MAX_ENTRIES = 16


class _Resolved(Generic[V]):
    """What a source resolved, for `ttl` seconds from when it was asked."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._clock = clock
        self._entries: Lru[str, V] = Lru(_RESOLVED_MAX_ENTRIES, clock=clock)
        # When an entry expires under load, one caller refreshes it and the others wait for that
        # (one `git ls-remote` or tree walk, not one per request).
        self._refreshes: SingleFlight[V] = SingleFlight()

    def get(self, key: str, compute: Callable[[], V]) -> V:
        hit = self._entries.get(key)
        if hit is not None:
            return hit
        asked = self._clock()
        return self._refreshes.run(key, lambda: self._store(key, asked, compute()))

    def _store(self, key: str, asked: float, value: V) -> V:
        self._entries.put(key, value, expires_at=asked + self._ttl)
        return value


def fetch_channel_commit(channel: str) -> str:
    """The production channel resolver: the commit a nixpkgs channel points at now."""
    url = CHANNEL_REVISION.format(channel=channel)
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            commit = response.read().decode().strip()
    except OSError as error:
        raise SourceError(f"cannot resolve channel {channel}: {error}") from error
    if not COMMIT_RE.fullmatch(commit):
        raise SourceError(f"channel {channel} resolved to a non-commit {commit!r}")
    return commit


class ChannelSource:
    """A nixpkgs channel (re-resolved at most every `ttl` seconds) or a pinned nixpkgs commit.

    Tags: `latest` (or the channel's name) is the channel's commit; a 40-hex tag pins nixpkgs.
    """

    def __init__(
        self,
        channel: str,
        resolve_channel: Callable[[str], str] = fetch_channel_commit,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel = channel
        self.source_id = f"channel:{channel}"
        self._resolve_channel = resolve_channel
        self._cache: _Resolved[str] = _Resolved(ttl, clock)

    def _revision(self, commit: str) -> Revision:
        return Revision(
            self.source_id, commit, NixSource("tarball", NIXPKGS_ARCHIVE.format(commit=commit))
        )

    def resolve(self, tag: str) -> Revision | None:
        if COMMIT_RE.fullmatch(tag):
            return self._revision(tag)
        if tag not in ("latest", self.channel):
            return None
        if COMMIT_RE.fullmatch(self.channel):
            return self._revision(self.channel)
        return self._revision(
            self._cache.get(self.channel, lambda: self._resolve_channel(self.channel))
        )

    def tags(self) -> list[str]:
        named = {"latest"}
        if TAG_RE.fullmatch(self.channel) and not COMMIT_RE.fullmatch(self.channel):
            named.add(self.channel)
        return sorted(named)


class GitSource:
    """A git repository: `latest` is HEAD; a branch, a git tag or a 40-hex commit all work."""

    def __init__(
        self, url: str, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.url = url
        self.source_id = f"git:{url}"
        self._cache: _Resolved[dict[str, str]] = _Resolved(ttl, clock)

    def _refs(self) -> dict[str, str]:
        try:
            result = subprocess.run(
                ["git", "ls-remote", "--", self.url],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
                env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
            )
        except (subprocess.SubprocessError, OSError) as error:
            raise SourceError(f"git ls-remote {self.url} failed: {error}") from error
        refs: dict[str, str] = {}
        for line in result.stdout.splitlines():
            commit, _, ref = line.partition("\t")
            refs[ref] = commit
        return refs

    def resolve(self, tag: str) -> Revision | None:
        if COMMIT_RE.fullmatch(tag):
            commit: str | None = tag
        else:
            refs = self._cache.get("refs", self._refs)
            if tag == "latest":
                commit = refs.get("HEAD")
            else:
                # A peeled annotated tag (`^{}`) names the commit rather than the tag object.
                commit = (
                    refs.get(f"refs/heads/{tag}")
                    or refs.get(f"refs/tags/{tag}^{{}}")
                    or refs.get(f"refs/tags/{tag}")
                )
        if commit is None:
            return None
        return Revision(self.source_id, commit, NixSource("git", self.url, commit))

    def tags(self) -> list[str]:
        refs = self._cache.get("refs", self._refs)
        named = {"latest"} if "HEAD" in refs else set()
        for ref in refs:
            for prefix in ("refs/heads/", "refs/tags/"):
                if ref.startswith(prefix):
                    name = ref.removeprefix(prefix).removesuffix("^{}")
                    # A branch like `feature/x` resolves nowhere: a tag cannot hold a slash.
                    if TAG_RE.fullmatch(name):
                        named.add(name)
        return sorted(named)


class PathSource:
    """A local package set: one tag, `latest`, whose revision is a fingerprint of the tree.
    Every other tag is unknown (a registry that answered any tag would hand referrer lookups
    like `sha256-<hex>` an image, and fail conformance's missing-manifest checks).

    The fingerprint covers every file's name, mode, size and modification time, so an edit gives
    a new revision (and a new evaluation) without running Nix to find out. Walking a tree the
    size of nixpkgs takes a good fraction of a second, so the fingerprint is re-taken at most
    every `recheck_seconds`: an edit is seen within that time.
    """

    def __init__(
        self,
        path: Path,
        recheck_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path.resolve()
        self.source_id = f"path:{self.path}"
        self._root = self.path if self.path.is_dir() else self.path.parent
        self._cache: _Resolved[str] = _Resolved(recheck_seconds, clock)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for directory, subdirs, files in os.walk(self._root):
            subdirs[:] = sorted(d for d in subdirs if d != ".git")
            for name in sorted(files):
                full = os.path.join(directory, name)
                try:
                    stat = os.lstat(full)
                except FileNotFoundError:
                    continue
                relative = os.path.relpath(full, self._root)
                digest.update(
                    f"{relative}\0{stat.st_mode}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
                )
        return digest.hexdigest()

    def resolve(self, tag: str) -> Revision | None:
        if tag != "latest":
            return None
        commit = self._cache.get("tree", self.fingerprint)
        return Revision(self.source_id, commit, NixSource("path", str(self.path)))

    def tags(self) -> list[str]:
        return ["latest"]


def package_source(config: Config) -> PackageSource:
    if config.source_kind == "git":
        assert config.pkgs_repo
        return GitSource(config.pkgs_repo)
    if config.source_kind == "path":
        assert config.pkgs_path
        return PathSource(config.pkgs_path)
    return ChannelSource(config.effective_channel)
