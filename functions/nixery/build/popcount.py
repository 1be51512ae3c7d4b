"""Popularity data in Nixery's format: `{"<name-version>": count}`.

Two counts over the top-level packages of a package set (`Counting`):

- `closures` (the default): how many top-level packages, other than the path itself, hold the
  path in their runtime closure. An image is a handful of top-level packages, so this is how
  often the path comes with a package an image names: what decides whether two images share
  it. On pairs of a real distribution's images (benchmarks/bench_shapes.py) it put the paths
  two images share ahead of those they do not more often than `references` did.
- `references`: how many other paths reference it within the union of the runtime closures of
  the top-level packages, as Nixery's popcount counts (its threshold of 100 and its ratings
  were set on that count, so `NIXERY_LAYERING=nixery` reproduces Nixery best with it).

A path no other package holds (or references) is left out, as Nixery leaves it out.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, get_args

from nixery.build.contract import BuildFailed, BuildTimedOut, NixSource
from nixery.build.graph import ClosureGraph, name_version
from nixery.build.nix import Nix, parse_path_info, source_arguments

URL_TIMEOUT_SECONDS = 30.0
# Packages realised per Nix call with `realise`: big enough to keep Nix's parallelism, small
# enough for the progress callback to move.
REALISE_BATCH = 64

Counting = Literal["closures", "references"]
COUNTINGS: tuple[Counting, ...] = get_args(Counting)


def popcount(
    nix: Nix,
    source: NixSource,
    system: str,
    realise: bool,
    store: str | None,
    on_realised: Callable[[int, int], None] | None = None,
    counting: Counting = "closures",
) -> dict[str, int]:
    """Counts, for every path, the top-level packages of `source` whose closures hold it (or,
    with `counting="references"`, the paths referring to it), within `nix.timeout`.

    With `realise`, packages are built first (those that fail are left out); otherwise the
    paths must already be in `store` (a binary cache URL, say) or the local store. Paths that
    are missing there are left out, as is every path referenced by no other. `on_realised`
    hears (packages realised so far, total) as the realising goes.
    """
    deadline = time.monotonic() + nix.timeout
    roots = nix.evaluate_json(
        nix.nix_dir / "popcount.nix",
        {**source_arguments(source), "system": system},
        deadline,
        write_derivations=realise,
    )
    if not isinstance(roots, list):
        raise BuildFailed(f"popcount.nix returned {type(roots).__name__}, not a list")
    if realise:
        targets = [f"{root['drvPath']}!out" for root in roots]
        for start in range(0, len(targets), REALISE_BATCH):
            batch = targets[start : start + REALISE_BATCH]
            try:
                nix.run(["nix-store", "--realise", "--keep-going", *batch], deadline, "building")
            except BuildTimedOut:
                raise
            except BuildFailed:
                pass  # broken packages are expected: count what did build
            if on_realised is not None:
                on_realised(start + len(batch), len(targets))
    paths = [root["path"] for root in roots]
    valid = _valid_paths(nix.path_info(paths, deadline, recursive=False, store=store))
    if not valid:
        return {}
    info = nix.path_info(valid, deadline, recursive=True, store=store)
    graph = parse_path_info(info, valid)
    counts = _closure_holders(graph) if counting == "closures" else _referrers(graph)
    return dict(sorted(counts.items()))


def _closure_holders(graph: ClosureGraph) -> Counter[str]:
    """Per name-version: the roots, other than the path itself, whose closures hold it."""
    counts: Counter[str] = Counter()
    for root in graph.roots:
        held = {root}
        pending = [root]
        while pending:
            for reference in graph.nodes[pending.pop()].references:
                if reference not in held:
                    held.add(reference)
                    pending.append(reference)
        held.discard(root)
        counts.update({name_version(path) for path in held})
    return counts


def _referrers(graph: ClosureGraph) -> Counter[str]:
    """Per name-version: the paths of the closures' union that reference it."""
    return Counter(
        name_version(reference) for node in graph.nodes.values() for reference in node.references
    )


def dump_popularity(counts: Mapping[str, int]) -> str:
    """The same bytes for the same counts, whatever order they were computed in."""
    return json.dumps(dict(counts), sort_keys=True, indent=1) + "\n"


def load_popularity(location: str) -> dict[str, int]:
    """Reads popularity data from a file path or an http(s) URL."""
    if location.startswith(("http://", "https://")):
        with urllib.request.urlopen(location, timeout=URL_TIMEOUT_SECONDS) as response:
            text = response.read().decode()
    else:
        text = Path(os.path.expanduser(location)).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"popularity data at {location} is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"popularity data at {location} must be an object of name-version -> count"
        )
    for key, count in data.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(
                f"popularity data at {location}: count of {key!r} is {count!r}, "
                "not a non-negative integer"
            )
    return data


def _valid_paths(info: object) -> list[str]:
    """The paths that exist, from non-recursive path info of either Nix output shape."""
    if isinstance(info, list):
        return sorted(
            item["path"]
            for item in info
            if isinstance(item, dict) and item.get("valid") is not False
        )
    if isinstance(info, dict):
        return sorted(path for path, item in info.items() if item is not None)
    raise ValueError(f"path info must be a list or an object, not {type(info).__name__}")
