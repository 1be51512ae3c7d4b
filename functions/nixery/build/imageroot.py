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


def image_root(top_level: Sequence[str]) -> ImageRoot:
    """The image root of the given top-level store paths (the requested packages, in order)."""
    tree = _merge_top_level(top_level)
    _add_conventional_links(tree, top_level)
    return ImageRoot(
        entries=tree,
        has_bash=_BASH in tree,
        ca_bundle=CA_BUNDLE if _CA_BUNDLE_ENTRY in tree else None,
    )


def _merge_top_level(top_level: Sequence[str]) -> _Tree:
    """symlinkJoin/lndir: directories merge, everything else links to its store path; first wins."""
    # /tmp is claimed before any package so that it is always a world-writable directory.
    tree: _Tree = {_TMP: None}
    for root in top_level:
        if not os.path.isdir(root) or not _inside_its_store(root):
            continue
        pending = [""]
        while pending:
            relative_dir = pending.pop()
            with os.scandir(os.path.join(root, relative_dir)) as entries:
                for entry in entries:
                    member = f"{relative_dir}/{entry.name}" if relative_dir else entry.name
                    is_dir = entry.is_dir(follow_symlinks=False)
                    if member not in tree:
                        tree[member] = None if is_dir else entry.path
                    elif not (is_dir and tree[member] is None):
                        continue  # an earlier package owns this name
                    if is_dir:
                        pending.append(member)
    return tree


def _inside_its_store(path: str) -> bool:
    """A store path that is a symlink may only lead to another path of the same store."""
    store = os.path.realpath(os.path.dirname(path))
    return os.path.realpath(path).startswith(store + os.sep)


def _add_conventional_links(tree: _Tree, top_level: Sequence[str]) -> None:
    """/bin/sh, /usr/bin/env and the CA bundle, each only when something real backs it."""
    _add_link(tree, _SH, tree.get(_BASH))
    _add_link(tree, _USR_ENV, tree.get(_ENV))
    if _CA_BUNDLE_ENTRY not in tree:
        for root in top_level:
            store_name = os.path.basename(root).partition("-")[2]
            if not store_name.startswith(_CACERT_NAME_PREFIXES):
                continue
            bundles = (os.path.join(root, source) for source in _CA_BUNDLE_SOURCES)
            bundle = next((path for path in bundles if os.path.isfile(path)), None)
            if _add_link(tree, _CA_BUNDLE_ENTRY, bundle):
                break


def _add_link(tree: _Tree, name: str, target: str | None) -> bool:
    """Link `name` to `target` unless that would dangle, shadow an entry or go through a link."""
    if target is None or name in tree or not os.path.exists(target):
        return False
    parts = name.split("/")
    parents = ["/".join(parts[:depth]) for depth in range(1, len(parts))]
    if any(tree.get(parent, None) is not None for parent in parents):
        return False  # a package made a parent a symlink; writing below it would change that
    for parent in parents:
        tree.setdefault(parent, None)
    tree[name] = target
    return True
