"""The runtime closure graph that Nix reports and the layering consumes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

STORE_DIR = "/nix/store"
_HASH_PREFIX_LEN = len(STORE_DIR) + 1 + 32 + 1  # "/nix/store/" + hash + "-"


def name_version(store_path: str) -> str:
    """`/nix/store/<hash>-git-2.44.0` -> `git-2.44.0`, the key of popularity data."""
    return store_path[_HASH_PREFIX_LEN:]


@dataclass(frozen=True)
class StorePathInfo:
    path: str
    nar_size: int
    references: tuple[str, ...]  # sorted, never including `path` itself


@dataclass(frozen=True)
class ClosureGraph:
    roots: tuple[str, ...]  # the image's top-level output paths, sorted
    nodes: Mapping[str, StorePathInfo]  # every path of the runtime closure
