"""The image root: the requested packages' top-level directories merged into `/` as symlinks.

Like nixpkgs' symlinkJoin: directories merge, everything else links to the store path that first
provides it. Then what a shell and TLS clients expect, each only when something real backs it:
`/bin/sh`, `/usr/bin/env` and the CA bundle. The root also reports the facts the image config
needs (a bash to run, a CA bundle to point at), so nothing else has to know its entry names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

# Where the image's CA bundle is, as Nix tools and OpenSSL-based clients look for it.
CA_BUNDLE = "/etc/ssl/certs/ca-bundle.crt"

_TMP = "tmp"
_BASH = "bin/bash"
_SH = "bin/sh"
_ENV = "bin/env"
_USR_ENV = "usr/bin/env"
_CA_BUNDLE_ENTRY = CA_BUNDLE.lstrip("/")
# Where a cacert package may keep its bundle when it is not at the path that Nix tools look for.
_CA_BUNDLE_SOURCES = (_CA_BUNDLE_ENTRY, "etc/ssl/certs/ca-certificates.crt")
# nixpkgs' `cacert` is named `nss-cacert-<version>`.
_CACERT_NAME_PREFIXES = ("cacert-", "nss-cacert-")

# The root's tree: member name -> None for a directory, or the absolute link target.
_Tree = dict[str, str | None]


@dataclass(frozen=True)
class ImageRoot:
    """The entries of `/` and what they mean for the image config."""

    entries: Mapping[str, str | None]  # member name -> absolute link target, None for a directory
    has_bash: bool  # /bin/bash is there: the image's default command
    ca_bundle: str | None  # the CA bundle's path in the image, when there is one
    # Directories every user may write to (mode 1777).
    world_writable: frozenset[str] = frozenset({_TMP})


class TreeView(Protocol):
    """The file-system questions the image root asks (symlinks followed unless said otherwise):
    of the real file system, or of store paths not realised (nixery.build.substituter)."""

    def is_dir(self, path: str) -> bool: ...
    def is_file(self, path: str) -> bool: ...
    def exists(self, path: str) -> bool: ...
    def inside_its_store(self, path: str) -> bool: ...
    def list_dir(self, path: str) -> list[tuple[str, bool]]:
        """(name, is a directory without following a symlink) of each entry."""
        ...


class _FileSystem:
    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def is_file(self, path: str) -> bool:
        return os.path.isfile(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def inside_its_store(self, path: str) -> bool:
        """A store path that is a symlink may only lead to another path of the same store."""
        store = os.path.realpath(os.path.dirname(path))
        return os.path.realpath(path).startswith(store + os.sep)

    def list_dir(self, path: str) -> list[tuple[str, bool]]:
        with os.scandir(path) as entries:
            return [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]


FILE_SYSTEM: TreeView = _FileSystem()


def image_root(top_level: Sequence[str], view: TreeView = FILE_SYSTEM) -> ImageRoot:
    """The image root of the given top-level store paths (the requested packages, in order)."""
    tree = _merge_top_level(top_level, view)
    _add_conventional_links(tree, top_level, view)
    return ImageRoot(
        entries=tree,
        has_bash=_BASH in tree,
        ca_bundle=CA_BUNDLE if _CA_BUNDLE_ENTRY in tree else None,
    )


def _merge_top_level(top_level: Sequence[str], view: TreeView) -> _Tree:
    """symlinkJoin/lndir: directories merge, everything else links to its store path; first wins."""
    # /tmp is claimed before any package so that it is always a world-writable directory.
    tree: _Tree = {_TMP: None}
    for root in top_level:
        if not view.is_dir(root) or not view.inside_its_store(root):
            continue
        pending = [""]
        while pending:
            relative_dir = pending.pop()
            directory = os.path.join(root, relative_dir)
            for name, is_dir in view.list_dir(directory):
                member = f"{relative_dir}/{name}" if relative_dir else name
                if member not in tree:
                    tree[member] = None if is_dir else os.path.join(directory, name)
                elif not (is_dir and tree[member] is None):
                    continue  # an earlier package owns this name
                if is_dir:
                    pending.append(member)
    return tree


def _add_conventional_links(tree: _Tree, top_level: Sequence[str], view: TreeView) -> None:
    """/bin/sh, /usr/bin/env and the CA bundle, each only when something real backs it."""
    _add_link(tree, _SH, tree.get(_BASH), view)
    _add_link(tree, _USR_ENV, tree.get(_ENV), view)
    if _CA_BUNDLE_ENTRY not in tree:
        for root in top_level:
            store_name = os.path.basename(root).partition("-")[2]
            if not store_name.startswith(_CACERT_NAME_PREFIXES):
                continue
            bundles = (os.path.join(root, source) for source in _CA_BUNDLE_SOURCES)
            bundle = next((path for path in bundles if view.is_file(path)), None)
            if _add_link(tree, _CA_BUNDLE_ENTRY, bundle, view):
                break


def _add_link(tree: _Tree, name: str, target: str | None, view: TreeView) -> bool:
    """Link `name` to `target` unless that would dangle, shadow an entry or go through a link."""
    if target is None or name in tree or not view.exists(target):
        return False
    parts = name.split("/")
    parents = ["/".join(parts[:depth]) for depth in range(1, len(parts))]
    if any(tree.get(parent, None) is not None for parent in parents):
        return False  # a package made a parent a symlink; writing below it would change that
    for parent in parents:
        tree.setdefault(parent, None)
    tree[name] = target
    return True
